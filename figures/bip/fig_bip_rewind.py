"""BiP paper, Fig. 9: BiP without retraining ("no retrain") vs its masks retrained from rewinding points at
5/10/50/75/100% of the dense training, at three sparsities (20%, 67.2%, 86.6%). At the paper profile the paper's
"N/A" (no retraining) accuracies are overlaid as black stars. Below: BiP without retraining minus each retrained
mask, per seed (the same seed's BiP mask), with the mean's 95% t-interval.

Where the profile table has one (``R.REWIND_FULL``), one rewinding point is also retrained for the dense model's full
epochs (``retrain_epochs`` = the dense epochs, not the method's E): its own arm, labelled e.g. "5%, 30 epochs".
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures.bip import runs as R
from figures.plot import PAIRED_NOTE, mean_spread, paired, paired_panel, save_figure, save_long

PAPER = "BiP (Zhang et al. 2022) Fig. 9: BiP vs retraining its masks from rewinding points"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "bip_fig9_rewind.csv"
ARMS, VALUES = ("setup", "sparsity", "rewind"), ("acc",)  # the long CSV: arms, seed, values (and rewind_epoch)


def rewind_epoch(fraction: float, cfg) -> int:
    """The dense-training epoch at ``fraction`` of its length (5% of 30 epochs: epoch 2)."""
    return int(round(fraction * cfg.pretrain.epochs))


def runs(profile: str):
    rows = []
    full = R.REWIND_FULL.get(profile)
    for setup in R.setups(profile, R.REWIND_SETUPS[profile]).values():
        for s in R.REWIND_SPARSITIES[profile]:
            for seed in R.SEEDS:
                rows.append(("bip.prune", R.prune_config(setup, target_sparsity=s, seed=seed)))
                cfg = R.retrain_config(setup, target_sparsity=s, seed=seed)
                for f in R.REWIND_FRACTIONS:
                    rows.append(("bip.retrain", R.retrain_config(setup, target_sparsity=s, seed=seed,
                                                                 rewind_epoch=rewind_epoch(f, cfg))))
                if full is not None:  # the same rewinding point retrained for the dense training's epochs
                    rows.append(("bip.retrain", R.retrain_config(setup, target_sparsity=s, seed=seed,
                                                                 rewind_epoch=rewind_epoch(full, cfg),
                                                                 retrain_epochs=cfg.pretrain.epochs)))
    return rows


def labels() -> list[str]:
    """The values of ``rewind``: none, then each rewinding fraction of ``R.REWIND_FRACTIONS``."""
    return ["no retrain"] + [f"{100 * f:.0f}%" for f in R.REWIND_FRACTIONS]


def full_label(fraction_label: str, epochs: int) -> str:
    """The ``rewind`` value of a rewinding point retrained for ``epochs`` other than the method's E (the dense
    length, ``R.REWIND_FULL``): e.g. "5%, 30 epochs"."""
    return f"{fraction_label}, {int(epochs)} epochs"


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """``R.tidy`` rows with ``rewind`` (one of ``labels()``, or ``full_label`` for a mask retrained for other epochs
    than the method's E) and ``rewind_epoch`` (NaN: BiP without retraining)."""
    df = R.tidy(df.assign(**{"config.method": "bip"}))
    epochs = df["config.pretrain.epochs"]
    rewind = df["config.rewind_epoch"] if "config.rewind_epoch" in df else pd.Series(np.nan, index=df.index)
    retrain = df["config.retrain_epochs"] if "config.retrain_epochs" in df else pd.Series(np.nan, index=df.index)
    nominal = {(int(round(f * e)), e): lab for e in set(epochs) for f, lab in zip(R.REWIND_FRACTIONS, labels()[1:])}

    def label(r, e, k, own):
        if pd.isna(r):
            return "no retrain"
        return nominal[(int(r), e)] if pd.isna(k) or k == own else full_label(nominal[(int(r), e)], k)

    return df.assign(rewind=[label(r, e, k, own) for r, e, k, own in zip(rewind, epochs, retrain, df["config.epochs"])],
                     rewind_epoch=rewind)


def arms(df: pd.DataFrame) -> list[str]:
    """The ``rewind`` values of ``tidy`` rows in drawing order: ``labels()``, then the longer-retrained arms."""
    names = labels()
    return names + sorted(set(df["rewind"]) - set(names))


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = tidy(df)
    names = arms(df)
    data = pd.DataFrame({"setup": df["setup"], "sparsity": df["x"], "rewind": df["rewind"], "seed": df["config.seed"],
                         "acc": df["acc"], "rewind_epoch": df["rewind_epoch"], "run": df["hash"]})
    stats = mean_spread(df, ["setup", "x", "rewind"], "acc")
    stats = stats.sort_values(["setup", "x", "rewind"], key=lambda c: c.map(names.index) if c.name == "rewind" else c)
    setups = list(dict.fromkeys(df["setup"]))
    fig, axes = plt.subplots(2, len(setups), figsize=(5.2 * len(setups), 6.6), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    ref = pd.read_csv(REFERENCE) if profile == "paper" else None
    width = 0.8 / len(names)
    plain = labels()
    colors = {lab: "C3" if lab == "no retrain" else plt.cm.Blues(0.3 + 0.7 * j / len(plain))
              for j, lab in enumerate(plain)}
    colors.update({lab: f"C{4 + k}" for k, lab in enumerate(names[len(plain):])})  # retrained for the dense length
    for ax, dax, setup in zip(axes[0], axes[1], setups):
        s = stats[stats["setup"] == setup]
        xs = sorted(s["x"].unique())
        for j, lab in enumerate(names):
            r = s[s["rewind"] == lab].set_index("x").reindex(xs)
            pos = np.arange(len(xs)) + (j - (len(names) - 1) / 2) * width
            ax.bar(pos, r["mean"], width, yerr=[r["mean"] - r["min"], r["max"] - r["mean"]], capsize=2,
                   label="BiP, no retraining" if lab == "no retrain" else f"rewind {lab}"
                   + (" (dense length)" if lab not in plain else ""), color=colors[lab])
        if ref is not None:
            r = ref[ref["setup"] == setup]
            for i, x in enumerate(xs):
                hit = r[(r["sparsity"] - x).abs() < 0.1]
                if len(hit):
                    ax.plot(i - (len(names) - 1) / 2 * width, hit["accuracy"].iloc[0], "k*", ms=8,
                            label="paper N/A" if i == 0 else None)
        lo = s["min"].min()
        ax.set_ylim(max(0, lo - 0.3 * (s["max"].max() - lo) - 0.5), s["max"].max() + 0.5)
        ax.set(title=setup, ylabel="test accuracy (%)")
        ax.grid(alpha=0.3, axis="y")
        part = data[data["setup"] == setup]
        diffs = pd.concat([paired(part, "rewind", "no retrain", lab, "acc", ["sparsity"]).assign(vs=lab)
                           for lab in names[1:]], ignore_index=True)
        paired_panel(dax, diffs.assign(pos=diffs["sparsity"].map(xs.index)), "pos", series="vs", colors=colors,
                     line=False,
                     labels={lab: f"- rewind {lab}" for lab in names[1:]},
                     ylabel="no retraining - retrained, accuracy (pt)")
        dax.set_xticks(range(len(xs)), [f"{x:g}%" for x in xs])
        dax.set(xlabel="sparsity")
        dax.set_title(PAIRED_NOTE, fontsize=7)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=7, frameon=False)
    fig.suptitle("BiP without retraining vs its masks retrained from rewinding points (% of the dense training); "
                 "mean over seeds, min-max bars; below: no retraining minus each rewinding point, per seed", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES)]
