"""Fig. 5: ablation, top-1 against the channel ratio for the full method, without the sparsity penalty (phase 1
skipped: remove, then balanced recalibration) and without reconstruction (remove only). Mean and min-max over the
calibration draws; the dense model dashed.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.plot import band, mean_spread, save_csv, save_figure
from figures.posttrain import runs as P

PAPER = "post-training structured pruning, Fig. 5 (ablation: full / w/o sparsity penalty / w/o reconstruction)"
VARIANTS = {"full": {"method": "ours"}, "w/o sparsity penalty": {"method": "ours", "phase1_epochs": 0},
            "w/o reconstruction": {"method": "none"}}
COLORS = {"full": "C0", "w/o sparsity penalty": "C1", "w/o reconstruction": "C3"}


def variant(r) -> str:
    if r["config.method"] == "none":
        return "w/o reconstruction"
    return "full" if r["config.phase1_epochs"] > 0 else "w/o sparsity penalty"


def runs(profile: str):
    setup = P.ABLATION_SETUP[profile]
    return [P.row(setup, ratio=ratio, sample_seed=d, **over) for over in VARIANTS.values()
            for ratio in P.RATIOS[profile] for d in P.DRAWS[profile]]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = df.assign(variant=df.apply(variant, axis=1), top1=100 * df["test_acc"],
                   setup=df.apply(P.setup_label, axis=1))
    stats = mean_spread(df, ["variant", "config.ratio"], "top1")
    dense = 100 * df["dense_test_acc"].mean()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in VARIANTS:
        s = stats[stats["variant"] == name]
        band(ax, 100 * s["config.ratio"], s, name, COLORS[name])
    ax.axhline(dense, color="k", ls="--", lw=1, label=f"dense ({dense:.2f}%)")
    ax.set(title=f"{df['setup'].iloc[0]}: ablation", xlabel="channels removed (%)",
           ylabel="test top-1 (%), draws: mean, min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    cost = df.groupby("config.ratio")[["RP", "RF"]].mean().reset_index()
    csv = stats.rename(columns={"config.ratio": "ratio", "mean": "top1_mean", "std": "top1_std", "min": "top1_min",
                                "max": "top1_max", "count": "draws"}).merge(
        cost.rename(columns={"config.ratio": "ratio"}), on="ratio").assign(dense_top1=dense)
    return [*save_figure(fig, base), save_csv(csv, base)]
