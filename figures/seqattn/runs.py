"""The SequentialAttention++ figures' profile tables: setups, block sizes, sparsities, seeds per profile.

tiny:  digits, the LeNet-300-100 MLP (64-300-100-10; the classifier left dense), 30 epochs from scratch, SGD 0.05
       cosine, the paper's ImageNet phase layout scaled to 360 steps; block sizes 1/2/4/8 (both hidden layers have
       >= 100 blocks at every one of them), sparsities 80/90/95%, 3 seeds.
small: Fashion-MNIST (60,000 / 10,000), LeNet-300-100 (784-300-100-10; the classifier left dense), 10 epochs from
       scratch (4,690 steps, the same phase layout, so the final sparse phase and every phase an ablation changes
       last hundreds of steps), block sizes 4 and 16 (the 300x100 layer still has 133 blocks of 16x16), sparsities
       90/98%. Seeds: 5 (0-4) for SA++ and ACDC in the table (Tables 1-2) and in the ablations that a claim decides
       (at the focus 4x4 / 90%: no sparsification phase, c = 2 and 8, short dense phases), whose differences are 1-3
       seed SDs; 2 (0-1) for the ablations no claim decides at this scale (exp(L), the pruned weights kept, the
       unstructured T = 0.25 variant and its ACDC / SA++ references at 1x1); 3 (0-2) for block magnitude and
       PowerProp (points to tens of points below). Curves and schedule (Fig. 3,
       §3.2): one run per method (seed 0) at 4x4 / 90%, logging the training accuracy on 10,000 training images
       every 200 steps (23 points). One-shot (Fig. 2a): 10 dense epochs (the table's length; magnitude prunes a
       dense model of the same 10-epoch recipe), one fine-tuning epoch per sparsity, block sizes 1/4/16, 3 seeds;
       attention also at temperature T = 0.25 and 0.1 (``ONESHOT_TEMPERATURES``: the paper's remedy for many
       candidates) at 4x4 and 16x16, seeds 0 and 1 (each run trains its own 10-epoch attention model).
paper: ResNet-50 ImageNet (Table 1: block sizes 8/16/32/64 at 70/80/90/95%, less the unpublished 8x8 at 95%;
       its runs log the training curve) and Criteo (Table 2: block sizes
       5/10/20 at 90/99%), the seqattn.prune presets; one seed each (the paper reports single runs).
"""
from __future__ import annotations

from common import config as C
from seqattn import oneshot, prune

SCRIPT = prune.SCRIPT
ONESHOT = oneshot.SCRIPT
METHODS = ("magnitude", "powerprop", "acdc", "sapp")
LABELS = {"magnitude": "block magnitude", "powerprop": "block PowerProp", "acdc": "ACDC",
          "sapp": "SequentialAttention++"}
COLORS = {"magnitude": "C7", "powerprop": "C2", "acdc": "C1", "sapp": "C0"}

SEEDS = {"tiny": (0, 1, 2), "small": (0, 1, 2), "paper": (0,)}
# the table's and the ablations' seeds per method where they are not SEEDS (small: 5 for SA++ and ACDC, whose
# differences are 1-3 seed SDs; block magnitude and PowerProp, points to tens of points below, keep 3)
GRID_SEEDS = {"small": {"sapp": (0, 1, 2, 3, 4), "acdc": (0, 1, 2, 3, 4)}}
CURVE_SEEDS = {"small": (0,)}  # the curves / schedule runs' seeds where they are not SEEDS
# (setup overrides, block sizes, sparsities, methods) per profile
SETUPS = {
    "tiny": [({"dataset": "digits", "model": "mlp"}, (1, 2, 4, 8), (0.8, 0.9, 0.95), METHODS)],
    "small": [({"dataset": "fashionmnist", "model": "mlp", "epochs": 10}, (4, 16), (0.9, 0.98), METHODS)],
    # the ImageNet runs log the training curve (fig-seqattn-curves reads the table's own 32x32 / 90% runs)
    "paper": [({"preset": "imagenet-resnet50", "curve_every": 500}, (8, 16, 32, 64), (0.7, 0.8, 0.9, 0.95),
               ("acdc", "sapp")),
              ({"preset": "criteo"}, (5, 10, 20), (0.9, 0.99), METHODS)],
}
# the single setting of the curves / schedule figures and the ablations (paper: 32x32 blocks at 90%)
FOCUS = {"tiny": {"block": 4, "sparsity": 0.9}, "small": {"block": 4, "sparsity": 0.9}, "paper": {"block": 32, "sparsity": 0.9}}
CURVE_EVERY = {"tiny": 4, "small": 200, "paper": 500}
# one-shot attention at other softmax temperatures (fig-seqattn-oneshot): (temperatures, block sizes, seeds)
ONESHOT_TEMPERATURES = {"small": ((0.25, 0.1), (4, 16), (0, 1))}
# Cut (paper profile, cost): grid cells the paper does not publish, by preset (Table 1 has no 8x8 blocks at 95%).
OMIT = {"imagenet-resnet50": {(8, 0.95)}}


def config(setup: dict, **overrides) -> prune.Config:
    setup = dict(setup)
    return C.build(prune.Config, prune.PRESETS, setup.pop("preset", None), **setup, **overrides)


def grid(profile: str, methods=None, blocks=None, sparsities=None, seeds=None, setups=None, **overrides):
    """(script, config) rows: every setup x method x block x sparsity x seed of the profile."""
    rows = []
    for setup, setup_blocks, setup_sparsities, setup_methods in (setups or SETUPS[profile]):
        for method in (methods or setup_methods):
            for block in (blocks or setup_blocks):
                for s in (sparsities or setup_sparsities):
                    if (block, s) in OMIT.get(setup.get("preset"), ()):
                        continue
                    for seed in (seeds or GRID_SEEDS.get(profile, {}).get(method, SEEDS[profile])):
                        rows.append((SCRIPT, config(setup, method=method, block=block, sparsity=s, seed=seed,
                                                    **overrides)))
    return rows


def focus(profile: str, methods=("acdc", "sapp"), seeds=None, **overrides):
    """The curves / schedule runs: the first setup of the profile at its focus block size and sparsity."""
    setup, *rest = SETUPS[profile][0]
    setup = dict(setup, curve_every=CURVE_EVERY[profile])  # paper: the table's own runs, which log the curve
    return grid(profile, methods=methods, seeds=seeds or CURVE_SEEDS.get(profile, SEEDS[profile]),
                setups=[(setup, *rest)], blocks=(FOCUS[profile]["block"],), sparsities=(FOCUS[profile]["sparsity"],),
                **overrides)


def setup_label(row) -> str:
    return f"{row['config.model']} / {row['config.dataset']}"


def with_accuracy(df):
    """``df`` with ``accuracy``, the test accuracy (%); NaN where a run has none (one-logit models: Criteo reports
    ``test_loss`` and ``test_auc``)."""
    return df.assign(accuracy=100 * df["test_acc"] if "test_acc" in df else float("nan"))


def metric(df):
    """(column, label, higher is better) of the setup: test accuracy (%), or the loss for Criteo."""
    if (df["config.dataset"] == "criteo").all():
        return "test_loss", "eval loss (BCE)", False
    return "accuracy", "test accuracy (%)", True
