"""One-shot block pruning: softmax-attention scores minus magnitude scores, accuracy difference per block size x
sparsity (paper Fig. 2a), mean over seeds; the middle panel shows both accuracies, the right one attention minus
magnitude per seed (the same dense recipe, seed and data order), with the mean's 95% t-interval.

attention: a dense model trained with W (.) A (A = n * softmax(L) per layer, one logit per block), the blocks with the
lowest A removed; magnitude: the plain dense model (same recipe, seed, data order), the blocks with the smallest
Frobenius norm removed. Both fine-tuned briefly with the mask frozen (seqattn.oneshot).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from common import config as C
from figures.plot import PAIRED_NOTE, paired, paired_panel, save_figure, save_long, sparsity_axis
from figures.seqattn import runs as R
from seqattn import oneshot

PAPER = "SequentialAttention++ Fig. 2a: one-shot block pruning, softmax attention vs magnitude scores"
ARMS, VALUES = ("setup", "score", "block", "sparsity"), ("accuracy",)  # the long CSV: arms, seed, values
SETUPS = {
    "tiny": ({"dataset": "digits", "model": "mlp"}, (1, 2, 4, 8), (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)),
    # small: one fine-tuning epoch (469 steps) per sparsity
    "small": ({"dataset": "fashionmnist", "model": "mlp", "finetune.epochs": 1}, (1, 4, 16),
              (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)),
    # ours: the dense ResNet-50 recipe of common.pretrain's imagenet preset, one fine-tuning epoch at lr 0.01
    "paper": ({"dataset": "imagenet", "model": "resnet50", "exclude": (), "pretrain.epochs": 90, "pretrain.lr": 0.1,
               "pretrain.weight_decay": 1e-4, "pretrain.batch_size": 256, "pretrain.schedule": "multistep",
               "pretrain.milestones": (30.0, 60.0, 80.0), "finetune.epochs": 1, "finetune.batch_size": 256,
               "finetune.weight_decay": 1e-4}, (8, 16, 32, 64), (0.5, 0.7, 0.8, 0.9, 0.95)),
}


def runs(profile: str):
    setup, blocks, sparsities = SETUPS[profile]
    return [(oneshot.SCRIPT, C.build(oneshot.Config, score=score, block=b, seed=seed, sparsities=sparsities, **setup))
            for score in ("attention", "magnitude") for b in blocks for seed in R.SEEDS[profile]]


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """collect() rows (one per run and sparsity) with ``accuracy`` (%) and an integer ``config.block``."""
    return R.with_accuracy(df).assign(**{"config.block": df["config.block"].astype(int)})


def score_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy mean, min, max and count over the seeds per score x block x sparsity (``df``: ``tidy`` rows)."""
    return (df.groupby(["config.score", "config.block", "sparsity"])["accuracy"]
            .agg(["mean", "min", "max", "count"]).reset_index())


def long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and sparsity (``df``: ``tidy`` rows): setup, score, block, sparsity, seed, accuracy, run."""
    return pd.DataFrame({"setup": df.apply(R.setup_label, axis=1), "score": df["config.score"],
                         "block": df["config.block"], "sparsity": df["sparsity"], "seed": df["config.seed"],
                         "accuracy": df["accuracy"], "run": df["hash"]})


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = tidy(df)
    data = long(df)
    stats = score_stats(df)
    wide = stats.pivot_table(index=["config.block", "sparsity"], columns="config.score", values="mean").reset_index()
    wide["difference"] = wide["attention"] - wide["magnitude"]
    blocks = sorted(int(b) for b in wide["config.block"].unique())
    sparsities = sorted(wide["sparsity"].unique())
    grid = np.array([[wide[(wide["config.block"] == b) & (wide["sparsity"] == s)]["difference"].iloc[0]
                      for s in sparsities] for b in blocks])
    fig, (ax, ax2, dax) = plt.subplots(1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    lim = max(1e-9, np.nanmax(np.abs(grid)))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(blocks)):
        for j in range(len(sparsities)):
            ax.text(j, i, f"{grid[i, j]:+.1f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(sparsities)), [f"{100 * s:g}%" for s in sparsities])
    ax.set_yticks(range(len(blocks)), [f"{b}x{b}" for b in blocks])
    ax.set(xlabel="sparsity", ylabel="block size",
           title=f"attention - magnitude, test accuracy (pt)\n{R.setup_label(df.iloc[0])}, mean of "
                 f"{int(stats['count'].max())} seeds")
    fig.colorbar(im, ax=ax, label="accuracy difference (pt); blue: attention better")
    for k, b in enumerate(blocks):
        for score, ls in (("attention", "-"), ("magnitude", "--")):
            s = stats[(stats["config.score"] == score) & (stats["config.block"] == b)]
            ax2.plot(100 * s["sparsity"], s["mean"], ls, marker="o", ms=3, color=f"C{k}",
                     label=f"{b}x{b} {score}")
    for a in (ax2, dax):
        sparsity_axis(a, [100 * s for s in sparsities])
    ax2.set(ylabel="test accuracy (%), mean over seeds", title="both scores after fine-tuning")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    diffs = paired(data, "score", "attention", "magnitude", "accuracy", ["block", "sparsity"])
    paired_panel(dax, diffs.assign(x=100 * diffs["sparsity"], at=[f"{b}x{b}" for b in diffs["block"]]), "x",
                 series="at", colors={f"{b}x{b}": f"C{k}" for k, b in enumerate(blocks)},
                 ylabel="attention - magnitude, accuracy (pt)")
    dax.set_title(PAIRED_NOTE, fontsize=8)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES)]
