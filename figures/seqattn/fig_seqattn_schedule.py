"""Sparsity vs step: ACDC switches between dense and the target sparsity at once; SequentialAttention++ reaches it
gradually in each sparsification phase, s(t) = s (1 - e^{-ct}) / (1 - e^{-c}), then holds it in the sparse phase.

Read from the logs of real runs (the curves figure's seed-0 runs): the block sparsity the model computes with
(mask applied), 0 in dense phases.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from common.store import read_log
from figures.plot import save_figure, save_long
from figures.seqattn import runs as R
from figures.seqattn.fig_seqattn_curves import PHASE_COLORS, draw_phases, phases_of

PAPER = "SequentialAttention++ §3.2: sparsity schedule of ACDC (instant) vs SequentialAttention++ (exponential)"
ARMS, VALUES = ("method", "step"), ("sparsity",)  # the long CSV: one row per change of each run's sparsity


def runs(profile: str):
    return R.focus(profile, seeds=R.SEEDS[profile][:1])


def schedule(run_dir, total: int) -> pd.DataFrame:
    """(step, applied sparsity) at every change, held to the end of training."""
    points, current = [], 0.0
    for rec in read_log(run_dir):
        if rec.get("event") == "phase":
            current = 0.0 if rec["phase"] in ("dense", "sparsify") else current
            points.append((rec["step"], current))
        elif rec.get("event") == "prune":
            current = rec["sparsity"]
            points.append((rec["step"], current))
    points.append((total, current))
    return pd.DataFrame(points, columns=["step", "sparsity"]).drop_duplicates("step", keep="last")


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(10, 4.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]})
    tables = []
    for i, method in enumerate(("acdc", "sapp")):
        run = df[df["config.method"] == method].iloc[0]
        sched = schedule(run["run_dir"], int(run["total_steps"]))
        ax.step(sched["step"], 100 * sched["sparsity"], where="post", color=R.COLORS[method], lw=1.6,
                label=R.LABELS[method])
        draw_phases(strip, phases_of(run["run_dir"]), i, 0.8)
        tables.append(sched.assign(method=method, seed=run["config.seed"], run=run["hash"]))
    row = df.iloc[0]
    ax.axhline(100 * row["config.sparsity"], color="k", ls=":", lw=1, label="target s")
    ax.set(ylabel="block sparsity applied (%)",
           title=f"{R.setup_label(row)}, {int(row['config.block'])}x{int(row['config.block'])} blocks, "
                 f"c = {row['config.c']:g}, a mask update every {int(row['config.mask_every'])} step(s) of a "
                 f"sparsification phase")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    strip.set_yticks([0.4, 1.4], [R.LABELS["acdc"], "SA++"])
    strip.set_xlabel("optimizer step")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
    strip.legend(handles, list(PHASE_COLORS), fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.6))
    return [*save_figure(fig, base), *save_long(pd.concat(tables, ignore_index=True), base, ARMS, VALUES,
                                                summary=False)]
