"""Fig. 5: ablation, top-1 against the channel ratio for the full method, without the sparsity penalty (phase 1
skipped: remove, then balanced recalibration) and without reconstruction (remove only). Mean and min-max over the
calibration draws; the dense model dashed. Below: each link of the claimed order (full > w/o sparsity penalty > w/o
reconstruction), better minus worse per calibration draw (the same samples), with the mean's 95% t-interval.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.plot import (PAIRED_NOTE, band, mean_spread, paired, paired_panel, save_figure, save_long,
                          sparsity_axis)
from figures.posttrain import runs as P

PAPER = "post-training structured pruning, Fig. 5 (ablation: full / w/o sparsity penalty / w/o reconstruction)"
VARIANTS = {"full": {"method": "ours"}, "w/o sparsity penalty": {"method": "ours", "phase1_epochs": 0},
            "w/o reconstruction": {"method": "none"}}
ARMS, VALUES = ("setup", "variant", "ratio"), ("top1", "RP", "RF", "dense_top1")  # the long CSV (seed: the draw)
COLORS = {"full": "C0", "w/o sparsity penalty": "C1", "w/o reconstruction": "C3"}


def variant(r) -> str:
    if r["config.method"] == "none":
        return "w/o reconstruction"
    return "full" if r["config.phase1_epochs"] > 0 else "w/o sparsity penalty"


def runs(profile: str):
    setup = P.ABLATION_SETUP[profile]
    return [P.row(setup, ratio=ratio, sample_seed=d, **over) for over in VARIANTS.values()
            for ratio in P.RATIOS[profile] for d in P.DRAWS[profile]]


def long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: setup, variant, ratio, seed (the calibration draw), top1 (%), RP, RF, dense_top1, run."""
    return pd.DataFrame({"setup": df.apply(P.setup_label, axis=1), "variant": df.apply(variant, axis=1),
                         "ratio": df["config.ratio"], "seed": df["config.sample_seed"], "top1": 100 * df["test_acc"],
                         "RP": df["RP"], "RF": df["RF"], "dense_top1": 100 * df["dense_test_acc"], "run": df["hash"]})


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    data = long(df)
    stats = mean_spread(data, ["variant", "ratio"], "top1")
    dense = data["dense_top1"].mean()
    fig, (ax, dax) = plt.subplots(2, 1, figsize=(5.5, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for name in VARIANTS:
        s = stats[stats["variant"] == name]
        band(ax, 100 * s["ratio"], s, name, COLORS[name])
    ax.axhline(dense, color="k", ls="--", lw=1, label=f"dense ({dense:.2f}%)")
    for a in (ax, dax):
        sparsity_axis(a, 100 * data["ratio"], "channels removed")
    ax.set(title=f"{data['setup'].iloc[0]}: ablation", ylabel="test top-1 (%), draws: mean, min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    names = list(VARIANTS)  # the claimed order: each link of the chain, better minus worse, per calibration draw
    diffs = pd.concat([paired(data, "variant", a, b, "top1", ["ratio"]).assign(link=f"{a} - {b}")
                       for a, b in zip(names, names[1:])], ignore_index=True)
    paired_panel(dax, diffs.assign(x=100 * diffs["ratio"]), "x", series="link",
                 colors={f"{a} - {b}": COLORS[b] for a, b in zip(names, names[1:])}, ylabel="top-1 difference (pt)")
    dax.set_title(PAIRED_NOTE.replace("seed", "calibration draw"), fontsize=7)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES)]
