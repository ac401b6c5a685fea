"""Tables 1-2: every method on every model: top-1, parameter reduction RP, FLOPs reduction RF, time, CPU speedup.

Reconstruction methods: mean and min-max over the calibration draws; L1 + retraining: one run (no calibration set).
Time: the method's wall time from the dense model to the pruned one (grouping, phases, removal; for L1 its
retraining). At the paper profile the published numbers from figures/reference/posttrain_tables.csv are appended.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.plot import save_table
from figures.posttrain import runs as P

PAPER = "post-training structured pruning, Tables 1-2 (method x model: top-1, RP, RF, calibration time)"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "posttrain_tables.csv"


def runs(profile: str):
    return [P.row(setup, method=m, sample_seed=d) for setup in P.SETUPS[profile]
            for m in P.METHODS for d in P.draws(profile, m)]


def table(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(setup=df.apply(P.setup_label, axis=1), top1=100 * df["test_acc"],
                   dense=100 * df["dense_test_acc"])
    g = df.groupby(["setup", "config.method"], sort=False)
    out = g.agg(top1=("top1", "mean"), top1_min=("top1", "min"), top1_max=("top1", "max"), draws=("top1", "count"),
                dense_top1=("dense", "mean"), RP=("RP", "mean"), RF=("RF", "mean"), time_s=("method_time", "mean"),
                speedup=("speedup", "median")).reset_index()
    out["config.method"] = pd.Categorical(out["config.method"], P.METHODS, ordered=True)
    out = out.sort_values(["setup", "config.method"]).rename(columns={"setup": "model", "config.method": "method"})
    out["method"] = out["method"].astype(str).map(P.LABELS)
    return out


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    out = table(df)
    if profile == "paper" and REFERENCE.exists():
        ref = pd.read_csv(REFERENCE).assign(method=lambda r: r["method"] + " (published)")
        out = pd.concat([out, ref], ignore_index=True)
    caption = (f"Post-training structured pruning ({profile} profile): top-1 (%) mean [min, max] over calibration "
               "draws, RP / RF = dense / pruned parameters / FLOPs, time = the method's wall time (s), "
               "speedup = dense / pruned CPU latency.")
    return save_table(out.round({"top1": 2, "top1_min": 2, "top1_max": 2, "dense_top1": 2, "RP": 2, "RF": 2,
                                 "time_s": 2, "speedup": 2}), base, caption)
