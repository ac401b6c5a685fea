"""Training accuracy vs step, ACDC vs SequentialAttention++, with each method's phases drawn underneath (paper Fig. 3).

The training accuracy is measured (eval mode, un-augmented) on a fixed subset of the training set -- the same
seqattn.prune.CURVE_SAMPLES (10,000) samples, drawn once, at every point of every run; all of them at the tiny
profile, whose digits have fewer -- every few steps of the focus runs (block 4, 90% at the tiny profile; at the paper
profile the 32x32 / 90% runs of Table 1 themselves, which log the curve every 500 steps, not extra runs); curves are
the mean over seeds with the min-max range shaded. Dips are mask updates; the
peaks of ACDC's dense phases are dense models (not comparable with the final sparse model, as the authors note).
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from common.store import read_log
from figures.plot import save_figure, save_long
from figures.seqattn import runs as R

PAPER = "SequentialAttention++ Fig. 3: training accuracy vs step, ACDC vs SequentialAttention++ (phases shaded)"
PHASE_COLORS = {"dense": "0.93", "sparsify": "#fdd9a8", "sparse": "#cfe8cf"}
ARMS, VALUES = ("method", "step"), ("train_acc",)  # the long CSV: arms, seed, values (and the phase)


def runs(profile: str):
    return R.focus(profile)


def phases_of(run_dir) -> list[dict]:
    return json.loads((Path(run_dir) / "result.json").read_text())["phases"]


def curves(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, run in df.iterrows():
        for rec in read_log(run["run_dir"]):
            if rec.get("event") == "curve":
                rows.append({"method": run["config.method"], "step": rec["step"], "seed": run["config.seed"],
                             "train_acc": 100 * rec["train_acc"], "phase": rec["phase"], "run": run["hash"]})
    return pd.DataFrame(rows)


def draw_phases(ax, phases, y, height):
    for p in phases:
        ax.broken_barh([(p["start"], p["end"] - p["start"])], (y, height), color=PHASE_COLORS[p["kind"]],
                       edgecolor="0.6", lw=0.3)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    data = curves(df)
    stats = data.groupby(["method", "step"])["train_acc"].agg(["mean", "min", "max"]).reset_index()
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [4, 1]})
    sapp_phases = phases_of(df[df["config.method"] == "sapp"]["run_dir"].iloc[0])
    for p in sapp_phases:
        if p["kind"] != "dense":
            ax.axvspan(p["start"], p["end"], color=PHASE_COLORS[p["kind"]], alpha=0.5, lw=0)
    for method in ("acdc", "sapp"):
        s = stats[stats["method"] == method]
        ax.plot(s["step"], s["mean"], color=R.COLORS[method], lw=1.3, label=R.LABELS[method])
        ax.fill_between(s["step"], s["min"], s["max"], color=R.COLORS[method], alpha=0.2, lw=0)
    row = df.iloc[0]
    block = int(row["config.block"])
    ax.set(ylabel="training accuracy (%)", title=f"{R.setup_label(row)}, {block}x{block} "
           f"blocks, {100 * row['config.sparsity']:g}% sparsity; background: SA++ phases; min-max over "
           f"{data['seed'].nunique()} seeds")
    lo = stats["min"].quantile(0.02)
    ax.set_ylim(max(0, lo - 2), 100.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    for i, method in enumerate(("acdc", "sapp")):
        draw_phases(strip, phases_of(df[df["config.method"] == method]["run_dir"].iloc[0]), i, 0.8)
    strip.set_yticks([0.4, 1.4], [R.LABELS["acdc"], "SA++"])
    strip.set_xlabel("optimizer step")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
    strip.legend(handles, list(PHASE_COLORS), fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.6))
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES)]
