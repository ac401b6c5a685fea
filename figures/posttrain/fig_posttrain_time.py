"""Calibration time of the post-training method against the time of L1-norm pruning + retraining, at equal channel
ratios (the seed's W2 / appendix A.1 question: what does skipping retraining save?).

Bars: wall time of each method from the dense model to the pruned model (ours: grouping, phase 1, removal, phase 2;
L1: ranking, removal, retraining with labels), both in the same process conditions; below, ours minus L1 + retraining
per calibration draw. The CSV holds every run (long, with its draw as ``seed``); ``fig-posttrain-time-summary.csv``
both methods' mean times and top-1s per ratio and the time ratio (goal at the tiny profile: calibration < 5% of L1 +
retraining).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures.plot import PAIRED_NOTE, paired, paired_panel, save_figure, save_long
from figures.posttrain import runs as P

PAPER = "post-training structured pruning: calibration time vs L1-norm + retraining time (appendix A.1, seed W2)"
TIMED = True  # its runs' wall times are its subject: `python -m figures all` makes it first
ARMS, VALUES = ("setup", "method", "ratio"), ("time_s", "top1")  # the long CSV (seed: the calibration draw)


def runs(profile: str):
    setup = P.TIME_SETUP[profile]
    return [P.row(setup, method=m, ratio=r) for r in P.TIME_RATIOS[profile] for m in ("ours", "l1")]


def table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ratio: both methods' wall times (mean over their runs), time_ratio = calibration / (L1 + retraining), both
    top-1s (%), the retraining epochs and the calibration samples."""
    g = df.groupby(["config.ratio", "config.method"]).agg(time=("method_time", "mean"), top1=("test_acc", "mean"))
    t = g["time"].unstack("config.method")
    acc = 100 * g["top1"].unstack("config.method")
    csv = pd.DataFrame({"ratio": t.index, "calibration_s": t["ours"].values, "l1_retrain_s": t["l1"].values,
                        "time_ratio": (t["ours"] / t["l1"]).values, "top1_ours": acc["ours"].values,
                        "top1_l1_retrain": acc["l1"].values,
                        "retrain_epochs": int(df["config.retrain.epochs"].iloc[0]),
                        "samples": int(df["config.samples"].iloc[0])})
    return csv


def long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: setup, method, ratio, seed (the calibration draw), time_s (its wall time), top1 (%), run."""
    return pd.DataFrame({"setup": df.apply(P.setup_label, axis=1), "method": df["config.method"],
                         "ratio": df["config.ratio"], "seed": df["config.sample_seed"], "time_s": df["method_time"],
                         "top1": 100 * df["test_acc"], "run": df["hash"]})


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    csv, data = table(df), long(df)
    fig, (ax, dax) = plt.subplots(2, 1, figsize=(6, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    x = np.arange(len(csv))
    ax.bar(x - 0.2, csv["calibration_s"], 0.4, color="C0", label=f"ours: calibration on {csv['samples'][0]} samples")
    ax.bar(x + 0.2, csv["l1_retrain_s"], 0.4, color="C1",
           label=f"L1-norm + {csv['retrain_epochs'][0]} epochs retraining")
    for i, r in csv.iterrows():  # each bar: the top-1 it reached
        ax.annotate(f"{r['top1_ours']:.1f}%", (x[i] - 0.2, r["calibration_s"]), ha="center", va="bottom", fontsize=7)
        ax.annotate(f"{r['top1_l1_retrain']:.1f}%", (x[i] + 0.2, r["l1_retrain_s"]), ha="center", va="bottom",
                    fontsize=7)
    ax.set_yscale("log")
    ax.set(title=f"{P.setup_label(df.iloc[0])}: time to a pruned model", ylabel="wall time (s, log); labels: top-1")
    ax.grid(alpha=0.3, axis="y", which="both")
    ax.legend(fontsize=8, loc="upper left")
    ax.margins(y=0.35)
    diffs = paired(data, "method", "ours", "l1", "time_s", ["ratio"])
    paired_panel(dax, diffs.assign(pos=diffs["ratio"].map(list(csv["ratio"]).index)), "pos", line=False,
                 ylabel="ours - L1 + retraining, time (s; claim: < 0)")
    dax.set_xticks(x, [f"{100 * r:.0f}%\n(time ratio {100 * t:.1f}%)" for r, t in zip(csv["ratio"], csv["time_ratio"])])
    dax.set(xlabel="channels removed")
    dax.set_title(PAIRED_NOTE.replace("seed", "calibration draw"), fontsize=7)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES, summary=csv)]
