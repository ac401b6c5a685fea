"""Model zoo for the pruning experiments, and the user's own models.

Every model is built through :func:`build_model`, which adapts the stem to the input's
channel count and the classifier to the number of classes. A model is named by one of three
forms (:data:`MODEL_HELP`): a name of this zoo (:data:`MODELS`), ``torchvision:<name>`` (any
classification model of ``torchvision.models``, randomly initialized, never downloaded), or
``<package.module>:<function>``, the user's own builder ``function(num_classes, input_shape)``
returning an ``nn.Module`` (``input_shape`` is ``(channels, height, width)``), the signature of
this zoo's builders. The models of this zoo follow these conventions, which the pruning code
relies on (a model from outside should too: its first Conv2d/Linear is what ``--exclude first``
names, its last what ``--exclude last`` names):

* the first ``nn.Conv2d`` in ``model.modules()`` order is the stem (input) convolution;
* the final classifier is an ``nn.Linear`` and the last module in ``model.modules()``;
* all networks are built from plain ``Conv2d`` / ``BatchNorm2d`` / ``ReLU`` / ``Linear``
  modules so that unstructured, filter/channel and Torch-Pruning structured pruning apply.
"""

from __future__ import annotations

import importlib
import math
import operator
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.criteo import CriteoNet
from common.errors import UserError

# --------------------------------------------------------------------------- helpers


def _init_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal (He et al. 2015) init for convs; BN to identity; Linear keeps default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    """3x3 conv (no bias) -> BN -> ReLU."""
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


# --------------------------------------------------------------------------- MLP / CNN


def mlp(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """LeNet-300-100: flatten -> 300 -> 100 -> classes, ReLU between layers."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 300), nn.ReLU(inplace=True),
        nn.Linear(300, 100), nn.ReLU(inplace=True),
        nn.Linear(100, num_classes),
    )


def cnn(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Small 3-conv CNN for 8x8 digits: 32 -> 64 -> max-pool -> 128 -> global avg pool -> Linear."""
    layers = [
        *_conv_bn(input_shape[0], 32),
        *_conv_bn(32, 64),
        nn.MaxPool2d(2),
        *_conv_bn(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    ]
    return _init_weights(nn.Sequential(*layers))


def lenet5(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with BN after each conv: 5x5 conv 6 (padded, as for 28x28 inputs) -> max-pool ->
    5x5 conv 16 -> max-pool -> Linear 120 -> Linear 84 -> Linear classes (61.7k weights on 28x28 inputs)."""
    c, h, w = input_shape
    side = lambda n: (n // 2 - 4) // 2  # noqa: E731  (padded conv, pool, valid 5x5 conv, pool)
    layers = [
        nn.Conv2d(c, 6, 5, padding=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side(h) * side(w), 120), nn.ReLU(inplace=True),
        nn.Linear(120, 84), nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    ]
    return _init_weights(nn.Sequential(*layers))


# --------------------------------------------------------------------------- ResNets


class PadShortcut(nn.Module):
    """Option-A shortcut (He et al. 2016): spatial subsampling + zero-padding of channels.

    Parameter-free; the new channels are split evenly before and after the input channels.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad_lo = (cout - cin) // 2
        self.pad_hi = cout - cin - self.pad_lo

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_lo, self.pad_hi))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection.

    ``shortcut`` selects how a change of shape is bridged: ``"A"`` (zero-pad, no params) or
    ``"B"`` (1x1 conv + BN projection). Identity when the shape does not change.
    """

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(cin, cout, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-1 stem, no max-pool, one stage per width
    (the first stage keeps resolution, later ones halve it), global avg pool, Linear.
    """

    def __init__(self, blocks: list[int], widths: list[int], shortcut: str, in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stage = [BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1, shortcut) for j in range(n)]
            stages.append(nn.Sequential(*stage))
            cin = w
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)  # defined last: last in modules() order
        _init_weights(self)

    def forward(self, x):
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _cifar_resnet(depth: int) -> Callable:
    """ResNet-(6n+2) of He et al. 2016 for CIFAR: widths 16/32/64, option-A shortcuts."""
    n = (depth - 2) // 6

    def build(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        return ResNet([n] * 3, [16, 32, 64], "A", input_shape[0], num_classes)

    build.__doc__ = f"ResNet-{depth} (CIFAR, option A)."
    return build


def resnet8(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Tiny ResNet (1 block per stage, widths 16/32/64) with 1x1-conv projection (option B)
    shortcuts, so structured pruning sees channels coupled across the residual adds."""
    return ResNet([1, 1, 1], [16, 32, 64], "B", input_shape[0], num_classes)


def resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """ResNet-18, CIFAR variant: 3x3 stride-1 stem, no max-pool, 64-128-256-512, projection shortcuts."""
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], "B", input_shape[0], num_classes)


def resnet50(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """torchvision ImageNet ResNet-50 (random init, nothing downloaded)."""
    import torchvision  # imported here: it costs ~1.5 s at start-up and only this model needs it

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if input_shape[0] != 3:  # same stem geometry, different number of input channels
        model.conv1 = nn.Conv2d(input_shape[0], 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def resnet50_cifar(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """torchvision's ResNet-50 with the CIFAR stem: a 3x3 stride-1 first conv and no max-pool (the CIFAR ResNet-50 of
    the post-training pruning paper's tables); bottleneck stages and widths unchanged."""
    model = resnet50(num_classes, input_shape)
    model.conv1 = nn.Conv2d(input_shape[0], 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


# --------------------------------------------------------------------------- VGG

_VGG_CFGS = {  # output channels per conv; "M" = 2x2 max-pool
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG with BN: conv3x3-BN-ReLU stacks, max-pools, a single Linear(512, classes).

    On 32x32 inputs the features end at 1x1, so the adaptive average pool is the identity;
    on larger inputs (64x64, 224x224) it averages the remaining spatial map.
    """

    def __init__(self, cfg: list, in_channels: int, num_classes: int):
        super().__init__()
        layers, cin = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += _conv_bn(cin, v)
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        _init_weights(self)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _vgg(depth: int) -> Callable:
    def build(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        return VGG(_VGG_CFGS[depth], input_shape[0], num_classes)

    build.__doc__ = f"VGG-{depth} with BN, CIFAR variant (single Linear classifier)."
    return build


# --------------------------------------------------------------------------- registry

MODELS: dict[str, Callable[[int, tuple[int, int, int]], nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "lenet5": lenet5,
    "resnet8": resnet8,
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet56": _cifar_resnet(56),
    "resnet18": resnet18,
    "vgg16_bn": _vgg(16),
    "vgg19_bn": _vgg(19),
    "resnet50": resnet50,
    "resnet50_cifar": resnet50_cifar,
    # SequentialAttention++'s Criteo model: embeddings (39 x 10) -> 400 -> 400 -> 400 -> 1 (common/criteo.py)
    "criteo_mlp": CriteoNet,
}


MODEL_HELP = (f"model: one of {', '.join(MODELS)}; torchvision:<name>, any classification model of "
              f"torchvision.models (e.g. torchvision:resnet18), randomly initialized, nothing downloaded; or "
              f"<package.module>:<function>, your own: function(num_classes, input_shape) returning a torch.nn.Module "
              f"for inputs of shape (batch, *input_shape), input_shape = (channels, height, width) (the run's "
              f"identity holds this name, not the function's code)")
TORCHVISION = "torchvision:"
# torchvision models whose auxiliary classifiers make the training forward return a tuple: built without them
_TORCHVISION_OPTIONS = {"googlenet": {"aux_logits": False, "init_weights": True},
                        "inception_v3": {"aux_logits": False, "init_weights": True}}


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Build model ``name`` (a zoo name, ``torchvision:<name>`` or ``<package.module>:<function>``) for ``num_classes``
    outputs and inputs of shape ``(C, H, W)``. A model from outside the zoo is checked on one input of that shape: it
    must be an ``nn.Module`` giving ``(1, num_classes)`` logits, or the call is a one-line UserError."""
    builder = _builder(name)
    try:  # accept numpy / torch integers too
        num_classes = operator.index(num_classes)
        input_shape = tuple(operator.index(d) for d in input_shape)
    except TypeError:
        raise UserError(
            f"bad num_classes {num_classes!r} or input_shape {input_shape!r}; both must be integers"
        ) from None
    if num_classes < 1:
        raise UserError(f"num_classes must be positive, got {num_classes}; fix the dataset/model config")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise UserError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape}")
    if name in MODELS:
        return builder(num_classes, input_shape)
    try:
        model = builder(num_classes, input_shape)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: its failure, in one line
        raise UserError(f"--model {name} failed to build a model for {num_classes} classes and inputs of shape "
                        f"{input_shape} ({_one_line(exc)})") from None
    return _checked(model, name, num_classes, input_shape)


def check_model(name: str) -> None:
    """Fail early, in one line, for a model that cannot be built: a name not in the zoo (the list of known models
    given), a torchvision model that does not exist, a function that cannot be imported."""
    _builder(name)


def _builder(name: str) -> Callable[[int, tuple[int, int, int]], nn.Module]:
    """The function that builds model ``name`` (one of the three forms of :data:`MODEL_HELP`)."""
    if name in MODELS:
        return MODELS[name]
    if name.startswith(TORCHVISION):
        return _torchvision(name[len(TORCHVISION):])
    module, sep, function = name.partition(":")
    if not sep or not module or not function:
        raise UserError(f"--model '{name}' is not one of: {', '.join(MODELS)}; nor torchvision:<name> (a torchvision "
                        f"classification model) or <package.module>:<function> (your own)")
    try:
        found = getattr(importlib.import_module(module), function, None)
    except Exception as exc:  # noqa: BLE001 - ImportError, or whatever importing the user's module raised
        raise UserError(f"--model {name}: cannot import {module} ({_one_line(exc)}); put the module on PYTHONPATH or "
                        f"in the folder the command runs from") from None
    if not callable(found):
        raise UserError(f"--model {name}: {module} has no function {function}; give <package.module>:<function>, "
                        f"function(num_classes, input_shape) -> torch.nn.Module")
    return found


def _torchvision(name: str) -> Callable[[int, tuple[int, int, int]], nn.Module]:
    import torchvision.models  # imported here: it costs ~1.5 s at start-up

    known = torchvision.models.list_models(module=torchvision.models)  # the classification models
    if name not in known:
        raise UserError(f"--model torchvision:{name}: torchvision {torchvision.__version__} has no classification "
                        f"model {name!r}; choose one of: {', '.join(known)}")

    def build(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                             **_TORCHVISION_OPTIONS.get(name, {}))
        return _adapt_stem(model, input_shape[0])

    return build


def _adapt_stem(model: nn.Module, channels: int) -> nn.Module:
    """``model`` with its first Conv2d taking ``channels`` input channels instead of 3 (same geometry, new weights,
    initialized as this zoo's stems are)."""
    stem = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if stem is None or stem[1].in_channels == channels:
        return model
    name, conv = stem
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent), leaf, new)  # (Module.set_submodule is newer than torch 2.4)
    return model


def _checked(model, name: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """``model`` once it has computed ``(1, num_classes)`` logits from one input of ``input_shape`` (in eval mode, no
    gradient, on the model's device: the meta device of a ``validate`` costs nothing)."""
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {name} returned {type(model).__name__}, not a torch.nn.Module")
    device = next(model.parameters(), torch.empty(0)).device
    training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *input_shape, device=device))
    except Exception as exc:  # noqa: BLE001 - the model's own error, in one line
        raise UserError(f"--model {name} cannot take inputs of shape (batch, {', '.join(map(str, input_shape))}) "
                        f"({_one_line(exc)})") from None
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"--model {name} gives {got} for one input of shape {input_shape}; a classifier of this "
                        f"dataset must give (1, {num_classes}): one logit per class")
    return model


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
