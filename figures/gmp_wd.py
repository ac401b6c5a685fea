"""GMP fine-tuning with vs without weight decay (the blog: dropping it can add up to 1% top-1 on ImageNet).

Same GMP runs, differing only in the fine-tuning stage's weight decay (the optimizer's value vs 0).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures import gmp_runs
from figures.plot import band, mean_spread, save_csv, save_figure

PAPER = "Neural Magic GMP blog: weight decay removed in fine-tuning"
SPARSITIES = (0.8, 0.9, 0.95, 0.98)


def runs(profile: str):
    return [row for wd in (None, 0.0)
            for row in gmp_runs.grid(profile, sparsities=SPARSITIES, method="gmp", finetune_weight_decay=wd)]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    wd = df["config.finetune_weight_decay"]
    df = df.assign(setup=df.apply(gmp_runs.setup_label, axis=1), accuracy=100 * df["test_acc"],
                   finetune_wd=wd.where(wd.notna(), df["config.optim.weight_decay"]).astype(float))
    stats = mean_spread(df, ["setup", "finetune_wd", "config.target_sparsity"], "accuracy")
    setups = list(dict.fromkeys(df["setup"]))
    fig, axes = plt.subplots(1, len(setups), figsize=(5 * len(setups), 3.8), squeeze=False)
    for ax, setup in zip(axes[0], setups):
        for i, (value, s) in enumerate(stats[stats["setup"] == setup].groupby("finetune_wd")):
            label = "no weight decay in fine-tuning" if value == 0 else f"weight decay {value:g} kept"
            band(ax, 100 * s["config.target_sparsity"], s["mean"], s["std"], label, f"C{2 + i}")
        ax.set(title=setup, xlabel="sparsity of prunable weights (%)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    wide = stats.pivot_table(index=["setup", "config.target_sparsity"], columns="finetune_wd", values="mean")
    wide.columns = [f"acc_wd_{c:g}" for c in wide.columns]
    wide = wide.reset_index().rename(columns={"config.target_sparsity": "sparsity"})
    zero, kept = wide.filter(like="acc_wd_0").columns[0], [c for c in wide.columns if c.startswith("acc_wd_")][-1]
    wide["gain_without_wd"] = wide[zero] - wide[kept]
    return [*save_figure(fig, base), save_csv(wide, base)]
