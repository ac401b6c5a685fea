"""Fig. 4: top-1 after pruning against the number of calibration samples, mean and min-max over 10 sample draws.

Each draw is a different seeded set of training samples (without replacement, no augmentation); the dense model and
the channels removed are the same for every draw. The dashed line is the dense model; at the paper profile the
authors' ten ImageNet ResNet-50 calibrations (72.51-72.70, seed rebuttal) are overlaid. Below: the most samples minus
each smaller count, per draw (seed), with the mean's 95% t-interval.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.plot import PAIRED_NOTE, band, mean_spread, paired, paired_panel, save_figure, save_long
from figures.posttrain import runs as P

PAPER = "post-training structured pruning, Fig. 4 (accuracy vs calibration samples, 10 draws)"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "posttrain_ten_draws.csv"
ARMS, VALUES = ("setup", "samples"), ("top1", "time_s", "dense_top1")  # the long CSV (seed: the calibration draw)


def runs(profile: str):
    setup = P.SAMPLES_SETUP[profile]
    return [P.row(setup, samples=n, sample_seed=d) for n in P.SAMPLES[profile] for d in P.SAMPLE_DRAWS]


def long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: setup, samples, seed (the calibration draw), top1 (%), time_s, dense_top1, run."""
    return pd.DataFrame({"setup": df.apply(P.setup_label, axis=1), "samples": df["config.samples"],
                         "seed": df["config.sample_seed"], "top1": 100 * df["test_acc"], "time_s": df["method_time"],
                         "dense_top1": 100 * df["dense_test_acc"], "run": df["hash"]})


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    data = long(df)
    stats = mean_spread(data, ["samples"], "top1")
    dense = data["dense_top1"].mean()
    fig, (ax, dax) = plt.subplots(2, 1, figsize=(5.5, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    band(ax, stats["samples"], stats, f"ours, ratio {df['config.ratio'].iloc[0]:g}", "C0")
    ax.axhline(dense, color="k", ls="--", lw=1, label=f"dense ({dense:.2f}%)")
    if profile == "paper" and REFERENCE.exists():
        ref = pd.read_csv(REFERENCE)
        ax.plot(ref["samples"], ref["top1"], "k^", ms=4, label="authors' 10 draws (R50 ImageNet)")
    for a in (ax, dax):
        a.set_xscale("log", base=2)
        a.set_xticks(stats["samples"], [str(int(n)) for n in stats["samples"]])
    ax.set(title=f"{data['setup'].iloc[0]}: calibration set size",
           ylabel=f"test top-1 (%), {int(stats['count'].max())} draws: mean, min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    most = int(data["samples"].max())  # the claim: more samples help; the most minus each fewer, per draw
    parts = [paired(data, "samples", most, n, "top1", []).assign(samples=n)
             for n in sorted(data["samples"].unique())[:-1]]
    diffs = pd.concat(parts, ignore_index=True) if parts else None
    paired_panel(dax, diffs, "samples", ylabel=f"top-1 with {most} - with fewer (pt)")
    dax.set(xlabel="calibration samples (fewer)")
    dax.set_title(PAIRED_NOTE.replace("seed", "calibration draw"), fontsize=7)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES)]
