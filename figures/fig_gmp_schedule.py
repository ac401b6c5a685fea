"""The GMP stages as the blog draws them: sparsity vs optimizer step and learning rate vs step.

Read from a real GMP run's log (global magnitude ranking, so that each layer's sparsity follows its own path under
the cubic target); the three stages are shaded.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from common.store import read_log
from figures import gmp_runs
from figures.plot import save_csv, save_figure

PAPER = "Neural Magic GMP blog, the sparsity-vs-step and LR-vs-step plots (stages marked)"
STAGE_COLORS = {"stabilize": "0.85", "prune": "#fde6c8", "finetune": "#d6ecd6"}


def runs(profile: str):
    return [(gmp_runs.SCRIPT, gmp_runs.config(setup, target_sparsity=0.9, scope="global", seed=0))
            for setup in gmp_runs.SETUPS[profile][-1:]]


def _shade(ax, epochs: pd.DataFrame):
    for stage, g in epochs.groupby("stage", sort=False):
        ax.axvspan(g["step"].min() - g["steps_in_epoch"].iloc[0], g["step"].max(), color=STAGE_COLORS[stage],
                   alpha=0.6, lw=0, label=stage)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    row = df.iloc[0]
    log = pd.DataFrame(read_log(row["run_dir"]))
    prunes = log[log.get("event") == "prune"].copy()
    epochs = log[log["epoch"].notna()].copy()
    epochs["steps_in_epoch"] = int(row["steps_per_epoch"])
    layers = pd.DataFrame(list(prunes["layer_sparsity"]), index=prunes.index)
    end = int(epochs["step"].max())  # hold the last values to the end of training
    steps = pd.concat([prunes["step"], pd.Series([end])], ignore_index=True)
    held = lambda values: pd.concat([values, values.iloc[-1:]], ignore_index=True)  # noqa: E731
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    _shade(ax1, epochs)
    ax1.step(steps, 100 * held(prunes["target_sparsity"]), where="post", color="k", lw=2,
             label="cubic target s_t (all prunable)")
    for i, name in enumerate(layers.columns):
        ax1.step(steps, 100 * held(layers[name]), where="post", lw=1, color=f"C{i}", label=f"layer {name}")
    ax1.set(xlabel="optimizer step", ylabel="sparsity (%)", title=f"sparsity, {gmp_runs.setup_label(row)}")
    ax1.legend(fontsize=7, loc="lower right")
    _shade(ax2, epochs)
    lr = pd.concat([pd.DataFrame({"step": epochs["step"] - epochs["steps_in_epoch"], "lr": epochs["lr"]}),
                    pd.DataFrame({"step": [end], "lr": [epochs["lr"].iloc[-1]]})])
    ax2.step(lr["step"], lr["lr"], where="post", color="C3", lw=2, label="learning rate")
    ax2.set(xlabel="optimizer step", ylabel="learning rate", yscale="log", title="learning rate")
    ax2.legend(fontsize=7, loc="lower left")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    table = prunes[["step", "target_sparsity", "sparsity", "lr"]].join(layers.add_prefix("sparsity:"))
    return [*save_figure(fig, base), save_csv(table, base)]
