"""BiP paper, Fig. 9: BiP without retraining ("no retrain") vs its masks retrained from rewinding points at
5/10/50/75/100% of the dense training, at three sparsities (20%, 67.2%, 86.6%). At the paper profile the paper's
"N/A" (no retraining) accuracies are overlaid as black stars.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures.bip import runs as R
from figures.plot import mean_spread, save_csv, save_figure

PAPER = "BiP (Zhang et al. 2022) Fig. 9: BiP vs retraining its masks from rewinding points"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "bip_fig9_rewind.csv"


def rewind_epoch(fraction: float, cfg) -> int:
    """The dense-training epoch at ``fraction`` of its length (5% of 30 epochs: epoch 2)."""
    return int(round(fraction * cfg.pretrain.epochs))


def runs(profile: str):
    rows = []
    for setup in R.setups(profile, R.REWIND_SETUPS[profile]).values():
        for s in R.REWIND_SPARSITIES[profile]:
            for seed in R.SEEDS:
                rows.append(("bip.prune", R.prune_config(setup, target_sparsity=s, seed=seed)))
                for f in R.REWIND_FRACTIONS:
                    cfg = R.retrain_config(setup, target_sparsity=s, seed=seed)
                    rows.append(("bip.retrain", R.retrain_config(setup, target_sparsity=s, seed=seed,
                                                                 rewind_epoch=rewind_epoch(f, cfg))))
    return rows


def labels() -> list[str]:
    """The values of ``rewind``: none, then each rewinding fraction of ``R.REWIND_FRACTIONS``."""
    return ["no retrain"] + [f"{100 * f:.0f}%" for f in R.REWIND_FRACTIONS]


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """``R.tidy`` rows with ``rewind`` (one of ``labels()``) and ``rewind_epoch`` (NaN: BiP without retraining)."""
    df = R.tidy(df.assign(**{"config.method": "bip"}))
    epochs = df["config.pretrain.epochs"]
    rewind = df["config.rewind_epoch"] if "config.rewind_epoch" in df else pd.Series(np.nan, index=df.index)
    nominal = {(int(round(f * e)), e): lab for e in set(epochs) for f, lab in zip(R.REWIND_FRACTIONS, labels()[1:])}
    return df.assign(rewind=["no retrain" if pd.isna(r) else nominal[(int(r), e)] for r, e in zip(rewind, epochs)],
                     rewind_epoch=rewind)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df, names = tidy(df), labels()
    stats = mean_spread(df, ["setup", "x", "rewind"], "acc")
    stats = stats.merge(df.groupby(["setup", "x", "rewind"], dropna=False)["rewind_epoch"].first().reset_index(),
                        on=["setup", "x", "rewind"])
    stats = stats.sort_values(["setup", "x", "rewind"], key=lambda c: c.map(names.index) if c.name == "rewind" else c)
    setups = list(dict.fromkeys(df["setup"]))
    fig, axes = plt.subplots(1, len(setups), figsize=(5.2 * len(setups), 3.8), squeeze=False)
    ref = pd.read_csv(REFERENCE) if profile == "paper" else None
    width = 0.8 / len(names)
    for ax, setup in zip(axes[0], setups):
        s = stats[stats["setup"] == setup]
        xs = sorted(s["x"].unique())
        for j, lab in enumerate(names):
            r = s[s["rewind"] == lab].set_index("x").reindex(xs)
            pos = np.arange(len(xs)) + (j - (len(names) - 1) / 2) * width
            ax.bar(pos, r["mean"], width, yerr=[r["mean"] - r["min"], r["max"] - r["mean"]], capsize=2,
                   label="BiP, no retraining" if lab == "no retrain" else f"rewind {lab}",
                   color="C3" if lab == "no retrain" else plt.cm.Blues(0.3 + 0.7 * j / len(names)))
        if ref is not None:
            r = ref[ref["setup"] == setup]
            for i, x in enumerate(xs):
                hit = r[(r["sparsity"] - x).abs() < 0.1]
                if len(hit):
                    ax.plot(i - (len(names) - 1) / 2 * width, hit["accuracy"].iloc[0], "k*", ms=8,
                            label="paper N/A" if i == 0 else None)
        lo = s["min"].min()
        ax.set_ylim(max(0, lo - 0.3 * (s["max"].max() - lo) - 0.5), s["max"].max() + 0.5)
        ax.set_xticks(range(len(xs)), [f"{x:g}%" for x in xs])
        ax.set(title=setup, xlabel="sparsity", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3, axis="y")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=7, frameon=False)
    fig.suptitle("BiP without retraining vs its masks retrained from rewinding points (% of the dense training); "
                 "mean over seeds, min-max bars", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    csv = stats.rename(columns={"x": "sparsity", "mean": "acc_mean", "std": "acc_std", "min": "acc_min",
                                "max": "acc_max", "count": "seeds"})
    return [*save_figure(fig, base), save_csv(csv, base)]
