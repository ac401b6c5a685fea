"""Model zoo: standard parameter counts, shapes for every class count / input size, conventions."""

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
    assert "unknown model 'resnet21'" in msg and "resnet20" in msg and "\n" not in msg


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
