"""Beyond the paper: does BiP's implicit-gradient term matter? BiP with the closed-form IG term at a sweep of gamma
(1e4 is the configs' 1/gamma = 1e-4) vs without it (--ig none: the upper step is then plain straight-through, as
Hydra's). Top: test accuracy; bottom: ig_ratio = ||(1/gamma) grad_z (.) grad_theta|| / ||grad_m l|| (mean over
epochs), i.e. how much the term weighs in the upper-level gradient.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.bip import runs as R
from figures.plot import mean_spread, save_csv, save_figure

PAPER = "beyond the BiP paper: implicit-gradient term on/off and a gamma sweep"


def runs(profile: str):
    return [("bip.prune", R.prune_config(setup, ig=ig, gamma=g, target_sparsity=s, seed=seed))
            for setup in R.setups(profile, R.IG_SETUPS[profile]).values() for s in R.IG_SPARSITIES[profile]
            for ig, g in [("none", 1e4)] + [("paper", g) for g in R.GAMMAS] for seed in R.SEEDS]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = R.tidy(df)
    variant = ["no IG" if ig == "none" else f"{g:g}" for ig, g in zip(df["config.ig"], df["config.gamma"])]
    df = df.assign(variant=variant,
                   val=100 * df["val_acc"])
    keys = ["setup", "x", "config.ig", "config.gamma", "variant"]
    stats = mean_spread(df, keys, "acc")
    extra = df.groupby(keys)[["ig_ratio", "mask_changed", "val"]].mean().reset_index()
    stats = stats.merge(extra, on=keys)
    setups = list(dict.fromkeys(df["setup"]))
    fig, axes = plt.subplots(2, len(setups), figsize=(5 * len(setups), 6.4), squeeze=False, sharex="col")
    for col, setup in enumerate(setups):
        ax, ax2 = axes[0, col], axes[1, col]
        for i, x in enumerate(sorted(stats[stats["setup"] == setup]["x"].unique())):
            s = stats[(stats["setup"] == setup) & (stats["x"] == x)]
            ig = s[s["config.ig"] == "paper"].sort_values("config.gamma")
            none = s[s["config.ig"] == "none"].iloc[0]
            color = f"C{i}"
            ax.plot(ig["config.gamma"], ig["mean"], "o-", color=color, label=f"{x:g}%: with IG")
            ax.fill_between(ig["config.gamma"], ig["min"], ig["max"], color=color, alpha=0.2, linewidth=0)
            ax.axhline(none["mean"], color=color, ls="--", lw=1, label=f"{x:g}%: no IG ({none['mean']:.2f})")
            ax.axhspan(none["min"], none["max"], color=color, alpha=0.07)
            ax2.plot(ig["config.gamma"], ig["ig_ratio"], "o-", color=color, label=f"{x:g}%")
        ax.set(title=setup, xscale="log", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax2.axhline(1.0, color="gray", lw=0.8)
        ax2.set(xscale="log", yscale="log", xlabel="gamma (IG term scaled by 1/gamma; paper: 1e4)",
                ylabel="||IG term|| / ||grad_m l||")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=7)
    fig.suptitle("BiP with the implicit-gradient term at several gamma vs without it (mean over seeds, min-max)",
                 fontsize=9)
    fig.tight_layout()
    csv = stats.drop(columns=["config.ig", "config.gamma"]).rename(columns={
        "x": "sparsity", "mean": "acc_mean", "std": "acc_std", "min": "acc_min", "max": "acc_max", "count": "seeds",
        "val": "val_acc_mean", "ig_ratio": "ig_ratio_mean", "mask_changed": "mask_changed_mean"})
    return [*save_figure(fig, base), save_csv(csv, base)]
