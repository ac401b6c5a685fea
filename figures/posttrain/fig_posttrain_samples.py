"""Fig. 4: top-1 after pruning against the number of calibration samples, mean and min-max over 10 sample draws.

Each draw is a different seeded set of training samples (without replacement, no augmentation); the dense model and
the channels removed are the same for every draw. The dashed line is the dense model; at the paper profile the
authors' ten ImageNet ResNet-50 calibrations (72.51-72.70, seed rebuttal) are overlaid.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.plot import band, mean_spread, save_csv, save_figure
from figures.posttrain import runs as P

PAPER = "post-training structured pruning, Fig. 4 (accuracy vs calibration samples, 10 draws)"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "posttrain_ten_draws.csv"


def runs(profile: str):
    setup = P.SAMPLES_SETUP[profile]
    return [P.row(setup, samples=n, sample_seed=d) for n in P.SAMPLES[profile] for d in P.SAMPLE_DRAWS]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = df.assign(top1=100 * df["test_acc"], setup=df.apply(P.setup_label, axis=1))
    stats = mean_spread(df, ["config.samples"], "top1")
    dense = 100 * df["dense_test_acc"].mean()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    band(ax, stats["config.samples"], stats, f"ours, ratio {df['config.ratio'].iloc[0]:g}", "C0")
    ax.axhline(dense, color="k", ls="--", lw=1, label=f"dense ({dense:.2f}%)")
    if profile == "paper" and REFERENCE.exists():
        ref = pd.read_csv(REFERENCE)
        ax.plot(ref["samples"], ref["top1"], "k^", ms=4, label="authors' 10 draws (R50 ImageNet)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(stats["config.samples"], [str(int(n)) for n in stats["config.samples"]])
    ax.set(title=f"{df['setup'].iloc[0]}: calibration set size", xlabel="calibration samples",
           ylabel=f"test top-1 (%), {int(stats['count'].max())} draws: mean, min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    time = df.groupby("config.samples")["method_time"].mean().rename("time_s").reset_index()
    csv = stats.rename(columns={"config.samples": "samples", "mean": "top1_mean", "std": "top1_std",
                                "min": "top1_min", "max": "top1_max", "count": "draws"}).merge(
        time.rename(columns={"config.samples": "samples"}), on="samples").assign(dense_top1=dense)
    return [*save_figure(fig, base), save_csv(csv, base)]
