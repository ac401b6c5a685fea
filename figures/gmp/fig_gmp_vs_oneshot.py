"""GMP vs one-shot magnitude pruning: test accuracy against target sparsity, mean and spread over 3 seeds.

Both methods start from the same dense model and train for the same epochs with the same learning rates; only the
sparsity schedule differs (cubic over the pruning stage vs the final sparsity at step 0). The dashed line is the dense
model. At the paper profile the ImageNet panel overlays Gale et al.'s magnitude-pruning ResNet-50 numbers.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.gmp import runs as gmp_runs
from figures.plot import band, mean_spread, save_csv, save_figure

PAPER = "GMP vs one-shot (Neural Magic blog / Zhu & Gupta 2017); Gale et al. 2019 R50 overlay"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "gale2019_magnitude_resnet50.csv"


def runs(profile: str):
    return [row for method in ("gmp", "oneshot") for row in gmp_runs.grid(profile, method=method)]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = df.assign(setup=df.apply(gmp_runs.setup_label, axis=1), accuracy=100 * df["test_acc"],
                   dense=100 * df["dense_test_acc"])
    stats = mean_spread(df, ["setup", "config.method", "config.target_sparsity"], "accuracy")
    dense = mean_spread(df, ["setup"], "dense")
    setups = list(dict.fromkeys(df["setup"]))
    fig, axes = plt.subplots(1, len(setups), figsize=(5 * len(setups), 3.8), squeeze=False)
    for ax, setup in zip(axes[0], setups):
        for method, label in (("gmp", "GMP (cubic)"), ("oneshot", "one-shot + fine-tune")):
            s = stats[(stats["setup"] == setup) & (stats["config.method"] == method)]
            band(ax, 100 * s["config.target_sparsity"], s, label, gmp_runs.COLORS[method])
        d = dense[dense["setup"] == setup].iloc[0]
        ax.axhline(d["mean"], color=gmp_runs.COLORS["dense"], ls="--", lw=1, label=f"dense ({d['mean']:.2f}%)")
        if profile == "paper" and "imagenet" in setup and REFERENCE.exists():
            ref = pd.read_csv(REFERENCE)
            ax.plot(ref["sparsity"], ref["top1"], "k^", ms=5, label="Gale et al. 2019 (magnitude)")
        ax.set(title=setup, xlabel="sparsity of prunable weights (%)", ylabel="test accuracy (%), seeds: mean, min-max")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    csv = stats.rename(columns={"config.method": "method", "config.target_sparsity": "sparsity",
                                "mean": "acc_mean", "std": "acc_std", "min": "acc_min", "max": "acc_max",
                                "count": "seeds"})
    csv = csv.merge(dense[["setup", "mean"]].rename(columns={"mean": "dense_acc"}), on="setup")
    return [*save_figure(fig, base), save_csv(csv, base)]
