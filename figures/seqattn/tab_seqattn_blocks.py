"""Block sparsification: method x block size x sparsity, mean over seeds (min-max in brackets).

Tiny: digits MLP, test accuracy. Paper: ResNet-50 ImageNet top-1 (Table 1, ACDC vs SA++) and Criteo eval loss
(Table 2, all four methods), each next to the paper's published number (``paper`` columns).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.plot import mean_spread, save_table
from figures.seqattn import runs as R

PAPER = "SequentialAttention++ Tables 1 (ResNet-50 ImageNet) and 2 (Criteo): methods x block size x sparsity"
REFERENCE = Path(__file__).resolve().parents[1] / "reference"


def runs(profile: str):
    return R.grid(profile)


def _reference(setup: str) -> pd.DataFrame | None:
    name = "seqattn_table2_criteo.csv" if "criteo" in setup else "seqattn_table1_imagenet.csv"
    path = REFERENCE / name
    return pd.read_csv(path) if path.exists() else None


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
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
            100 * part[(part["config.block"] == b) & (part["config.sparsity"] == s)]["sparsity"].mean()
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
    return save_table(table, base, caption)
