"""GMP fine-tuning with vs without weight decay (the blog: dropping it can add up to 1% top-1 on ImageNet).

Same GMP runs, differing only in the fine-tuning stage's weight decay (the optimizer's value vs 0): accuracy and test
loss, and the accuracy without minus with weight decay per seed (same seed, same everything else).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.gmp import runs as gmp_runs
from figures.plot import PAIRED_NOTE, band, mean_spread, paired, paired_panel, save_figure, save_long, sparsity_axis

PAPER = "Neural Magic GMP blog: weight decay removed in fine-tuning"
# the high-sparsity end of each profile's GMP grid, where fine-tuning matters most
ARMS, VALUES = ("setup", "finetune_wd", "sparsity"), ("acc", "loss")  # the long CSV: arms, seed, values
SPARSITIES = {"tiny": (0.9, 0.95, 0.98), "small": (0.95, 0.98, 0.99), "paper": (0.9, 0.95, 0.98)}
# seeds where not the grid's (small: 3 of the grid's 5 at 98-99%, paired with its GMP runs of those seeds)
SEEDS = {"small": (0, 1, 2)}


def runs(profile: str):
    return [row for wd in (None, 0.0)
            for row in gmp_runs.grid(profile, sparsities=SPARSITIES[profile], seeds=SEEDS.get(profile),
                                      method="gmp", finetune_weight_decay=wd)]


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: setup, finetune_wd (the fine-tuning weight decay: 0, or the optimizer's kept), sparsity, seed,
    acc (%), loss (test), run (hash)."""
    wd = df["config.finetune_weight_decay"]
    return pd.DataFrame({"setup": df.apply(gmp_runs.setup_label, axis=1),
                         "finetune_wd": wd.where(wd.notna(), df["config.optim.weight_decay"]).astype(float),
                         "sparsity": df["config.target_sparsity"], "seed": df["config.seed"],
                         "acc": 100 * df["test_acc"], "loss": df["test_loss"], "run": df["hash"]})


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    long = tidy(df)
    setups = list(dict.fromkeys(long["setup"]))
    fig, axes = plt.subplots(len(setups), 3, figsize=(15, 3.8 * len(setups)), squeeze=False)
    for row, setup in zip(axes, setups):
        part = long[long["setup"] == setup]
        xs = 100 * part["sparsity"]
        for ax, value, ylabel in ((row[0], "acc", "test accuracy (%)"), (row[1], "loss", "test loss")):
            stats = mean_spread(part, ["finetune_wd", "sparsity"], value)
            for i, (wd, s) in enumerate(stats.groupby("finetune_wd")):
                label = "no weight decay in fine-tuning" if wd == 0 else f"weight decay {wd:g} kept"
                band(ax, 100 * s["sparsity"], s, label, f"C{2 + i}", marker="os"[i])
                ax.lines[-1].set_linestyle("--" if wd == 0 else "-")
            sparsity_axis(ax, xs, "sparsity of prunable weights")
            ax.set(title=f"{setup}: {'accuracy' if value == 'acc' else value}",
                   ylabel=f"{ylabel}, seeds: mean, min-max")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        kept = max(w for w in part["finetune_wd"].unique() if w != 0)
        diffs = paired(part, "finetune_wd", 0.0, kept, "acc", ["sparsity"])
        sparsity_axis(row[2], xs, "sparsity of prunable weights")
        paired_panel(row[2], diffs.assign(x=100 * diffs["sparsity"]), "x",
                     ylabel=f"no wd - wd {kept:g} kept, accuracy (pt)")
        row[2].set_title(PAIRED_NOTE, fontsize=8)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(long, base, ARMS, VALUES)]
