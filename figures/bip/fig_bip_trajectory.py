"""BiP paper, Fig. 6: test accuracy vs sparsity of BiP, IMP, OMP and Hydra (unstructured), dense line, seeds' spread.

Every BiP / Hydra / OMP point prunes the dense model directly; IMP is one chain of 20%-per-round rounds per seed, each
round a point. At the paper profile the paper's read-offs (BiP/IMP/OMP at 20/59/79%) are overlaid as black markers.
Below each panel: BiP minus IMP / OMP / Hydra per seed (the same seed's dense model) at each sparsity both have, with
the mean's 95% t-interval. Where the profile table has BiP's longer arm (``R.LONG``, method "bip-long"), it is drawn
with its own colour and label, and below, its difference to IMP per seed.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.bip import runs as R
from figures.plot import PAIRED_NOTE, band, mean_spread, paired, paired_panel, save_figure, save_long, sparsity_axis

PAPER = "BiP (Zhang et al. 2022) Fig. 6: unstructured pruning trajectories, BiP vs IMP/OMP/Hydra"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "bip_fig6.csv"
MARKERS = {"bip": "o", "imp": "s", "omp": "^", "hydra": "v", "bip-long": "D"}
METHODS = ("omp", "hydra", "imp", "bip", "bip-long")  # drawing order (bip-long: where the profile table has it)
ARMS, VALUES = ("setup", "method", "sparsity"), ("acc", "dense_acc")  # the long CSV: arms, seed, values


def runs(profile: str):
    return R.trajectory(profile)


def long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and reported point (IMP: per round): setup, method, sparsity (%, the grid value), seed, acc and
    dense_acc (%), time (the method's wall time, s), run (hash). The BiP figures' long CSVs are cut from it."""
    t = R.tidy(df)
    return pd.DataFrame({"setup": t["setup"], "method": t["method"], "sparsity": t["x"], "seed": t["config.seed"],
                         "acc": t["acc"], "dense_acc": t["dense"], "time": t["time"], "run": t["hash"]})


def differences(long: pd.DataFrame, value: str, better: str = "bip", others=("imp", "omp", "hydra")) -> pd.DataFrame:
    """Per seed and sparsity: ``value`` of ``better`` minus each of ``others`` (column ``vs``), from ``long`` rows."""
    parts = [paired(long, "method", better, m, value, ["setup", "sparsity"]).assign(vs=m) for m in others]
    return pd.concat(parts, ignore_index=True)


def _epochs(setup: str, method: str) -> str:
    """The legend's note on BiP's longer arm: its epochs (``R.long_arms``)."""
    epochs = R.long_arms().get(setup) if method == "bip-long" else None
    return f" ({epochs} epochs)" if epochs else ""


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    data = long(df)
    stats = mean_spread(data, ["setup", "method", "sparsity"], "acc")
    dense = mean_spread(data.drop_duplicates(["setup", "seed"]), ["setup"], "dense_acc")
    diffs = differences(data, "acc")
    if (data["method"] == "bip-long").any():  # BiP's longer arm - IMP, per seed
        diffs = pd.concat([diffs, differences(data, "acc", "bip-long", ("imp",)).assign(vs="bip-long")],
                          ignore_index=True)
    setups = list(dict.fromkeys(data["setup"]))
    cols = min(4, len(setups))
    rows = -(-len(setups) // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(4.6 * cols, 6.6 * rows), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2] * rows})
    ref = pd.read_csv(REFERENCE) if profile == "paper" else None
    for i, setup in enumerate(setups):
        ax, dax = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        for method in METHODS:
            s = stats[(stats["setup"] == setup) & (stats["method"] == method)].sort_values("sparsity")
            if len(s):
                band(ax, s["sparsity"], s, R.LABELS[method] + _epochs(setup, method), R.COLORS[method],
                     marker=MARKERS[method])
        d = dense[dense["setup"] == setup]["mean"].iloc[0]
        ax.axhline(d, color="k", ls="--", lw=1, label=f"dense ({d:.2f}%)")
        if ref is not None:
            for method, r in ref[ref["setup"] == setup].groupby("method"):
                ax.plot(r["sparsity"], r["accuracy"], MARKERS.get(method, "x"), mfc="none", color="k", ms=7,
                        label=f"paper {R.LABELS.get(method, method)}")
        grid = data[(data["setup"] == setup) & (data["method"] != "imp")]["sparsity"]
        for a in (ax, dax):
            sparsity_axis(a, grid)
        ax.set(title=setup, ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        dax.sharex(ax)
        paired_panel(dax, diffs[diffs["setup"] == setup], "sparsity", series="vs", colors=R.COLORS,
                     labels={**{m: f"BiP - {R.LABELS[m]}" for m in R.LABELS},
                             "bip-long": f"{R.LABELS['bip-long']} - IMP"}, ylabel="BiP - other, accuracy (pt)")
        dax.set_title(PAIRED_NOTE, fontsize=7)
    for k in range(len(setups), rows * cols):
        axes[2 * (k // cols), k % cols].axis("off")
        axes[2 * (k // cols) + 1, k % cols].axis("off")
    fig.suptitle("test accuracy vs sparsity (mean over seeds, min-max band); every point pruned from the dense "
                 "model except IMP's rounds; below each: BiP minus each method, per seed", fontsize=9)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES)]
