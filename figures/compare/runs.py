"""The cross-paper comparison's profile tables (fig-compare, fig-compare-structured) and its cost accounting.

Beyond the papers: every method of the four papers on one model, one dataset, one sparsity grid and, as far as each
method allows, one dense starting point and one budget.
tiny:  digits, the 3-conv CNN (every method runs on it), the BiP figures' grid 1 - 0.8^n (n = 1, 3, ..., 13 and 10) and
       their very configs (BiP / Hydra / IMP / OMP runs are shared with fig-bip-trajectory, BiP filter / channel runs
       with fig-bip-structured, post-training runs at seed 0 with fig-posttrain-time), seeds 0 and 1 (two seeds, not
       three, to keep the new compute near 5 minutes).
small: Fashion-MNIST with the BiP figures' setups and grid (1 - 0.8^n, n = 4, 5, 6, 7, 8, 10, 12, ..., 20):
       fig-compare on LeNet-300-100, fig-compare-structured on LeNet-5, one seed (0): BiP / Hydra / OMP / IMP and
       the BiP filter runs are the BiP figures' own runs at seed 0 (the same configs, so nothing is recomputed);
       GMP and post-training are the comparison's own runs. No from-scratch method (ACDC, SA++, block magnitude)
       at small: their runs (BiP's whole work, 38 MLP / 12 LeNet-5 epochs each) cost ~12 of the profile's 100
       CPU-minutes for a figure no claim reads; the SA++ table compares them on LeNet-300-100.
paper: CIFAR-10 ResNet-20 and ResNet-18 with the bip.prune / bip.magnitude / gmp.prune / posttrain.prune presets.
       The option-A (zero-padding) shortcuts of ResNet-20 are not traceable by Torch-Pruning: as posttrain's ResNet-56
       preset does, its residual widths (stem and every block's conv2) stay and the blocks' inner channels are pruned.
Budgets.  The dense model (BiP's ``pretrain`` recipe) is shared by BiP, Hydra, IMP, OMP, GMP and post-training pruning;
BiP spends E epochs of two passes each (lower + upper step per batch), so every method with a free length gets the
same 2E epochs after the dense model: Hydra E + E, GMP 2E; IMP spends E per round (its nature), OMP E. ACDC,
SequentialAttention++ and block magnitude train from scratch (their own dense phases; seqattn.prune cannot start from
a dense model), so they get BiP's whole work: the dense epochs + 2E. At tiny, to stay within `make figures`' time,
the unstructured ACDC / SA++ runs cover every other grid point (SCRATCH_N: 20, 67.2, 86.6, 94.5%), not all seven.
Unstructured scope: global over every conv and linear layer for all (the BiP paper's setting; at 94.5% a per-layer
ranking leaves the 288-weight first conv 16 weights and collapses ACDC / SA++ to 27-51%).
"""
from __future__ import annotations

import math

from common import config as C
from figures.bip import runs as R
from figures.posttrain import runs as PT

SEEDS = {"tiny": (0, 1), "small": (0,), "paper": (0, 1)}
UNSTRUCTURED_METHODS = ("bip", "hydra", "imp", "omp", "gmp", "acdc", "sapp")
STRUCTURED_METHODS = ("bip-filter", "bip-channel", "posttrain", "sapp-block", "acdc-block", "magnitude-block")
# tiny: two points (make figures' 30 min); small: none (no from-scratch method at small, see above)
BLOCK_SPARSITIES = {"tiny": (0.5, 0.9), "small": (), "paper": (0.5, 0.7, 0.9)}
# the accuracy-vs-cost panels: sparsity 1 - 0.8^n (tiny, paper: 86.58%; small: 98.85%, the point of its scratch runs)
COST_N = {"tiny": 9, "small": 20, "paper": 9}
TRAIN_SIZE = {"digits": 1437, "fashionmnist": 60000, "cifar10": 50000, "cifar100": 50000}
# the grid points (n of 1 - 0.8^n) of the unstructured from-scratch runs (ACDC, SA++); None: the whole grid
SCRATCH_N = {"tiny": (1, 5, 9, 13), "small": (), "paper": None}

# BiP setup name -> what the other scripts need: gmp / posttrain (preset or None, overrides), seqattn overrides,
# the block size of the block methods (posttrain None: not run on that setup)
SETUPS = {
    "tiny": {"cnn / digits": {"gmp": (None, {}), "seqattn": {}, "posttrain": (None, {}), "block": 4}},
    "small": {"mlp / fashionmnist": {"gmp": (None, {}), "seqattn": {}, "posttrain": None, "block": 4},
              "lenet5 / fashionmnist": {"gmp": (None, {}), "seqattn": {}, "posttrain": (None, {}), "block": 4}},
    "paper": {
        "resnet20 / cifar10": {"gmp": ("cifar10-resnet20", {}), "seqattn": {"lr.lr": 0.1, "optim.weight_decay": 1e-4},
                               "posttrain": ("cifar10-resnet56", {"model": "resnet20"}), "block": 4},
        "resnet18 / cifar10": {"gmp": ("cifar10-resnet20", {"model": "resnet18"}),
                               "seqattn": {"lr.lr": 0.1, "optim.weight_decay": 1e-4},
                               "posttrain": ("cifar100-resnet18", {"dataset": "cifar10"}), "block": 8},
    },
}
# the setups of each figure (names of SETUPS[profile]); tiny and paper: every setup in both
UNSTRUCTURED_SETUPS = {"small": ("mlp / fashionmnist",)}
STRUCTURED_SETUPS = {"small": ("lenet5 / fashionmnist",)}
LABELS = {"bip": "BiP", "hydra": "Hydra", "imp": "IMP", "omp": "OMP", "gmp": "GMP", "acdc": "ACDC (B=1)",
          "sapp": "SA++ (B=1)", "bip-filter": "BiP filter", "bip-channel": "BiP channel",
          "posttrain": "post-training (ours)", "sapp-block": "SA++ blocks", "acdc-block": "ACDC blocks",
          "magnitude-block": "block magnitude"}
COLORS = {"bip": "C3", "hydra": "C2", "imp": "C0", "omp": "C1", "gmp": "C4", "acdc": "C5", "sapp": "C6",
          "bip-filter": "C3", "bip-channel": "C9", "posttrain": "C8", "sapp-block": "C6", "acdc-block": "C5",
          "magnitude-block": "C7"}


def _bip(profile: str, name: str):
    return R.setups(profile)[name]


def dense_recipe(profile: str, name: str):
    """The dense recipe every pretrained method of this setup starts from (BiP's own)."""
    return R.prune_config(_bip(profile, name)).pretrain


def stage_epochs(profile: str, name: str) -> int:
    """2E: the epochs of forward+backward work BiP spends after the dense model (E epochs of two steps)."""
    return 2 * R.prune_config(_bip(profile, name)).epochs


def _data(profile: str, name: str) -> dict:
    """Dataset, model and held-out split of the setup: BiP's, so that every method trains on the same images."""
    cfg = R.prune_config(_bip(profile, name))
    return {"dataset": cfg.dataset, "model": cfg.model, "val_size": cfg.val_size}


def gmp_config(profile: str, name: str, sparsity: float, seed: int):
    from gmp import prune as G

    preset, extra = SETUPS[profile][name]["gmp"]
    total = stage_epochs(profile, name)
    stabilize, prune = max(1, total // 10), max(1, total // 2)
    finetune = max(0, total - stabilize - prune)
    return C.build(G.Config, G.PRESETS, preset, **{**_data(profile, name), **extra},
                   pretrain=dense_recipe(profile, name), target_sparsity=sparsity, seed=seed, exclude=(),
                   scope="global", epochs=total, stabilize_epochs=stabilize, prune_epochs=prune,
                   initial_sparsity=min(0.05, sparsity),
                   **{"finetune_lr.milestones": (round(0.5 * finetune, 2), round(0.75 * finetune, 2))})


def scratch_epochs(profile: str, name: str) -> int:
    """Length of the from-scratch runs (ACDC, SA++, block magnitude): the dense epochs + 2E, BiP's whole work."""
    return dense_recipe(profile, name).epochs + stage_epochs(profile, name)


def seqattn_config(profile: str, name: str, method: str, block: int, sparsity: float, seed: int, **overrides):
    from seqattn import prune as SP

    overrides = {"epochs": scratch_epochs(profile, name), **overrides}
    return C.build(SP.Config, SP.PRESETS, None, **_data(profile, name), **SETUPS[profile][name]["seqattn"],
                   method=method, block=block, sparsity=sparsity, seed=seed, **overrides)


def posttrain_config(profile: str, name: str, ratio: float, seed: int):
    preset, extra = SETUPS[profile][name]["posttrain"]
    data = _data(profile, name)
    setup = {"preset": preset, "val_size": data["val_size"]} if preset else data
    return PT.config({**setup, **extra}, pretrain=dense_recipe(profile, name), ratio=ratio, seed=seed)


def unstructured(profile: str) -> list:
    """fig-compare: every unstructured method at every grid point and seed (IMP: one chain per seed)."""
    rows = []
    grid = R.sparsities(profile)
    scratch = [s for n, s in zip(R.GRID_N[profile], grid) if SCRATCH_N[profile] is None or n in SCRATCH_N[profile]]
    for name in UNSTRUCTURED_SETUPS.get(profile, SETUPS[profile]):
        setup = _bip(profile, name)
        for seed in SEEDS[profile]:
            for s in grid:
                rows += [("bip.prune", R.prune_config(setup, m, target_sparsity=s, seed=seed))
                         for m in ("bip", "hydra")]
                rows.append(("bip.magnitude", R.magnitude_config(setup, "omp", target_sparsity=s, seed=seed)))
                rows.append(("gmp.prune", gmp_config(profile, name, s, seed)))
            rows += [("seqattn.prune", seqattn_config(profile, name, m, 1, s, seed, exclude=(), scope="global"))
                     for s in scratch for m in ("acdc", "sapp")]
            rows.append(("bip.magnitude", R.magnitude_config(setup, "imp", target_sparsity=max(grid), seed=seed)))
    return rows + _dense(rows)


def structured(profile: str) -> list:
    """fig-compare-structured: BiP filter / channel, post-training pruning, block SA++ / ACDC / magnitude."""
    rows = []
    for name in STRUCTURED_SETUPS.get(profile, SETUPS[profile]):
        setup, extra = _bip(profile, name), SETUPS[profile][name]
        for seed in SEEDS[profile]:
            for s in R.STRUCTURED[profile]:
                rows += [("bip.prune", R.prune_config(setup, "bip", structure=st, exclude=("first",),
                                                      target_sparsity=s, seed=seed)) for st in R.STRUCTURES[profile]]
                if extra["posttrain"] is not None:
                    rows.append(("posttrain.prune", posttrain_config(profile, name, s, seed)))
            for s in BLOCK_SPARSITIES[profile]:
                rows += [("seqattn.prune", seqattn_config(profile, name, m, extra["block"], s, seed))
                         for m in ("sapp", "acdc", "magnitude")]
    return rows + _dense(rows)


def cost_sparsity(profile: str) -> float:
    return round(1 - 0.8 ** COST_N[profile], 6)


def _dense(rows) -> list:
    from common.pretrain import dense_config

    return [("common.pretrain", dense_config(cfg)) for script, cfg in rows if hasattr(cfg, "pretrain")]


# ------------------------------------------------------------------------------------------------ the accounting
def method_of(row) -> str:
    """The comparison's method key of a collect() row."""
    script, method = row["script"], row.get("config.method")
    if script == "bip.prune":
        structure = row.get("config.structure", "unstructured")
        return method if structure == "unstructured" else f"{method}-{structure}"
    if script == "posttrain.prune":
        return "posttrain" if method == "ours" else f"posttrain-{method}"
    if script == "seqattn.prune" and int(row.get("config.block", 1)) > 1:
        return f"{method}-block"
    return method


def epoch_equivalents(row) -> dict:
    """Forward+backward work in epochs of the method's training set: ``dense`` (the pretraining it consumes),
    ``method`` (after it), ``total``, and ``budget`` in words. Evaluation passes are not counted."""
    script, method = row["script"], row.get("config.method")
    dense = float(row["config.pretrain.epochs"]) if script != "seqattn.prune" else 0.0
    ep = row.get("config.epochs")
    if script == "bip.prune":
        k = int(row.get("config.lower_steps", 1))
        if method == "bip":
            work, words = ep * (1 + 1 / k), f"BiP {ep:g} ep x (1 lower + 1/{k} upper) steps"
        else:
            fine = row["config.finetune_epochs"]
            work, words = ep + fine, f"Hydra scores {ep:g} ep + fine-tune {fine:g} ep"
    elif script == "bip.magnitude":
        rounds = 1 if method == "omp" else int(row["round"])
        work, words = rounds * ep, f"{rounds} round(s) x {ep:g} ep retraining"
    elif script == "gmp.prune":
        work, words = float(ep), (f"GMP {ep:g} ep ({row['config.stabilize_epochs']:g} stabilize, "
                                  f"{row['config.prune_epochs']:g} prune, rest fine-tune)")
    elif script == "seqattn.prune":
        work, words = float(ep), f"{ep:g} ep from scratch (own dense phases), no pretraining"
    elif script == "posttrain.prune" and method != "l1":
        n, e = row["config.samples"], row["config.phase1_epochs"] + row["config.phase2_epochs"]
        size = TRAIN_SIZE[row["config.dataset"]] - int(row.get("config.val_size", 0) or 0)
        work, words = n * e / size, f"calibration {n:g} samples x {e:g} ep / {size} train"
    elif script == "posttrain.prune":
        work, words = float(row["config.retrain.epochs"]), f"L1 retraining {row['config.retrain.epochs']:g} ep"
    else:
        raise ValueError(f"no cost accounting for {script}")
    prefix = f"dense {dense:g} ep + " if dense else ""
    return {"dense_ep": dense, "method_ep": float(work), "total_ep": dense + float(work), "budget": prefix + words}


def method_seconds(row, log_start: float | None = None) -> float:
    """Measured wall time of the method itself (after its dense model existed): ``method_time`` where the script
    reports it (IMP: cumulative over its rounds), GMP: its wall time after its first log record (the step-0 mask,
    logged once the dense model is loaded), SA++ / ACDC: the whole run (they train from scratch)."""
    value = row.get("method_time")
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    if row["script"] == "gmp.prune":
        if log_start is None:
            raise ValueError("gmp.prune rows need the time of their first log record")
        return float(row["wall_time"]) - log_start
    return float(row["wall_time"])
