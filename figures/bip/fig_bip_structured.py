"""BiP paper, Fig. 7: structured pruning -- filter-wise and channel-wise trajectories of BiP and Hydra.

A mask entry covers a whole filter (output channel) or input channel; its score is the sum of the signed scores of its
weights (bip/scores.py) and every layer keeps the same fraction (the first conv stays dense). Linear layers stay dense.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.bip import runs as R
from figures.plot import band, mean_spread, save_csv, save_figure

PAPER = "BiP (Zhang et al. 2022) Fig. 7: filter-wise and channel-wise structured pruning"


def runs(profile: str):
    return [("bip.prune", R.prune_config(setup, method, structure=structure, exclude=("first",), target_sparsity=s,
                                         seed=seed))
            for setup in R.setups(profile, R.STRUCTURED_SETUPS[profile]).values() for structure in R.STRUCTURES[profile]
            for method in ("bip", "hydra") for s in R.STRUCTURED[profile] for seed in R.SEEDS]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = R.tidy(df).assign(structure=lambda d: d["config.structure"])
    stats = mean_spread(df, ["setup", "structure", "method", "x"], "acc")
    dense = mean_spread(df.drop_duplicates(["setup", "config.seed"]), ["setup"], "dense").set_index("setup")["mean"]
    panels = list(dict.fromkeys(zip(df["setup"], df["structure"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (setup, structure) in zip(axes[0], panels):
        for method in ("hydra", "bip"):
            s = stats[(stats["setup"] == setup) & (stats["structure"] == structure) & (stats["method"] == method)]
            band(ax, s["x"], s.sort_values("x"), R.LABELS[method], R.COLORS[method])
        ax.axhline(dense[setup], color="k", ls="--", lw=1, label=f"dense ({dense[setup]:.2f}%)")
        ax.set(title=f"{setup}, {structure}-wise", xlabel=f"{structure}s removed per conv layer (%)",
               ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("structured pruning (mean over seeds, min-max band)", fontsize=9)
    fig.tight_layout()
    csv = stats.rename(columns={"x": "sparsity", "mean": "acc_mean", "std": "acc_std", "min": "acc_min",
                                "max": "acc_max", "count": "seeds"}).assign(dense_acc=lambda d: d["setup"].map(dense))
    return [*save_figure(fig, base), save_csv(csv, base)]
