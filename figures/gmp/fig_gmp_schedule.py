"""The GMP stages as the blog draws them: sparsity vs optimizer step and learning rate vs step.

The cubic target s_t at every mask update, the learning rate of each epoch and the three stages (shaded) are what
the run's config fixes: they are computed from it by gmp.prune's own schedule functions, with no run. Where the
profile's table measures a run (``MEASURED``), each layer's sparsity at every update is read from its log and drawn
beside the target:
tiny:  one run (seconds) with a global magnitude ranking, so that each layer follows its own path under the target;
small: the same on LeNet-300-100 / Fashion-MNIST at 95% (a run of fig-gmp-vs-oneshot's grid setup, seed 0);
paper: SparseML's ResNet-50 ImageNet recipe as SparseML runs it, per layer (GMPruningModifier), target 88%; with a
       per-layer ranking every layer's sparsity is the target at every update, so a run (90 ImageNet epochs,
       ~45 A100 GPU-hours) would only redraw the config: cut, the figure is drawn from the config alone.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from common.store import read_log
from figures.gmp import runs as gmp_runs
from figures.plot import save_figure, save_long
from gmp import prune

PAPER = "Neural Magic GMP blog, the sparsity-vs-step and LR-vs-step plots (stages marked)"
STAGE_COLORS = {"stabilize": "0.85", "prune": "#fde6c8", "finetune": "#d6ecd6"}
MEASURED = {"tiny": True, "small": True, "paper": False}
SCOPE = {"tiny": "global", "small": "global", "paper": "layer"}
ARMS, VALUES = ("step",), ("target_sparsity", "lr")  # the long CSV (and each layer's measured sparsity)
TARGET = {"tiny": 0.9, "small": 0.95, "paper": 0.88}


def schedule_config(profile: str) -> prune.Config:
    return gmp_runs.config(gmp_runs.SETUPS[profile][-1], target_sparsity=TARGET[profile], scope=SCOPE[profile],
                           seed=0)


def runs(profile: str):
    return [(gmp_runs.SCRIPT, schedule_config(profile))] if MEASURED[profile] else []


def steps_per_epoch(cfg: prune.Config) -> int:
    """Optimizer steps per epoch of ``cfg``'s training set (its size from figures/epoch_times.toml)."""
    from common.cost import load_times

    return math.ceil((load_times().samples(cfg.dataset) - cfg.val_size) / cfg.optim.batch_size)


def configured(cfg: prune.Config, steps: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the mask updates: step, target_sparsity, lr; the epochs: epoch, step at its end, stage, lr) of ``cfg``."""
    plan = prune.pruning_steps(cfg, steps)
    updates = [0] if cfg.method == "oneshot" else range(plan.t0, plan.t0 + plan.n * plan.dt + 1, plan.dt)
    prunes = pd.DataFrame({"step": list(updates)})
    prunes["target_sparsity"] = [cfg.target_sparsity if cfg.method == "oneshot" else
                                 plan.sparsity(t, cfg.initial_sparsity, cfg.target_sparsity) for t in prunes["step"]]
    prunes["lr"] = [prune.lr_of(cfg, t / steps) for t in prunes["step"]]
    epochs = pd.DataFrame({"epoch": range(1, cfg.epochs + 1)})
    epochs["step"] = epochs["epoch"] * steps
    epochs["stage"] = [prune.stage_at(cfg, e - 1)[0] for e in epochs["epoch"]]
    epochs["lr"] = [prune.lr_of(cfg, e - 1) for e in epochs["epoch"]]
    return prunes, epochs


def _shade(ax, epochs: pd.DataFrame, steps: int):
    for stage, g in epochs.groupby("stage", sort=False):
        ax.axvspan(g["step"].min() - steps, g["step"].max(), color=STAGE_COLORS[stage], alpha=0.6, lw=0, label=stage)


def measured(df: pd.DataFrame) -> pd.DataFrame:
    """Each layer's sparsity at every mask update, from the log of the run in ``df`` (none: an empty frame)."""
    if not len(df):
        return pd.DataFrame()
    log = pd.DataFrame(read_log(df.iloc[0]["run_dir"]))
    prunes = log[log.get("event") == "prune"]
    return pd.DataFrame(list(prunes["layer_sparsity"]), index=prunes["step"].astype(int)).add_prefix("sparsity:")


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    cfg = schedule_config(profile)
    steps = int(df.iloc[0]["steps_per_epoch"]) if len(df) else steps_per_epoch(cfg)
    prunes, epochs = configured(cfg, steps)
    layers = measured(df)
    end = int(epochs["step"].max())  # hold the last values to the end of training
    held = lambda values: pd.concat([values, values.iloc[-1:]], ignore_index=True)  # noqa: E731
    at = pd.concat([prunes["step"], pd.Series([end])], ignore_index=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    _shade(ax1, epochs, steps)
    ax1.step(at, 100 * held(prunes["target_sparsity"]), where="post", color="k", lw=2,
             label=f"cubic target s_t ({cfg.scope} ranking)")
    for i, name in enumerate(layers.columns):
        values = layers[name].reindex(prunes["step"]).reset_index(drop=True)
        ax1.step(at, 100 * held(values), where="post", lw=1, color=f"C{i}", label=name.replace("sparsity:", "layer "))
    source = "measured layers: a run's log" if len(layers) else "from the config (no run)"
    ax1.set(xlabel="optimizer step", ylabel="sparsity (%)",
            title=f"sparsity, {cfg.model} / {cfg.dataset}; {source}")
    ax1.legend(fontsize=7, loc="lower right")
    _shade(ax2, epochs, steps)
    lr = pd.DataFrame({"step": list(epochs["step"] - steps) + [end], "lr": list(epochs["lr"]) + [epochs["lr"].iloc[-1]]})
    ax2.step(lr["step"], lr["lr"], where="post", color="C3", lw=2, label="learning rate")
    ax2.set(xlabel="optimizer step", ylabel="learning rate", yscale="log", title="learning rate")
    ax2.legend(fontsize=7, loc="lower left")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    table = prunes.join(layers, on="step") if len(layers) else prunes
    # one row per mask update of the run (paper: of the config, no run)
    table = table.assign(seed=cfg.seed, run=df.iloc[0]["hash"] if len(df) else "")
    return [*save_figure(fig, base), *save_long(table, base, ARMS, VALUES, summary=False)]
