"""The GMP figures' profile tables: which models, datasets and recipes each profile runs, and the seeds.

tiny:  digits, the 3-conv CNN (dense ~99%), first conv and classifier left dense; gmp.prune's defaults: 20 epochs =
       1 stabilization + 9 pruning (an update every epoch) + 10 fine-tuning with the LR /10 twice, the blog's
       ImageNet layout (2 + 35 + ~20 of 60 epochs) scaled down.
small: Fashion-MNIST (60,000 / 10,000; 100 training images held out, unused, so that the dense models are the BiP
       figures' own), LeNet-300-100 (784-300-100-10, 30 dense epochs: ~90.1%), one global
       magnitude ranking over all three layers (the first holds 88% of the weights: excluding it would leave 99%
       unreachable), 10 epochs of 468 steps (4,680 steps) = 1 stabilization + 5 pruning + 4 fine-tuning (LR /10 after
       2 and 3); in the pruning stage (steps 468-2,808) the mask is updated every 93 steps (0.199 epoch): 26 updates,
       from step 468 to 2,793 (the cubic schedule's 25 intervals). The grid goes to 99.5%, where the
       calibration runs (global magnitude + fine-tuning vs a cubic GMP) part by one to a few points: 80, 90, 95, 98,
       99, 99.5%. Seeds: 5 (0-4) from 98% on (``SPARSE_SEEDS``), where GMP and one-shot differ by 1-3 seed SDs; 3 (0-2)
       at 80, 90 and 95% (where one-shot loses ~1 pt to the dense model: the edge of the claim's regime, which the
       runs decide), and in fig-gmp-wd (95/98/99%).
paper: the SparseML-style ResNet-50 ImageNet recipe and our CIFAR-10 ResNet-20/56 recipe (gmp.prune PRESETS).
"""
from __future__ import annotations

from common import config as C
from gmp import prune

SCRIPT = prune.SCRIPT
SEEDS = (0, 1, 2)
# (sparsity from which, the seeds there) where a profile adds seeds at its sparse end (below it: SEEDS)
SPARSE_SEEDS = {"small": (0.98, (0, 1, 2, 3, 4))}
SPARSITIES = {"tiny": (0.5, 0.7, 0.8, 0.9, 0.95, 0.98), "small": (0.8, 0.9, 0.95, 0.98, 0.99, 0.995),
              "paper": (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)}
COLORS = {"gmp": "C0", "oneshot": "C1", "dense": "k"}

SETUPS = {
    "tiny": [{}],
    "small": [{"dataset": "fashionmnist", "model": "mlp", "val_size": 100, "scope": "global", "exclude": (),
               "epochs": 10,
               "prune_epochs": 5, "update_every": 93, "update_unit": "steps",
               "finetune_lr.milestones": (2.0, 3.0)}],
    "paper": [{"preset": "cifar10-resnet20"}, {"preset": "cifar10-resnet56"}, {"preset": "imagenet-resnet50"}],
}


# Cut (paper profile, cost): the ImageNet ResNet-50 runs use one seed (three would triple its ~1,400 epochs; the
# CIFAR setups keep three). Keyed by preset.
SETUP_SEEDS = {"imagenet-resnet50": (0,)}


def config(setup: dict, **overrides) -> prune.Config:
    setup = dict(setup)
    return C.build(prune.Config, prune.PRESETS, setup.pop("preset", None), **{**setup, **overrides})


def seeds_at(profile: str, setup: dict, sparsity: float) -> tuple[int, ...]:
    """The seeds of a grid point: ``SPARSE_SEEDS`` from its sparsity on, else the setup's (``SETUP_SEEDS``) or SEEDS."""
    start, sparse = SPARSE_SEEDS.get(profile, (2.0, ()))
    return sparse if sparsity >= start else SETUP_SEEDS.get(setup.get("preset"), SEEDS)


def grid(profile: str, sparsities=None, seeds=None, **overrides) -> list[tuple[str, prune.Config]]:
    return [(SCRIPT, config(setup, target_sparsity=s, seed=seed, **overrides))
            for setup in SETUPS[profile] for s in (sparsities or SPARSITIES[profile])
            for seed in (seeds or seeds_at(profile, setup, s))]


def setup_label(row) -> str:
    return f"{row['config.model']} / {row['config.dataset']}"
