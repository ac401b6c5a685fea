"""The papers' own effect sizes, read from their published numbers in ``figures/reference`` (a - b, in points), for
the rows' "vs paper" column: whether the interval measured here excludes them. None where the paper states none
for the contrast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE = Path(__file__).resolve().parents[1] / "reference"


def _read(name: str) -> pd.DataFrame:
    path = REFERENCE / name
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def bip_fig6(a: str, b: str, at_least: float = 80.0) -> float | None:
    """Mean of a - b over BiP Fig. 6's published points where both are given, at sparsities >= ``at_least`` (all
    points when none is)."""
    ref = _read("bip_fig6.csv")
    if ref.empty:
        return None
    wide = ref.pivot_table(index=["setup", "sparsity"], columns="method", values="accuracy").reset_index()
    if not {a, b} <= set(wide.columns):
        return None
    wide = wide.dropna(subset=[a, b])
    high = wide[wide["sparsity"] >= at_least]
    diff = (high if len(high) else wide)
    return float((diff[a] - diff[b]).mean()) if len(diff) else None


def seqattn_table1(a: str, b: str, at_least: float = 0.9) -> float | None:
    """Mean of a - b over SA++ Table 1 (ImageNet) at sparsities >= ``at_least``."""
    ref = _read("seqattn_table1_imagenet.csv")
    if ref.empty:
        return None
    wide = ref.pivot_table(index=["block", "sparsity"], columns="method", values="value").reset_index()
    if not {a, b} <= set(wide.columns):
        return None
    wide = wide[wide["sparsity"] >= at_least].dropna(subset=[a, b])
    return float((wide[a] - wide[b]).mean()) if len(wide) else None


def seqattn_ablation(ablation: str, better: str, worse: str, sparsity: float | None = None) -> float | None:
    """better - worse among one ablation's published variants (at ``sparsity`` where given)."""
    ref = _read("seqattn_ablations.csv")
    if ref.empty:
        return None
    rows = ref[ref["ablation"] == ablation]
    if sparsity is not None:
        rows = rows[np.isclose(rows["sparsity"].astype(float), sparsity)]
    value = rows.set_index("variant")["value"]
    if better not in value or worse not in value or value[[better, worse]].isna().any():
        return None
    return float(value[better] - value[worse])


def ten_draws_sd() -> float | None:
    """The SD of the post-training paper's ten calibration draws (ResNet-50 ImageNet top-1)."""
    ref = _read("posttrain_ten_draws.csv")
    return float(ref["top1"].std(ddof=1)) if len(ref) > 1 else None


# the paper's sparsification-phase ablation: "costs ~0.9 pt on average" (seqattn_ablations.csv, as text only)
SPARSIFICATION_PHASE = 0.9
