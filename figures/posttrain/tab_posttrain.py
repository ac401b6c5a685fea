"""Tables 1-2: every method on every model: top-1, parameter reduction RP, FLOPs reduction RF, time, CPU speedup.

Reconstruction methods: mean and min-max over the calibration draws; L1 + retraining: one run (no calibration set).
Time: the method's wall time from the dense model to the pruned one (grouping, phases, removal; for L1 its
retraining). Speedup: dense / pruned CPU latency as the run measured it (batch 64, one thread); ``sparse_speedup_b64``
the same re-measured on each run's export (``figures.speed.exports``: a physically pruned model exports as the smaller
dense model, ``sparse_format``), so that every method's speed in the comparison figures is a measured number of what
``common.export`` writes. At the paper profile the published numbers from figures/reference/posttrain_tables.csv are
appended. The table is ``tab-posttrain-summary.csv`` (and md / tex); the CSV holds every run (long, one row per run
with its calibration draw as ``seed``); the figure each link of the claimed order per draw.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.plot import PAIRED_NOTE, paired, paired_panel, save_figure, save_long, save_table
from figures.posttrain import runs as P
from figures.speed.exports import export_speed

PAPER = "post-training structured pruning, Tables 1-2 (method x model: top-1, RP, RF, calibration time)"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "posttrain_tables.csv"
ROUNDS, REPEATS = 3, 10  # the exports' latency: median of rounds of alternating medians
ARMS = ("model", "method")  # the long CSV: arms, seed (the calibration draw), values
VALUES = ("top1", "dense_top1", "RP", "RF", "time_s", "speedup", "sparse_speedup_b64")


def runs(profile: str):
    return [P.row(setup, method=m, sample_seed=d) for setup in P.SETUPS[profile]
            for m in P.METHODS for d in P.draws(profile, m)]


def long(df: pd.DataFrame, exports: bool = False) -> pd.DataFrame:
    """One row per run: model, method, seed (the calibration draw), top1 and dense_top1 (%), RP, RF, time_s, speedup;
    with ``exports`` also its export measured (``sparse_*`` columns); run (hash)."""
    out = pd.DataFrame({"model": df.apply(P.setup_label, axis=1), "method": df["config.method"],
                        "seed": df["config.sample_seed"], "top1": 100 * df["test_acc"],
                        "dense_top1": 100 * df["dense_test_acc"], "RP": df["RP"], "RF": df["RF"],
                        "time_s": df["method_time"], "speedup": df["speedup"], "run": df["hash"]})
    if exports:
        out = out.assign(**pd.DataFrame([export_speed(d, rounds=ROUNDS, repeats=REPEATS) for d in df["run_dir"]],
                                        index=df.index))
    return out


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model and method of ``long`` rows: top-1 mean [min, max] over the draws, the other means."""
    speed = {}
    if "sparse_speedup_b64" in runs:
        speed = {"sparse_speedup_b64": ("sparse_speedup_b64", "median"),
                 "sparse_format": ("sparse_format", lambda v: "; ".join(dict.fromkeys(v)))}
    g = runs.groupby(["model", "method"], sort=False)
    out = g.agg(top1=("top1", "mean"), top1_min=("top1", "min"), top1_max=("top1", "max"), draws=("top1", "count"),
                dense_top1=("dense_top1", "mean"), RP=("RP", "mean"), RF=("RF", "mean"), time_s=("time_s", "mean"),
                speedup=("speedup", "median"), **speed).reset_index()
    out["method"] = pd.Categorical(out["method"], P.METHODS, ordered=True)
    out = out.sort_values(["model", "method"])
    out["method"] = out["method"].astype(str).map(P.LABELS)
    return out


def table(df: pd.DataFrame, exports: bool = False) -> pd.DataFrame:
    """One row per model and method; with ``exports`` also each run's export measured (``sparse_*`` columns)."""
    return summarize(long(df, exports))


def draw_differences(runs: pd.DataFrame, base: Path) -> list[Path]:
    """Each link of the claimed order (ours > holistic > layer-wise > no reconstruction), better minus worse per
    calibration draw (the same samples), one panel per model."""
    chain = [m for m in ("ours", "holistic", "layerwise", "none") if m in set(runs["method"])]
    links = [f"{P.LABELS[a].split(' (')[0]} - {P.LABELS[b].split(' (')[0]}" for a, b in zip(chain, chain[1:])]
    models = list(dict.fromkeys(runs["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(max(5.0, 1.6 * len(links)) * len(models), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = runs[runs["model"] == model]
        diffs = pd.concat([paired(part, "method", a, b, "top1", []).assign(pos=i)
                           for i, (a, b) in enumerate(zip(chain, chain[1:]))], ignore_index=True)
        paired_panel(ax, diffs, "pos", line=False, ylabel="top-1, better minus worse (pt; claim: > 0)")
        ax.set_xticks(range(len(links)), links, rotation=15, ha="right", fontsize=7)
        ax.set_title(f"{model}\n{PAIRED_NOTE.replace('seed', 'calibration draw')}", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, base)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    runs_ = long(df, exports=True)
    out = summarize(runs_)
    if profile == "paper" and REFERENCE.exists():
        ref = pd.read_csv(REFERENCE).assign(method=lambda r: r["method"] + " (published)")
        out = pd.concat([out, ref], ignore_index=True)
    caption = (f"Post-training structured pruning ({profile} profile): top-1 (%) mean [min, max] over calibration "
               "draws, RP / RF = dense / pruned parameters / FLOPs, time = the method's wall time (s), "
               "speedup = dense / pruned CPU latency as the run measured it, sparse_speedup_b64 = the same re-measured "
               "on the run's export (batch 64, one thread; sparse_format: what the export computes with).")
    table_ = out.round({"top1": 2, "top1_min": 2, "top1_max": 2, "dense_top1": 2, "RP": 2, "RF": 2, "time_s": 2,
                        "speedup": 2, "sparse_speedup_b64": 2})
    return [*save_table(table_, base, caption, csv_suffix="-summary"),
            *save_long(runs_, base, ARMS, VALUES, summary=False), *draw_differences(runs_, base)]
