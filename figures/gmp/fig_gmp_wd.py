"""GMP fine-tuning with vs without weight decay (the blog: dropping it can add up to 1% top-1 on ImageNet).

Same GMP runs, differing only in the fine-tuning stage's weight decay (the optimizer's value vs 0).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.gmp import runs as gmp_runs
from figures.plot import band, mean_spread, save_csv, save_figure

PAPER = "Neural Magic GMP blog: weight decay removed in fine-tuning"
# the high-sparsity end of each profile's GMP grid, where fine-tuning matters most
SPARSITIES = {"tiny": (0.9, 0.95, 0.98), "small": (0.95, 0.98, 0.99), "paper": (0.9, 0.95, 0.98)}


def runs(profile: str):
    return [row for wd in (None, 0.0)
            for row in gmp_runs.grid(profile, sparsities=SPARSITIES[profile], method="gmp", finetune_weight_decay=wd)]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    wd = df["config.finetune_weight_decay"]
    df = df.assign(setup=df.apply(gmp_runs.setup_label, axis=1), accuracy=100 * df["test_acc"],
                   finetune_wd=wd.where(wd.notna(), df["config.optim.weight_decay"]).astype(float))
    df["loss"] = df["test_loss"]
    setups = list(dict.fromkeys(df["setup"]))
    fig, axes = plt.subplots(len(setups), 2, figsize=(10, 3.8 * len(setups)), squeeze=False)
    for row, setup in zip(axes, setups):
        for ax, value, ylabel in ((row[0], "accuracy", "test accuracy (%)"), (row[1], "loss", "test loss")):
            stats = mean_spread(df[df["setup"] == setup], ["finetune_wd", "config.target_sparsity"], value)
            for i, (wd, s) in enumerate(stats.groupby("finetune_wd")):
                label = "no weight decay in fine-tuning" if wd == 0 else f"weight decay {wd:g} kept"
                band(ax, 100 * s["config.target_sparsity"], s, label, f"C{2 + i}", marker="os"[i])
                ax.lines[-1].set_linestyle("--" if wd == 0 else "-")
            ax.set(title=f"{setup}: {value}", xlabel="sparsity of prunable weights (%)",
                   ylabel=f"{ylabel}, seeds: mean, min-max")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    # accuracy and (more sensitive) test loss, with and without weight decay in fine-tuning, mean over seeds
    wide = df.pivot_table(index=["setup", "config.target_sparsity"], columns="finetune_wd",
                          values=["accuracy", "loss"], aggfunc="mean")
    wd_kept = max(c for c in wide.columns.levels[1] if c != 0)
    table = pd.DataFrame({
        "acc_without_wd": wide[("accuracy", 0.0)], f"acc_with_wd_{wd_kept:g}": wide[("accuracy", wd_kept)],
        "acc_gain_without_wd": wide[("accuracy", 0.0)] - wide[("accuracy", wd_kept)],
        "loss_without_wd": wide[("loss", 0.0)], f"loss_with_wd_{wd_kept:g}": wide[("loss", wd_kept)],
    }).reset_index().rename(columns={"config.target_sparsity": "sparsity"})
    table["seeds"] = int(df.groupby(["setup", "config.target_sparsity", "finetune_wd"]).size().min())
    return [*save_figure(fig, base), save_csv(table, base)]
