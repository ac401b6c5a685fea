"""The post-training pruning figures' profile tables: models, ratios, sample counts and calibration draws per profile.

tiny:  digits (1437 training samples), the 3-conv CNN and the narrow residual ResNet-8 (projection shortcuts, so the
       channels joined by every residual add are one group), channel ratio 0.5, 128 calibration samples (9% of the
       training set), 20 + 10 epochs; L1 + retraining: 100 epochs with labels (the paper's length).
small: Fashion-MNIST (60,000 / 10,000; 100 training images held out, unused, so that the dense model is the BiP
       structured figure's seed-0 one), LeNet-5 (6-16 convs with BN, 120-84 Linear; 10 dense epochs), channel ratio
       0.5, 512 calibration samples (0.9% of the training set, the paper's CIFAR count), one dense model; 10
       calibration draws (sample_seed 0-9) for the method chain (tab-posttrain), the ablation (Fig. 5, at ratios
       40/50/60%: at 20-30% the three arms are within 0.15 pt, at 70% all collapse), Fig. 6 (balanced or not) and
       Fig. 4 (32 / 128 / 512 / 2048 samples); L1 + retraining: 10 epochs with labels, one run. Calibration time
       vs L1 + retraining (A.1): at the ratios where the method works (top-1 within 5 pt of L1 + retraining in the
       measured runs: 30 and 50%; at 70% it was 31 pt below), 3 timed runs of each (calibration draws 0-2; L1 +
       retraining: the same run config but for ``sample_seed``, which it does not use), the fastest of the 3
       compared, L1 + retraining's per retraining epoch (``TIME_DRAWS``).
paper: the paper's setups (its Tables 1-2 and Figs. 4-6, as figures/reference/README.md lists them; posttrain.prune
       PRESETS): CIFAR-10/100 ResNet-56 / ResNet-50 / VGG-19 at ratio 0.5 (VGG-19 on CIFAR-100: 0.4) with 512
       samples, ImageNet ResNet-50 at 0.3 with 2048 samples; Fig. 5 on CIFAR-100 ResNet-18.
"""
from __future__ import annotations

from common import config as C
from posttrain import prune

SCRIPT = prune.SCRIPT
METHODS = ("ours", "holistic", "layerwise", "none", "l1")
LABELS = {"ours": "ours (penalty + balanced)", "holistic": "holistic, unbalanced (gAP-like)",
          "layerwise": "layer-wise (AdaPrune-like)", "none": "no reconstruction", "l1": "L1-norm + retraining"}
# calibration draws (sample_seed) per reconstruction run
DRAWS = {"tiny": (0, 1, 2), "small": tuple(range(10)), "paper": (0,)}

SETUPS = {
    "tiny": [{"model": "cnn"}, {"model": "resnet8"}],
    "small": [{"dataset": "fashionmnist", "model": "lenet5", "val_size": 100, "pretrain.epochs": 10, "samples": 512,
               "retrain.epochs": 10}],
    "paper": [{"preset": p} for p in ("cifar10-resnet56", "cifar10-resnet50", "cifar10-vgg19", "cifar100-resnet56",
                                      "cifar100-resnet50", "cifar100-vgg19", "imagenet-resnet50")],
}
# Fig. 4 (samples), Fig. 5 (ratios), Fig. 6 (balance) and the time figure use one setup each.
SAMPLES = {"tiny": (16, 32, 64, 128, 256), "small": (32, 128, 512, 2048), "paper": (128, 512, 1024, 2048, 5120)}
SAMPLES_SETUP = {"tiny": {"model": "cnn"}, "small": SETUPS["small"][0], "paper": {"preset": "imagenet-resnet50", "ratio": 0.2}}
SAMPLE_DRAWS = tuple(range(10))
RATIOS = {"tiny": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "small": (0.4, 0.5, 0.6), "paper": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)}
ABLATION_SETUP = {"tiny": {"model": "resnet8"}, "small": SETUPS["small"][0], "paper": {"preset": "cifar100-resnet18"}}
BALANCE_SETUP = {"tiny": {"model": "resnet8"}, "small": SETUPS["small"][0], "paper": {"preset": "imagenet-resnet50"}}
TIME_RATIOS = {"tiny": (0.3, 0.5, 0.7), "small": (0.3, 0.5), "paper": (0.3, 0.5)}
# timed runs per method and ratio (their sample_seed), the fastest compared (fig-posttrain-time); absent: one run
TIME_DRAWS = {"small": (0, 1, 2)}
TIME_SETUP = {"tiny": {"model": "cnn"}, "small": SETUPS["small"][0], "paper": {"preset": "cifar10-resnet56"}}


def config(setup: dict, **overrides) -> prune.Config:
    setup = dict(setup, **overrides)
    return C.build(prune.Config, prune.PRESETS, setup.pop("preset", None), **setup)


def row(setup: dict, **overrides) -> tuple[str, prune.Config]:
    return SCRIPT, config(setup, **overrides)


def draws(profile: str, method: str) -> tuple[int, ...]:
    """Calibration draws of a method: L1 + retraining uses no calibration samples, so one run."""
    return (0,) if method == "l1" else DRAWS[profile]


def setup_label(r) -> str:
    return f"{r['config.model']} / {r['config.dataset']}"
