"""Block sparsification: method x block size x sparsity, mean over seeds (min-max in brackets).

Tiny: digits MLP, test accuracy. Paper: ResNet-50 ImageNet top-1 (Table 1, ACDC vs SA++) and Criteo eval loss
(Table 2, all four methods), each next to the paper's published number (``paper`` columns). The table is
``tab-seqattn-blocks-summary.csv`` (and md / tex); the CSV holds every run (long, one row per run with its seed),
and the figure ``tab-seqattn-blocks.png`` SA++ minus each other method per seed, with the mean's 95% t-interval.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.plot import (PAIRED_NOTE, mean_spread, paired, paired_panel, save_figure, save_long, save_table,
                          sparsity_axis)
from figures.seqattn import runs as R

PAPER = "SequentialAttention++ Tables 1 (ResNet-50 ImageNet) and 2 (Criteo): methods x block size x sparsity"
ARMS, VALUES = ("setup", "method", "block", "sparsity"), ("accuracy", "test_loss", "realized_sparsity")  # long CSV
REFERENCE = Path(__file__).resolve().parents[1] / "reference"


def runs(profile: str):
    return R.grid(profile)


def _reference(setup: str) -> pd.DataFrame | None:
    name = "seqattn_table2_criteo.csv" if "criteo" in setup else "seqattn_table1_imagenet.csv"
    path = REFERENCE / name
    return pd.read_csv(path) if path.exists() else None


def model_sparsity(df: pd.DataFrame) -> pd.Series:
    """The realized sparsity of every Conv2d / Linear weight of each run: its result's model_sparsity (results stored
    before that was reported hold it as sparsity, which is now the sparsity of the block-sparsified layers alone)."""
    return df["model_sparsity"].fillna(df["sparsity"]) if "model_sparsity" in df else df["sparsity"]


def long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: setup, method, block, sparsity (the target), seed, accuracy (%; NaN for Criteo), test_loss,
    realized_sparsity (%), run."""
    df = R.with_accuracy(df)
    return pd.DataFrame({"setup": df.apply(R.setup_label, axis=1), "method": df["config.method"],
                         "block": df["config.block"], "sparsity": df["config.sparsity"], "seed": df["config.seed"],
                         "accuracy": df["accuracy"], "test_loss": df.get("test_loss", float("nan")),
                         "realized_sparsity": 100 * model_sparsity(df), "run": df["hash"]})


def draw_differences(data: pd.DataFrame, base: Path) -> list[Path]:
    """SA++ minus every other method, per seed, against the sparsity: one row of panels per setup, one panel per
    block size."""
    setups = list(dict.fromkeys(data["setup"]))
    cols = max(data[data["setup"] == s]["block"].nunique() for s in setups)
    fig, axes = plt.subplots(len(setups), cols, figsize=(4.2 * cols, 3.6 * len(setups)), squeeze=False)
    for row, setup in zip(axes, setups):
        part = data[data["setup"] == setup]
        value = "test_loss" if part["accuracy"].isna().all() else "accuracy"
        others = [m for m in R.METHODS if m != "sapp" and m in set(part["method"])]
        diffs = pd.concat([paired(part, "method", "sapp", m, value, ["block", "sparsity"]).assign(vs=m)
                           for m in others] or [pd.DataFrame(columns=["block", "sparsity", "vs"])],
                          ignore_index=True)  # a setup where SA++ ran alone has no differences to draw
        blocks = sorted(part["block"].unique())
        for ax, b in zip(row, blocks):
            sparsity_axis(ax, 100 * part["sparsity"], "target block sparsity")
            d = diffs[diffs["block"] == b]
            paired_panel(ax, d.assign(x=100 * d["sparsity"]), "x", series="vs", colors=R.COLORS,
                         labels={m: f"SA++ - {R.LABELS[m]}" for m in others},
                         ylabel=f"SA++ - other, {value} ({'claim: > 0' if value == 'accuracy' else 'claim: < 0'})")
            ax.set_title(f"{setup}, {b}x{b} blocks", fontsize=9)
        for ax in row[len(blocks):]:
            ax.axis("off")
    fig.suptitle(f"SequentialAttention++ minus each block method, per seed; {PAIRED_NOTE}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, base)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    data = long(df)
    df = R.with_accuracy(df).assign(setup=df.apply(R.setup_label, axis=1))
    tables = []
    for setup, part in df.groupby("setup", sort=False):
        value, label, _ = R.metric(part)
        stats = mean_spread(part, ["config.method", "config.block", "config.sparsity"], value)
        digits = 2 if value == "accuracy" else 4
        stats["cell"] = [f"{m:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]" if n > 1 else f"{m:.{digits}f}"
                         for m, lo, hi, n in zip(stats["mean"], stats["min"], stats["max"], stats["count"])]
        wide = stats.pivot_table(index=["config.block", "config.sparsity"], columns="config.method", values="cell",
                                 aggfunc="first").reset_index()
        methods = [m for m in R.METHODS if m in wide.columns]
        wide = wide[["config.block", "config.sparsity", *methods]].rename(columns=R.LABELS)
        wide.insert(0, "setup", f"{setup} ({label})")
        wide["realized sparsity (%)"] = [
            100 * model_sparsity(part)[(part["config.block"] == b) & (part["config.sparsity"] == s)].mean()
            for b, s in zip(wide["config.block"], wide["config.sparsity"])]
        ref = _reference(setup) if profile == "paper" else None
        if ref is not None:
            for method in methods:
                sel = ref[ref["method"] == method].set_index(["block", "sparsity"])["value"]
                wide[f"paper {R.LABELS[method]}"] = [sel.get((b, s), float("nan"))
                                                     for b, s in zip(wide["config.block"], wide["config.sparsity"])]
        tables.append(wide.rename(columns={"config.block": "block", "config.sparsity": "target sparsity"}))
    table = pd.concat(tables, ignore_index=True)
    caption = (f"Block sparsification, {profile} profile: mean over seeds [min-max]; realized sparsity counts every "
               f"prunable weight (layers with < min_blocks blocks and the classifier stay dense).")
    return [*save_table(table, base, caption, csv_suffix="-summary"),
            *save_long(data, base, ARMS, VALUES, summary=False), *draw_differences(data, base)]
