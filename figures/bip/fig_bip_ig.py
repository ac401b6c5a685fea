"""Beyond the paper: does BiP's implicit-gradient term matter? BiP with the closed-form IG term at a sweep of gamma
(1e4 is the configs' 1/gamma = 1e-4) vs without it (--ig none: the upper step is then plain straight-through, as
Hydra's). Top: test accuracy; bottom: ig_ratio = ||(1/gamma) grad_z (.) grad_theta|| / ||grad_m l|| (mean over
epochs), i.e. how much the term weighs in the upper-level gradient; bottom: with minus without the term, per seed
(the same seed's dense model and data), with the mean's 95% t-interval.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.bip import runs as R
from figures.plot import PAIRED_NOTE, mean_spread, paired, paired_panel, save_figure, save_long

PAPER = "beyond the BiP paper: implicit-gradient term on/off and a gamma sweep"
ARMS = ("setup", "sparsity", "variant")  # the long CSV: arms (variant: "no IG" or gamma), seed, values
VALUES = ("acc", "val_acc", "ig_ratio", "mask_changed")


def runs(profile: str):
    return [("bip.prune", R.prune_config(setup, ig=ig, gamma=g, target_sparsity=s, seed=seed))
            for setup in R.setups(profile, R.IG_SETUPS[profile]).values() for s in R.IG_SPARSITIES[profile]
            for ig, g in [("none", 1e4)] + [("paper", g) for g in R.GAMMAS]
            for seed in R.IG_SEEDS.get(profile, R.SEEDS)]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = R.tidy(df)
    variant = ["no IG" if ig == "none" else f"{g:g}" for ig, g in zip(df["config.ig"], df["config.gamma"])]
    df = df.assign(variant=variant, val=100 * df["val_acc"])
    data = pd.DataFrame({"setup": df["setup"], "sparsity": df["x"], "variant": df["variant"],
                         "seed": df["config.seed"], "acc": df["acc"], "val_acc": df["val"],
                         "ig_ratio": df["ig_ratio"], "mask_changed": df["mask_changed"], "ig": df["config.ig"],
                         "gamma": df["config.gamma"], "run": df["hash"]})
    keys = ["setup", "x", "config.ig", "config.gamma", "variant"]
    stats = mean_spread(df, keys, "acc")
    stats = stats.merge(df.groupby(keys)[["ig_ratio"]].mean().reset_index(), on=keys)
    with_ig = data[data["ig"] == "paper"].drop_duplicates("variant")
    diffs = pd.concat([paired(data, "variant", v, "no IG", "acc", ["setup", "sparsity"]).assign(gamma=g)
                       for v, g in zip(with_ig["variant"], with_ig["gamma"])], ignore_index=True)
    setups = list(dict.fromkeys(df["setup"]))
    fig, axes = plt.subplots(3, len(setups), figsize=(5 * len(setups), 9.2), squeeze=False, sharex="col")
    for col, setup in enumerate(setups):
        ax, ax2, dax = axes[0, col], axes[1, col], axes[2, col]
        xs = sorted(stats[stats["setup"] == setup]["x"].unique())
        for i, x in enumerate(xs):
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
        ax2.set(xscale="log", yscale="log", ylabel="||IG term|| / ||grad_m l||")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=7)
        d = diffs[diffs["setup"] == setup]
        paired_panel(dax, d.assign(at=d["sparsity"].map(lambda x: f"{x:g}%")), "gamma", series="at",
                     colors={f"{x:g}%": f"C{i}" for i, x in enumerate(xs)}, ylabel="with IG - no IG, accuracy (pt)")
        dax.set(xlabel="gamma (IG term scaled by 1/gamma; paper: 1e4)")
        dax.set_title(PAIRED_NOTE, fontsize=7)
    fig.suptitle("BiP with the implicit-gradient term at several gamma vs without it (mean over seeds, min-max); "
                 "bottom: with minus without, per seed", fontsize=9)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES)]
