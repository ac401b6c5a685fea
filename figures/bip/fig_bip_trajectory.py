"""BiP paper, Fig. 6: test accuracy vs sparsity of BiP, IMP, OMP and Hydra (unstructured), dense line, seeds' spread.

Every BiP / Hydra / OMP point prunes the dense model directly; IMP is one chain of 20%-per-round rounds per seed, each
round a point. At the paper profile the paper's read-offs (BiP/IMP/OMP at 20/59/79%) are overlaid as black markers.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.bip import runs as R
from figures.plot import band, mean_spread, save_csv, save_figure

PAPER = "BiP (Zhang et al. 2022) Fig. 6: unstructured pruning trajectories, BiP vs IMP/OMP/Hydra"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "bip_fig6.csv"
MARKERS = {"bip": "o", "imp": "s", "omp": "^", "hydra": "v"}


def runs(profile: str):
    return R.trajectory(profile)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = R.tidy(df)
    stats = mean_spread(df, ["setup", "method", "x"], "acc")
    dense = mean_spread(df.drop_duplicates(["setup", "config.seed"]), ["setup"], "dense")
    setups = list(dict.fromkeys(df["setup"]))
    cols = min(4, len(setups))
    rows = -(-len(setups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    ref = pd.read_csv(REFERENCE) if profile == "paper" else None
    for ax, setup in zip(axes.flat, setups):
        for method in ("omp", "hydra", "imp", "bip"):
            s = stats[(stats["setup"] == setup) & (stats["method"] == method)].sort_values("x")
            if len(s):
                band(ax, s["x"], s, R.LABELS[method], R.COLORS[method], marker=MARKERS[method])
        d = dense[dense["setup"] == setup]["mean"].iloc[0]
        ax.axhline(d, color="k", ls="--", lw=1, label=f"dense ({d:.2f}%)")
        if ref is not None:
            for method, r in ref[ref["setup"] == setup].groupby("method"):
                ax.plot(r["sparsity"], r["accuracy"], MARKERS.get(method, "x"), mfc="none", color="k", ms=7,
                        label=f"paper {R.LABELS.get(method, method)}")
        ax.set(title=setup, xlabel="sparsity (%)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(setups):]:
        ax.axis("off")
    fig.suptitle("test accuracy vs sparsity (mean over seeds, min-max band); every point pruned from the dense "
                 "model except IMP's rounds", fontsize=9)
    fig.tight_layout()
    csv = stats.rename(columns={"x": "sparsity", "mean": "acc_mean", "std": "acc_std", "min": "acc_min",
                                "max": "acc_max", "count": "seeds"})
    csv = csv.merge(dense[["setup", "mean"]].rename(columns={"mean": "dense_acc"}), on="setup")
    return [*save_figure(fig, base), save_csv(csv, base)]
