"""Model zoo: standard parameter counts, shapes for every class count / input size, conventions; models from outside
the zoo (torchvision:<name>, <package.module>:<function>)."""

import pytest
import torch
import torch.nn as nn

from common.errors import UserError
from common.models import MODELS, BasicBlock, build_model


pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS, FASHION, CIFAR, TINY, IMAGENET = (1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 224, 224)

# Input sizes each model is used with.
TABULAR = {"criteo_mlp"}  # takes Criteo feature rows, tested on real-format rows in tests/test_seqattn_criteo.py
INPUTS = {
    "mlp": [DIGITS, FASHION],
    "cnn": [DIGITS],
    "lenet5": [FASHION, CIFAR],
    "resnet8": [DIGITS, CIFAR],
    "resnet20": [CIFAR, TINY],
    "resnet32": [CIFAR, TINY],
    "resnet56": [CIFAR, TINY],
    "resnet18": [CIFAR, TINY, IMAGENET],
    "vgg16_bn": [CIFAR, TINY],
    "vgg19_bn": [CIFAR, TINY],
    "resnet50": [TINY, IMAGENET],
    "resnet50_cifar": [CIFAR],
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_has_input_sizes():
    assert set(INPUTS) == set(MODELS) - TABULAR


@pytest.mark.parametrize(
    "name, input_shape, num_classes, expected",
    [
        ("resnet20", CIFAR, 10, 269_722),  # He et al. 2016: 0.27M (option A)
        ("resnet32", CIFAR, 10, 464_154),  # 0.46M
        ("resnet56", CIFAR, 10, 853_018),  # 0.85M
        ("resnet18", CIFAR, 10, 11_173_962),  # CIFAR ResNet-18: 11.17M
        ("resnet50", IMAGENET, 1000, 25_557_032),  # torchvision: 25.557M
        # CIFAR VGG-16-bn with a single Linear(512, 10), convs without bias (BN follows):
        # 14.72M, i.e. the usual "~15M" (14.73M with conv biases).
        ("vgg16_bn", CIFAR, 10, 14_724_042),
        ("vgg19_bn", CIFAR, 10, 20_035_018),
        ("mlp", (1, 28, 28), 10, 266_610),  # LeNet-300-100 on MNIST: 266,610
        # LeNet-5 on 28x28: 61,706 with conv biases; here BN (2 x 22) replaces the convs' 22 biases
        ("lenet5", FASHION, 10, 61_728),
    ],
)
def test_standard_parameter_counts(name, input_shape, num_classes, expected):
    assert n_params(build_model(name, num_classes, input_shape)) == expected


@pytest.mark.parametrize("name", list(INPUTS))
def test_builds_and_runs_for_all_class_counts(name):
    input_shape = INPUTS[name][0]  # the smallest input the model is used with
    x = torch.randn(2, *input_shape)
    for num_classes in (10, 100, 200, 1000):
        model = build_model(name, num_classes, input_shape).eval()
        with torch.no_grad():
            assert model(x).shape == (2, num_classes)

        # Conventions relied on by the pruning code.
        modules = list(model.modules())
        assert isinstance(modules[-1], nn.Linear) and modules[-1].out_features == num_classes
        convs = [m for m in modules if isinstance(m, nn.Conv2d)]
        if convs:
            assert convs[0].in_channels == input_shape[0]


@pytest.mark.parametrize("name, input_shape", [(n, s) for n, shapes in INPUTS.items() for s in shapes])
def test_runs_on_each_input_size(name, input_shape):
    num_classes = {DIGITS: 10, FASHION: 10, CIFAR: 100, TINY: 200, IMAGENET: 1000}[input_shape]
    batch = 1 if input_shape == IMAGENET else 2
    model = build_model(name, num_classes, input_shape).eval()
    with torch.no_grad():
        y = model(torch.randn(batch, *input_shape))
    assert y.shape == (batch, num_classes) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["resnet20", "vgg16_bn", "resnet50"])
def test_stem_adapts_to_one_channel_input(name):
    model = build_model(name, 10, (1, 32, 32)).eval()
    assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_cifar_resnet_uses_parameter_free_shortcuts_and_resnet8_projections():
    r20 = build_model("resnet20", 10, CIFAR)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in r20.modules())
    r8 = build_model("resnet8", 10, DIGITS)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in r8.modules()) == 2


def test_unknown_model_is_a_one_line_user_error():
    with pytest.raises(UserError) as info:
        build_model("resnet21", 10, CIFAR)
    msg = str(info.value)
    assert msg.startswith("--model 'resnet21' is not one of: mlp, cnn") and "resnet20" in msg and "\n" not in msg
    assert "torchvision:<name>" in msg and "<package.module>:<function>" in msg


@pytest.mark.parametrize("num_classes, input_shape", [(0, CIFAR), (10, (32, 32)), (10, (3, 0, 32))])
def test_bad_sizes_are_user_errors(num_classes, input_shape):
    with pytest.raises(UserError):
        build_model("resnet20", num_classes, input_shape)


def test_cifar_resnet50_has_the_cifar_stem():
    model = build_model("resnet50_cifar", 10, CIFAR).eval()
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1)) and isinstance(model.maxpool, nn.Identity)
    assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)) is model.conv1
    assert list(model.modules())[-1] is model.fc
    seen = {}
    model.layer1.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    with torch.no_grad():
        assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    assert seen["shape"] == (2, 256, 32, 32)  # full resolution after the stem (the ImageNet stem gives 8x8)
    assert n_params(model) == n_params(build_model("resnet50", 10, CIFAR)) - 64 * 3 * (49 - 9)


@pytest.mark.parametrize("name, input_shape", [("cnn", DIGITS), ("lenet5", FASHION), ("resnet8", DIGITS), ("resnet20", CIFAR),
                                               ("resnet50_cifar", CIFAR)])
def test_torch_pruning_structured_pruning_applies(name, input_shape):
    tp = pytest.importorskip("torch_pruning")
    model = build_model(name, 10, input_shape)
    ignored = [list(model.modules())[-1]]
    if name == "resnet20":  # option-A (zero-pad) shortcuts: prune only the inside of each block
        ignored += [model.conv1] + [b.conv2 for b in model.modules() if isinstance(b, BasicBlock)]
    x = torch.randn(2, *input_shape)
    before = n_params(model)
    pruner = tp.pruner.MagnitudePruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5, ignored_layers=ignored
    )
    pruner.step()
    assert n_params(model) < 0.6 * before
    assert model(x).shape == (2, 10)


# --------------------------------------------------------------------------------------------- outside the zoo
def wrong_classes(num_classes, input_shape):
    """A builder that ignores ``num_classes`` (3 logits)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], 3))


def failing(num_classes, input_shape):
    raise ValueError("no such width\nfor this input")


def not_a_module(num_classes, input_shape):
    return "a model"


def test_torchvision_models_are_built_randomly_initialized_never_downloaded(monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("a download was tried"))
    torch.manual_seed(0)
    a = build_model("torchvision:resnet18", 10, CIFAR).eval()
    torch.manual_seed(1)
    b = build_model("torchvision:resnet18", 10, CIFAR)
    assert type(a).__name__ == "ResNet" and a.fc.out_features == 10 and list(a.modules())[-1] is a.fc
    assert not torch.equal(a.conv1.weight, b.conv1.weight)  # seeded random initializations, no published weights
    with torch.no_grad():
        assert a(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_torchvision_stem_adapts_to_one_channel_and_aux_heads_are_left_out():
    model = build_model("torchvision:resnet18", 10, FASHION)
    assert model.conv1.in_channels == 1 and (model.conv1.kernel_size, model.conv1.stride) == ((7, 7), (2, 2))
    inception = build_model("torchvision:googlenet", 10, (3, 64, 64)).train()
    assert inception(torch.randn(2, 3, 64, 64)).shape == (2, 10)  # a tensor while training too: no auxiliary heads


def tiny(num_classes, input_shape):
    """A user's own builder: function(num_classes, input_shape) -> nn.Module."""
    return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


def test_own_function_builds_the_model():
    model = build_model("tests.test_models:tiny", 7, DIGITS)
    assert model.training and model(torch.randn(2, *DIGITS)).shape == (2, 7)  # checked in eval mode, handed back as built


@pytest.mark.parametrize("name, message", [
    ("torchvision:nonexistent", "--model torchvision:nonexistent: torchvision "),
    ("tests.no_such_module:make", "--model tests.no_such_module:make: cannot import tests.no_such_module "
                                  "(ModuleNotFoundError: No module named 'tests.no_such_module')"),
    ("tests.test_models:DIGITS", "--model tests.test_models:DIGITS: tests.test_models has no function DIGITS"),
    ("tests.test_models:wrong_classes", "--model tests.test_models:wrong_classes gives (1, 3) for one input of shape "
                                        "(1, 8, 8); a classifier of this dataset must give (1, 10)"),
    ("tests.test_models:failing", "--model tests.test_models:failing failed to build a model for 10 classes and inputs "
                                  "of shape (1, 8, 8) (ValueError: no such width for this input)"),
    ("tests.test_models:not_a_module", "--model tests.test_models:not_a_module returned str, not a torch.nn.Module"),
    ("torchvision:vit_b_16", "--model torchvision:vit_b_16 cannot take inputs of shape (batch, 1, 8, 8) ("),
])
def test_a_model_from_outside_that_cannot_serve_is_one_line(name, message):
    with pytest.raises(UserError) as info, torch.device("meta"):  # the meta device of a script's validate
        build_model(name, 10, DIGITS)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)
