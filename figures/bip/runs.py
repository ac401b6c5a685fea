"""The BiP figures' profile tables: setups (model, dataset, epochs), the sparsity grid, the seeds, each method's config.

tiny:  digits with the MLP (64-300-100-10, 10 epochs per method) and the 3-conv CNN (5 epochs per method: the CNN
       step is ~10x the MLP's); the grid is the paper's, remaining fraction 0.8^n, at every other n up to 94.5%,
       plus n = 10 (89.3%: the "to 89%" row of fig-bip-time's summary, where BiP meets IMP's 10th round like for
       like).
       The same epochs E everywhere: BiP runs E epochs, OMP retrains E, every IMP round retrains E, Hydra trains
       scores E then fine-tunes E; retrained BiP masks (Fig. 9) also get E.
small: Fashion-MNIST (the full 60,000 / 10,000 split; 100 training images held out for BiP's upper level), LeNet-300-100
       (784-300-100-10, E = 4 epochs of 468 steps per method) for the unstructured figures, LeNet-5 (6-16 convs with
       BN, 120-84 Linear; E = 1 epoch, 468 steps: a BiP step there costs ~5 dense ones) for the structured one
       (filter-wise). Dense models: 30 epochs (MLP, 90.12% over 5 seeds) and 10 epochs (LeNet-5, 91.16% over 2) of SGD 0.05 cosine.
       Grid n = 4, 5, 6, 7, 8, 10, 12, ..., 20 (59.0, 67.2, 73.8, 79.0, 83.2, 89.3, 93.1, 95.6, 97.2, 98.2, 98.8%);
       IMP runs its 20 rounds (every n). Seeds: 2 (0-1) below 93% (no claim but the tickets reads those points;
       ``DENSE_END_SEEDS``); 5 (0-4) from 93% on (n >= 12, where BiP, IMP and OMP part by 1-3 seed SDs) and for the
       IMP chains (so 5 dense MLPs, which the GMP and post-training figures share).
       Budget: BiP E = 4 epochs of two passes (lower + upper step per batch) = 8 epoch-equivalents; IMP's chain has
       accumulated 4n epochs at n (64 / 72 / 80 at n = 16 / 18 / 20), so BiP spends 8 / 4n of IMP's work (0.125 /
       0.111 / 0.1). Beside it, at the three sparsest points (n = 16, 18, 20) with 3 seeds (0-2, paired with IMP's),
       BiP at E = 12 (24 epoch-equivalents: 0.375 / 0.333 / 0.3 of IMP's accumulated epochs; method "bip-long").
       Winning tickets: a grid point whose mean accuracy is at least the dense model's mean minus the dense models'
       seed SD (``TICKET_TOLERANCE``: 5 dense MLPs; the SD of the mean of seeds is smaller, the tolerance is stated
       so that "as good as dense" is decided against the dense models' own spread).
       Rewinding (Fig. 9) at 86.6%, 3 seeds: each of the 5 rewinding points retrained for E epochs, and at one point
       (5%, epoch 2 of 30) also retrained for the dense length, 30 epochs (``REWIND_FULL``): "no retraining is as
       good as retraining" becomes equivalence within the dense models' seed SD. IG figure at 91.4% only, 2 seeds;
       the structured grid 50/70/90% (filter-wise), 2 seeds (both contrasts are not testable at this scale, for a
       reason the runs measure: the IG term's weight in the upper gradient, LeNet-5's 16 prunable filters).
paper: the presets of bip.prune / bip.magnitude (the BiP paper's models, datasets and hyperparameters, Appendix A;
       figures/reference/README.md), n = 1..20.
Every method prunes every conv and linear layer (global unstructured, as the paper); structured pruning leaves the
first conv dense (its single / three input channels cannot be thinned at a uniform ratio).
"""
from __future__ import annotations

from common import config as C
from common.pretrain import dense_config

SEEDS = (0, 1, 2)
GRID_N = {"tiny": (1, 3, 5, 7, 9, 10, 11, 13), "small": (4, 5, 6, 7, 8, 10, 12, 14, 16, 18, 20),
          "paper": tuple(range(1, 21))}
# (sparsity from which, seeds there and for the IMP chains) of Fig. 6 / 8 / Table 1: small, 5 seeds at the sparse end
SPARSE_SEEDS = {"small": (0.93, (0, 1, 2, 3, 4))}
# the grid's seeds below that sparsity where not SEEDS (small: 2; no claim reads these points but the tickets)
DENSE_END_SEEDS = {"small": (0, 1)}
# the seeds of the IG figure and of the structured one where not SEEDS (small: 2; both contrasts are not testable at
# this scale for a reason the runs measure: the IG term's weight, and LeNet-5's 16 prunable filters)
IG_SEEDS = {"small": (0, 1)}
STRUCTURED_SEEDS = {"small": (0, 1)}
# BiP's longer budget arm beside E (method "bip-long"): (its epochs, the grid points n it runs at, its seeds)
LONG = {"small": (12, (16, 18, 20), (0, 1, 2))}
# a winning ticket's tolerance below the dense accuracy, in seed SDs of the dense models (tab-bip-tickets)
TICKET_TOLERANCE = {"tiny": 0.0, "small": 1.0, "paper": 0.0}
# Fig. 9: the rewinding fraction also retrained for the dense length (its retraining epochs = the dense epochs)
REWIND_FULL = {"small": 0.05}
# Fig. 7's structures; small: filter-wise only, as LeNet-5's one prunable conv (the first stays dense) has 6 input
# channels: channel-wise sparsities snap to sixths and the units' score sums tie (runs fail on the tied threshold)
STRUCTURES = {"tiny": ("filter", "channel"), "small": ("filter",), "paper": ("filter", "channel")}
STRUCTURED = {"tiny": (0.3, 0.5, 0.7, 0.9), "small": (0.5, 0.7, 0.9), "paper": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}
REWIND_FRACTIONS = (0.05, 0.1, 0.5, 0.75, 1.0)
_GRID = lambda *ns: tuple(round(1 - 0.8 ** n, 6) for n in ns)  # noqa: E731
# Fig. 9's sparsities (the paper's: 20%, 67.2%, 86.6%; small, cost: 86.6% only) and the IG figure's
REWIND_SPARSITIES = {"tiny": _GRID(1, 5, 9), "small": _GRID(9), "paper": _GRID(1, 5, 9)}
IG_SPARSITIES = {"tiny": _GRID(5, 11), "small": _GRID(11), "paper": _GRID(5, 11)}  # 67.2%, 91.4%
GAMMAS = (1e4, 1.0, 1e-2, 1e-3, 1e-4)                                    # 1e4: the configs' 1/gamma = 1e-4

# name -> (preset or None, overrides, epochs E)
SETUPS = {
    "tiny": {"mlp / digits": (None, {"model": "mlp"}, 10), "cnn / digits": (None, {"model": "cnn"}, 5)},
    "small": {"mlp / fashionmnist": (None, {"dataset": "fashionmnist", "model": "mlp"}, 4),
              "lenet5 / fashionmnist": (None, {"dataset": "fashionmnist", "model": "lenet5", "pretrain.epochs": 10},
                                        1)},
    "paper": {f"{m} / {ds}": (f"{ds}-{m}", {}, None) for ds, m in [
        ("cifar10", "resnet18"), ("cifar10", "resnet20"), ("cifar10", "resnet56"), ("cifar10", "vgg16_bn"),
        ("cifar100", "resnet18"), ("cifar100", "resnet20"), ("tinyimagenet", "resnet18"),
        ("imagenet", "resnet50")]},
}
IMP_ONLY = {"resnet50 / imagenet"}  # Fig. 6's ImageNet panel shows IMP and BiP only
# Cut (paper profile, cost): ImageNet ResNet-50 runs one seed and every other grid point up to 91.4% (n = 1, 3, ..., 11:
# 20, 48.8, 67.2, 79, 86.6, 91.4%), so its IMP chain stops at round 11; three seeds of all 20 points (60 BiP runs of
# 120 epoch-equivalents, three 20-round IMP chains of 60-epoch rounds) would cost ~11,000 ImageNet epochs, this ~1,500.
SETUP_SEEDS = {"resnet50 / imagenet": (0,)}
SETUP_GRID_N = {"resnet50 / imagenet": (1, 3, 5, 7, 9, 11)}
# the setups of the other figures (names of SETUPS[profile])
TRAJECTORY_SETUPS = {"small": ("mlp / fashionmnist",)}  # Fig. 6 / 8 / Table 1; tiny and paper: every setup
STRUCTURED_SETUPS = {"tiny": ("cnn / digits",), "small": ("lenet5 / fashionmnist",), "paper": ("resnet18 / cifar10", "vgg16_bn / cifar10")}
REWIND_SETUPS = {"tiny": ("mlp / digits", "cnn / digits"), "small": ("mlp / fashionmnist",),
                 "paper": ("resnet20 / cifar10", "resnet18 / cifar10", "resnet18 / cifar100")}
IG_SETUPS = {"tiny": ("mlp / digits", "cnn / digits"), "small": ("mlp / fashionmnist",), "paper": ("resnet20 / cifar10",)}


def sparsities(profile: str, setup: str | None = None) -> list[float]:
    """The grid of the profile, or of one of its setups (by name) where ``SETUP_GRID_N`` cuts it."""
    return [round(1 - 0.8 ** n, 6) for n in SETUP_GRID_N.get(setup, GRID_N[profile])]


def seeds(setup: str, profile: str | None = None, sparsity: float = 0.0) -> tuple[int, ...]:
    """The seeds of a setup (by name), at a grid sparsity of ``profile`` where ``SPARSE_SEEDS`` adds seeds there."""
    start, sparse = SPARSE_SEEDS.get(profile, (2.0, ()))
    return sparse if sparsity >= start else SETUP_SEEDS.get(setup, DENSE_END_SEEDS.get(profile, SEEDS))


def setups(profile: str, only=None) -> dict:
    return {k: v for k, v in SETUPS[profile].items() if only is None or k in only}


def prune_config(setup, method: str = "bip", **overrides):
    from bip import prune

    preset, base, epochs = setup
    extra = {"epochs": epochs, "finetune_epochs": epochs} if epochs else {}
    return C.build(prune.Config, prune.PRESETS, preset, **base, **extra, method=method, **overrides)


def magnitude_config(setup, method: str = "imp", **overrides):
    from bip import magnitude

    preset, base, epochs = setup
    return C.build(magnitude.Config, magnitude.PRESETS, preset, **base, **({"epochs": epochs} if epochs else {}),
                   method=method, **overrides)


def retrain_config(setup, **overrides):
    from bip import retrain

    preset, base, epochs = setup
    extra = {"epochs": epochs, "finetune_epochs": epochs, "retrain_epochs": epochs, "retrain.lr": 0.05} \
        if epochs else {}
    return C.build(retrain.Config, retrain.PRESETS, preset, **base, **{**extra, **overrides})


def trajectory(profile: str, methods=("bip", "hydra", "imp", "omp"), only=None) -> list:
    """Every Fig. 6 run: BiP/Hydra/OMP at each grid point (from the dense model), IMP as one chain per seed, BiP's
    longer arm (``LONG``) at its points; seed-major, each point at its seeds (``seeds``)."""
    rows = []
    long_epochs, long_n, long_seeds = LONG.get(profile, (None, (), ()))
    for name, setup in setups(profile, only or TRAJECTORY_SETUPS.get(profile)).items():
        grid = sparsities(profile, name)
        for seed in dict.fromkeys(seed for s in grid for seed in seeds(name, profile, s)):
            for n, s in zip(SETUP_GRID_N.get(name, GRID_N[profile]), grid):
                if seed not in seeds(name, profile, s):
                    continue
                for m in ("bip", "hydra"):
                    if m in methods and (m == "bip" or name not in IMP_ONLY):
                        rows.append(("bip.prune", prune_config(setup, m, target_sparsity=s, seed=seed)))
                if "omp" in methods and name not in IMP_ONLY:
                    rows.append(("bip.magnitude", magnitude_config(setup, "omp", target_sparsity=s, seed=seed)))
                if "bip" in methods and n in long_n and seed in long_seeds:
                    rows.append(("bip.prune", prune_config(setup[:2] + (long_epochs,), target_sparsity=s, seed=seed)))
            if "imp" in methods and seed in seeds(name, profile, max(grid)):
                rows.append(("bip.magnitude", magnitude_config(setup, "imp", target_sparsity=max(grid), seed=seed)))
    return rows


def dense_runs(rows) -> list:
    """The dense model each run starts from (its result holds the dense training's wall time)."""
    return [("common.pretrain", dense_config(cfg)) for _, cfg in rows]


def setup_label(row) -> str:
    return f"{row['config.model']} / {row['config.dataset']}"


def method_label(row) -> str:
    return row["config.method"]


def long_arms() -> dict:
    """setup name -> the epochs of BiP's longer arm there (``LONG``)."""
    return {name: epochs for profile, (epochs, *_) in LONG.items()
            for name in setups(profile, TRAJECTORY_SETUPS.get(profile))}


def tidy(df):
    """collect() rows -> setup, method, x (sparsity %, the grid value), acc (test %), dense (%), time (s); BiP's
    longer arm (``LONG``) is method "bip-long"."""
    import numpy as np
    import pandas as pd

    df = df[df["script"] != "common.pretrain"].copy()
    target = df["target_sparsity"] if "target_sparsity" in df else np.nan
    grid = pd_where(target, df["config.target_sparsity"])
    setup = df.apply(setup_label, axis=1) if len(df) else pd.Series(dtype=object, index=df.index)
    epochs = df["config.epochs"] if "config.epochs" in df else pd.Series(np.nan, index=df.index)
    is_long = (df["config.method"] == "bip") & (epochs == setup.map(long_arms()))
    return df.assign(setup=setup, method=df["config.method"].where(~is_long, "bip-long"), x=(100 * grid).round(2),
                     acc=100 * df["test_acc"], dense=100 * df["dense_test_acc"], time=df["method_time"])


def pd_where(primary, fallback):
    import pandas as pd

    if not isinstance(primary, pd.Series):
        return fallback
    return primary.where(primary.notna(), fallback)


LABELS = {"bip": "BiP", "hydra": "Hydra", "imp": "IMP", "omp": "OMP", "dense": "dense", "bip-long": "BiP, longer E"}
COLORS = {"bip": "C3", "hydra": "C2", "imp": "C0", "omp": "C1", "dense": "k", "bip-long": "C4"}
