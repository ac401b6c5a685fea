"""Calibration time of the post-training method against the time of L1-norm pruning + retraining, at equal channel
ratios (the seed's W2 / appendix A.1 question: what does skipping retraining save?).

Bars: wall time of each method from the dense model to the pruned model (ours: grouping, phase 1, removal, phase 2;
L1: ranking, removal, retraining with labels), both in the same process conditions; below, ours minus L1 + retraining
per calibration draw. Where the profile table repeats the timed runs (``P.TIME_DRAWS``: their ``sample_seed``; L1 +
retraining does not use it, so its runs differ by it only), the fastest of each method's repetitions per ratio is
compared (a timing only gains from other load on the machine); L1 + retraining's time per retraining epoch is drawn
beside its total. The CSV holds every run (long, with its draw as ``seed``); ``fig-posttrain-time-summary.csv``
per ratio both methods' fastest and mean times, their top-1s (mean), the time ratio of the fastest runs, L1 +
retraining's fastest time per retraining epoch and the number of timed runs (goal at the tiny profile: calibration
< 5% of L1 + retraining).
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
    """Each method at each ratio, once per timed repetition of ``P.TIME_DRAWS`` (its sample_seed; absent: once)."""
    setup = P.TIME_SETUP[profile]
    draws = [{"sample_seed": d} for d in P.TIME_DRAWS[profile]] if profile in P.TIME_DRAWS else [{}]
    return [P.row(setup, method=m, ratio=r, **d) for r in P.TIME_RATIOS[profile] for m in ("ours", "l1")
            for d in draws]


def table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ratio: both methods' wall times (the fastest of their timed runs, and the mean), time_ratio = calibration /
    (L1 + retraining) of the fastest runs, L1 + retraining's fastest time per retraining epoch, both top-1s (%, mean
    over the runs), the timed runs per method, the retraining epochs and the calibration samples."""
    g = df.groupby(["config.ratio", "config.method"]).agg(time=("method_time", "min"), mean=("method_time", "mean"),
                                                          top1=("test_acc", "mean"), runs=("method_time", "size"))
    t, mean = g["time"].unstack("config.method"), g["mean"].unstack("config.method")
    acc = 100 * g["top1"].unstack("config.method")
    epochs = int(df["config.retrain.epochs"].iloc[0])
    csv = pd.DataFrame({"ratio": t.index, "calibration_s": t["ours"].values, "l1_retrain_s": t["l1"].values,
                        "time_ratio": (t["ours"] / t["l1"]).values, "l1_retrain_s_per_epoch": (t["l1"] / epochs).values,
                        "calibration_mean_s": mean["ours"].values, "l1_retrain_mean_s": mean["l1"].values,
                        "top1_ours": acc["ours"].values, "top1_l1_retrain": acc["l1"].values,
                        "timed_runs": g["runs"].unstack("config.method").min(axis=1).astype(int).values,
                        "retrain_epochs": epochs, "samples": int(df["config.samples"].iloc[0])})
    return csv


def long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: setup, method, ratio, seed (the calibration draw), time_s (its wall time), top1 (%), run."""
    return pd.DataFrame({"setup": df.apply(P.setup_label, axis=1), "method": df["config.method"],
                         "ratio": df["config.ratio"], "seed": df["config.sample_seed"], "time_s": df["method_time"],
                         "top1": 100 * df["test_acc"], "run": df["hash"]})


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    csv, data = table(df), long(df)
    fig, (ax, dax) = plt.subplots(2, 1, figsize=(6, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    x, w = np.arange(len(csv)), 0.27
    n = int(csv["timed_runs"].min())
    fastest = f", fastest of {n} runs" if n > 1 else ""
    ax.bar(x - w, csv["calibration_s"], w, color="C0",
           label=f"ours: calibration on {csv['samples'][0]} samples{fastest}")
    ax.bar(x, csv["l1_retrain_s"], w, color="C1",
           label=f"L1-norm + {csv['retrain_epochs'][0]} epochs retraining{fastest}")
    ax.bar(x + w, csv["l1_retrain_s_per_epoch"], w, color="C1", alpha=0.45, hatch="//",
           label="L1-norm + retraining, per retraining epoch")
    for i, r in csv.iterrows():  # each bar: the top-1 it reached
        ax.annotate(f"{r['top1_ours']:.1f}%", (x[i] - w, r["calibration_s"]), ha="center", va="bottom", fontsize=7)
        ax.annotate(f"{r['top1_l1_retrain']:.1f}%", (x[i], r["l1_retrain_s"]), ha="center", va="bottom",
                    fontsize=7)
        ax.annotate(f"{r['l1_retrain_s_per_epoch']:.3g} s", (x[i] + w, r["l1_retrain_s_per_epoch"]), ha="center",
                    va="bottom", fontsize=6)
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
