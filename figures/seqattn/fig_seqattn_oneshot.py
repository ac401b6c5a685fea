"""One-shot block pruning: softmax-attention scores minus magnitude scores, accuracy difference per block size x
sparsity (paper Fig. 2a), mean over seeds; the right panel shows both accuracies.

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
from figures.plot import save_csv, save_figure
from figures.seqattn import runs as R
from seqattn import oneshot

PAPER = "SequentialAttention++ Fig. 2a: one-shot block pruning, softmax attention vs magnitude scores"
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


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = tidy(df)
    stats = score_stats(df)
    wide = stats.pivot_table(index=["config.block", "sparsity"], columns="config.score", values="mean").reset_index()
    wide["difference"] = wide["attention"] - wide["magnitude"]
    blocks = sorted(int(b) for b in wide["config.block"].unique())
    sparsities = sorted(wide["sparsity"].unique())
    grid = np.array([[wide[(wide["config.block"] == b) & (wide["sparsity"] == s)]["difference"].iloc[0]
                      for s in sparsities] for b in blocks])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.1, 1]})
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
    ax2.set(xlabel="sparsity (%)", ylabel="test accuracy (%), mean over seeds", title="both scores after fine-tuning")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    csv = wide.rename(columns={"config.block": "block", "attention": "acc_attention", "magnitude": "acc_magnitude",
                               "difference": "attention_minus_magnitude"})
    return [*save_figure(fig, base), save_csv(csv, base)]
