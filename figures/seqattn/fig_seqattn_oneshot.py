"""One-shot block pruning: softmax-attention scores minus magnitude scores, accuracy difference per block size x
sparsity (paper Fig. 2a), mean over seeds; the middle panel shows both accuracies, the right one attention minus
magnitude per seed (the same dense recipe, seed and data order), with the mean's 95% t-interval.

attention: a dense model trained with W (.) A (A = n * softmax(L) per layer, one logit per block), the blocks with the
lowest A removed; magnitude: the plain dense model (same recipe, seed, data order), the blocks with the smallest
Frobenius norm removed. Both fine-tuned briefly with the mask frozen (seqattn.oneshot).

Where the profile table has them (``R.ONESHOT_TEMPERATURES``: temperatures, block sizes, seeds), attention is also
run at other softmax temperatures T (A = n * softmax(L / T)); a fourth panel shows attention at each T minus
magnitude per block size, paired by seed. The heatmap and the middle panel are T = 1's.
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
ARMS, VALUES = ("setup", "score", "temperature", "block", "sparsity"), ("accuracy",)  # the long CSV: arms, seed, values
DEFAULT_T = 1.0  # the attention runs of the main grid (magnitude: temperature NaN, it has none)
SETUPS = {
    "tiny": ({"dataset": "digits", "model": "mlp"}, (1, 2, 4, 8), (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)),
    # small: 10 dense epochs (the SA++ table's length; both scores: attention trains its own, magnitude prunes
    # common.pretrain's model of the same recipe), one fine-tuning epoch (469 steps) per sparsity
    "small": ({"dataset": "fashionmnist", "model": "mlp", "pretrain.epochs": 10, "finetune.epochs": 1}, (1, 4, 16),
              (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)),
    # ours: the dense ResNet-50 recipe of common.pretrain's imagenet preset, one fine-tuning epoch at lr 0.01
    "paper": ({"dataset": "imagenet", "model": "resnet50", "exclude": (), "pretrain.epochs": 90, "pretrain.lr": 0.1,
               "pretrain.weight_decay": 1e-4, "pretrain.batch_size": 256, "pretrain.schedule": "multistep",
               "pretrain.milestones": (30.0, 60.0, 80.0), "finetune.epochs": 1, "finetune.batch_size": 256,
               "finetune.weight_decay": 1e-4}, (8, 16, 32, 64), (0.5, 0.7, 0.8, 0.9, 0.95)),
}


def runs(profile: str):
    """Attention (T = 1) and magnitude at every block size and seed, then attention at each temperature of
    ``R.ONESHOT_TEMPERATURES`` at its block sizes and seeds."""
    setup, blocks, sparsities = SETUPS[profile]
    rows = [(oneshot.SCRIPT, C.build(oneshot.Config, score=score, block=b, seed=seed, sparsities=sparsities, **setup))
            for score in ("attention", "magnitude") for b in blocks for seed in R.SEEDS[profile]]
    temperatures, t_blocks, t_seeds = R.ONESHOT_TEMPERATURES.get(profile, ((), (), ()))
    rows += [(oneshot.SCRIPT, C.build(oneshot.Config, score="attention", temperature=t, block=b, seed=seed,
                                      sparsities=sparsities, **setup))
             for t in temperatures for b in t_blocks for seed in t_seeds]
    return rows


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """collect() rows (one per run and sparsity) with ``accuracy`` (%), an integer ``config.block`` and
    ``temperature`` (attention's softmax temperature T; NaN for magnitude)."""
    t = df["config.temperature"].astype(float).fillna(DEFAULT_T) if "config.temperature" in df \
        else pd.Series(DEFAULT_T, index=df.index)
    return R.with_accuracy(df).assign(**{"config.block": df["config.block"].astype(int)},
                                      temperature=t.where(df["config.score"] == "attention"))


def default(df: pd.DataFrame) -> pd.DataFrame:
    """The main grid's rows of ``tidy`` rows: magnitude and attention at T = 1."""
    return df[(df["config.score"] != "attention") | (df["temperature"] == DEFAULT_T)]


def score_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy mean, min, max and count over the seeds per score x block x sparsity (``df``: ``tidy`` rows)."""
    return (df.groupby(["config.score", "config.block", "sparsity"])["accuracy"]
            .agg(["mean", "min", "max", "count"]).reset_index())


def long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and sparsity (``df``: ``tidy`` rows): setup, score, temperature, block, sparsity, seed,
    accuracy, run."""
    return pd.DataFrame({"setup": df.apply(R.setup_label, axis=1), "score": df["config.score"],
                         "temperature": df["temperature"], "block": df["config.block"], "sparsity": df["sparsity"], "seed": df["config.seed"],
                         "accuracy": df["accuracy"], "run": df["hash"]})


def temperature_diffs(data: pd.DataFrame) -> pd.DataFrame:
    """Per seed, block and sparsity: attention at each temperature minus magnitude (``data``: ``long`` rows), at the
    block sizes that have attention at a temperature other than T = 1; ``T`` and ``at`` ("BxB, T = t") columns."""
    att = data[data["score"] == "attention"]
    blocks = set(att.loc[att["temperature"] != DEFAULT_T, "block"])
    parts = []
    for t in sorted(set(att["temperature"]), reverse=True):
        part = data[((data["score"] == "attention") & (data["temperature"] == t)) | (data["score"] == "magnitude")]
        d = paired(part[part["block"].isin(blocks)], "score", "attention", "magnitude", "accuracy",
                   ["block", "sparsity"])
        parts.append(d.assign(T=t, at=[f"{b}x{b}, T = {t:g}" for b in d["block"]]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["block", "sparsity", "seed", "diff"])


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    df = tidy(df)
    data = long(df)
    temps = data[data["score"] == "attention"]["temperature"]
    tempered = bool((temps != DEFAULT_T).any())
    df = default(df)
    stats = score_stats(df)
    wide = stats.pivot_table(index=["config.block", "sparsity"], columns="config.score", values="mean").reset_index()
    wide["difference"] = wide["attention"] - wide["magnitude"]
    blocks = sorted(int(b) for b in wide["config.block"].unique())
    sparsities = sorted(wide["sparsity"].unique())
    grid = np.array([[wide[(wide["config.block"] == b) & (wide["sparsity"] == s)]["difference"].iloc[0]
                      for s in sparsities] for b in blocks])
    fig, axes = plt.subplots(1, 3 + tempered, figsize=(17 + 5.5 * tempered, 4.2),
                             gridspec_kw={"width_ratios": [1.1, 1, 1] + [1.2] * tempered})
    ax, ax2, dax = axes[:3]
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
    for a in axes[1:]:
        sparsity_axis(a, [100 * s for s in sparsities])
    ax2.set(ylabel="test accuracy (%), mean over seeds", title="both scores after fine-tuning")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    diffs = paired(data[data["temperature"].isna() | (data["temperature"] == DEFAULT_T)], "score", "attention",
                   "magnitude", "accuracy", ["block", "sparsity"])
    paired_panel(dax, diffs.assign(x=100 * diffs["sparsity"], at=[f"{b}x{b}" for b in diffs["block"]]), "x",
                 series="at", colors={f"{b}x{b}": f"C{k}" for k, b in enumerate(blocks)},
                 ylabel="attention - magnitude, accuracy (pt)")
    dax.set_title(PAIRED_NOTE, fontsize=8)
    if tempered:
        tax = axes[3]
        tdiffs = temperature_diffs(data)
        keys = list(dict.fromkeys(tdiffs.sort_values(["block", "T"], ascending=[True, False])["at"]))
        paired_panel(tax, tdiffs.assign(x=100 * tdiffs["sparsity"]), "x", series="at",
                     colors={k: f"C{i}" for i, k in enumerate(keys)},
                     ylabel="attention at T - magnitude, accuracy (pt)")
        tax.set_title("softmax temperature T: A = n softmax(L / T)\n" + PAIRED_NOTE, fontsize=8)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES)]
