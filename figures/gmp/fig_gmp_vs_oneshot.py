"""GMP vs one-shot magnitude pruning: test accuracy against target sparsity, mean and spread over 3 seeds; below, GMP
minus one-shot per seed (the two share the dense model and data order of a seed) with the mean's 95% t-interval.

Both methods start from the same dense model and train for the same epochs with the same learning rates; only the
sparsity schedule differs (cubic over the pruning stage vs the final sparsity at step 0). The dashed line is the dense
model. At the paper profile the ImageNet panel overlays Gale et al.'s magnitude-pruning ResNet-50 numbers.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.gmp import runs as gmp_runs
from figures.plot import PAIRED_NOTE, band, mean_spread, paired, paired_panel, save_figure, save_long, sparsity_axis

PAPER = "GMP vs one-shot (Neural Magic blog / Zhu & Gupta 2017); Gale et al. 2019 R50 overlay"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "gale2019_magnitude_resnet50.csv"
ARMS, VALUES = ("setup", "method", "sparsity"), ("acc", "dense_acc")  # the long CSV: arms, seed, values


def runs(profile: str):
    return [row for method in ("gmp", "oneshot") for row in gmp_runs.grid(profile, method=method)]


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: setup, method, sparsity (the target, a fraction), seed, acc and dense_acc (%), run (hash)."""
    return pd.DataFrame({"setup": df.apply(gmp_runs.setup_label, axis=1), "method": df["config.method"],
                         "sparsity": df["config.target_sparsity"], "seed": df["config.seed"],
                         "acc": 100 * df["test_acc"], "dense_acc": 100 * df["dense_test_acc"], "run": df["hash"]})


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    long = tidy(df)
    stats = mean_spread(long, ["setup", "method", "sparsity"], "acc")
    dense = mean_spread(long, ["setup"], "dense_acc")
    setups = list(dict.fromkeys(long["setup"]))
    fig, axes = plt.subplots(2, len(setups), figsize=(5 * len(setups), 7), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    for ax, dax, setup in zip(axes[0], axes[1], setups):
        for method, label in (("gmp", "GMP (cubic)"), ("oneshot", "one-shot + fine-tune")):
            s = stats[(stats["setup"] == setup) & (stats["method"] == method)]
            band(ax, 100 * s["sparsity"], s, label, gmp_runs.COLORS[method])
        d = dense[dense["setup"] == setup].iloc[0]
        ax.axhline(d["mean"], color=gmp_runs.COLORS["dense"], ls="--", lw=1, label=f"dense ({d['mean']:.2f}%)")
        if profile == "paper" and "imagenet" in setup and REFERENCE.exists():
            ref = pd.read_csv(REFERENCE)
            ax.plot(ref["sparsity"], ref["top1"], "k^", ms=5, label="Gale et al. 2019 (magnitude)")
        xs = 100 * long[long["setup"] == setup]["sparsity"]
        sparsity_axis(ax, xs, "sparsity of prunable weights")
        ax.set(title=setup, ylabel="test accuracy (%), seeds: mean, min-max")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        diffs = paired(long[long["setup"] == setup], "method", "gmp", "oneshot", "acc", ["sparsity"])
        sparsity_axis(dax, xs, "sparsity of prunable weights")
        paired_panel(dax, diffs.assign(x=100 * diffs["sparsity"]), "x", ylabel="GMP - one-shot, accuracy (pt)")
        dax.set_title(PAIRED_NOTE, fontsize=8)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(long, base, ARMS, VALUES)]
