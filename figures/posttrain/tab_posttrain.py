"""Tables 1-2: every method on every model: top-1, parameter reduction RP, FLOPs reduction RF, time, CPU speedup.

Reconstruction methods: mean and min-max over the calibration draws; L1 + retraining: one run (no calibration set).
Time: the method's wall time from the dense model to the pruned one (grouping, phases, removal; for L1 its
retraining). Speedup: dense / pruned CPU latency as the run measured it (batch 64, one thread); ``sparse_speedup_b64``
the same re-measured on each run's export (``figures.speed.exports``: a physically pruned model exports as the smaller
dense model, ``sparse_format``), so that every method's speed in the comparison figures is a measured number of what
``common.export`` writes. At the paper profile the published numbers from figures/reference/posttrain_tables.csv are
appended.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.plot import save_table
from figures.posttrain import runs as P
from figures.speed.exports import export_speed

PAPER = "post-training structured pruning, Tables 1-2 (method x model: top-1, RP, RF, calibration time)"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "posttrain_tables.csv"
ROUNDS, REPEATS = 3, 10  # the exports' latency: median of rounds of alternating medians


def runs(profile: str):
    return [P.row(setup, method=m, sample_seed=d) for setup in P.SETUPS[profile]
            for m in P.METHODS for d in P.draws(profile, m)]


def table(df: pd.DataFrame, exports: bool = False) -> pd.DataFrame:
    """One row per model and method; with ``exports`` also each run's export measured (``sparse_*`` columns)."""
    df = df.assign(setup=df.apply(P.setup_label, axis=1), top1=100 * df["test_acc"],
                   dense=100 * df["dense_test_acc"])
    speed = {}
    if exports:
        df = df.assign(**pd.DataFrame([export_speed(d, rounds=ROUNDS, repeats=REPEATS) for d in df["run_dir"]],
                                      index=df.index))
        speed = {"sparse_speedup_b64": ("sparse_speedup_b64", "median"),
                 "sparse_format": ("sparse_format", lambda v: "; ".join(dict.fromkeys(v)))}
    g = df.groupby(["setup", "config.method"], sort=False)
    out = g.agg(top1=("top1", "mean"), top1_min=("top1", "min"), top1_max=("top1", "max"), draws=("top1", "count"),
                dense_top1=("dense", "mean"), RP=("RP", "mean"), RF=("RF", "mean"), time_s=("method_time", "mean"),
                speedup=("speedup", "median"), **speed).reset_index()
    out["config.method"] = pd.Categorical(out["config.method"], P.METHODS, ordered=True)
    out = out.sort_values(["setup", "config.method"]).rename(columns={"setup": "model", "config.method": "method"})
    out["method"] = out["method"].astype(str).map(P.LABELS)
    return out


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    out = table(df, exports=True)
    if profile == "paper" and REFERENCE.exists():
        ref = pd.read_csv(REFERENCE).assign(method=lambda r: r["method"] + " (published)")
        out = pd.concat([out, ref], ignore_index=True)
    caption = (f"Post-training structured pruning ({profile} profile): top-1 (%) mean [min, max] over calibration "
               "draws, RP / RF = dense / pruned parameters / FLOPs, time = the method's wall time (s), "
               "speedup = dense / pruned CPU latency as the run measured it, sparse_speedup_b64 = the same re-measured "
               "on the run's export (batch 64, one thread; sparse_format: what the export computes with).")
    return save_table(out.round({"top1": 2, "top1_min": 2, "top1_max": 2, "dense_top1": 2, "RP": 2, "RF": 2,
                                 "time_s": 2, "speedup": 2, "sparse_speedup_b64": 2}), base, caption)
