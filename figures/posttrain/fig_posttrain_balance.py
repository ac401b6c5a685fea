"""Fig. 6: per-layer update magnitude of phase 2 with and without balanced learning rates.

Update of a layer = ||W_after - W_before|| / ||W_before|| of its weight over phase 2 (recalibration after removal),
mean over the calibration draws, layers in forward order. With one learning rate for all layers, the shallow layers,
whose weights receive the error of every later layer through the holistic loss, move the most; balancing (lr / N for
the first of N layers ... lr / 1 for the last) evens this out. Legend: top-1 of each.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.plot import save_figure, save_long
from figures.posttrain import runs as P

PAPER = "post-training structured pruning, Fig. 6 (per-layer update magnitude, balanced vs unbalanced)"
ARMS, VALUES = ("balanced", "depth", "layer"), ("update", "top1")  # the long CSV: one row per run and layer


def runs(profile: str):
    setup = P.BALANCE_SETUP[profile]
    return [P.row(setup, balanced=b, sample_seed=d) for b in (True, False) for d in P.DRAWS[profile]]


def updates(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, layer) from each run's result.json (per-layer lists stay out of the tidy frame): balanced,
    depth, layer, seed (the calibration draw), update, the run's top1 (%) and hash."""
    rows = []
    for run_dir, balanced, draw_, top1, run in zip(df["run_dir"], df["config.balanced"], df["config.sample_seed"],
                                                   df["test_acc"], df["hash"]):
        result = json.loads((Path(run_dir) / "result.json").read_text())
        rows += [{"balanced": balanced, "depth": depth, "layer": u["layer"], "seed": draw_, "update": u["update"],
                  "top1": 100 * top1, "run": run} for depth, u in enumerate(result["updates"], 1)]
    return pd.DataFrame(rows)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    ups = updates(df)
    stats = ups.groupby(["balanced", "depth", "layer"])["update"].agg(["mean", "min", "max"]).reset_index()
    acc = (100 * df.groupby("config.balanced")["test_acc"].mean()).to_dict()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for balanced, color, label in ((False, "C3", "unbalanced (one lr)"), (True, "C0", "balanced (lr/N ... lr/1)")):
        s = stats[stats["balanced"] == balanced]
        ax.plot(s["depth"], s["mean"], marker="o", ms=4, color=color, label=f"{label}: top-1 {acc[balanced]:.2f}%")
        ax.fill_between(s["depth"], s["min"], s["max"], color=color, alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set(title=f"{P.setup_label(df.iloc[0])}: phase 2 update per layer",
           xlabel="layer (conv / linear, forward order)", ylabel="||W_after - W_before|| / ||W_before||")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return [*save_figure(fig, base), *save_long(ups, base, ARMS, VALUES)]
