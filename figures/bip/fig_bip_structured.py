"""BiP paper, Fig. 7: structured pruning -- filter-wise and channel-wise trajectories of BiP and Hydra.

A mask entry covers a whole filter (output channel) or input channel; its score is the sum of the signed scores of its
weights (bip/scores.py) and every layer keeps the same fraction (the first conv stays dense). Linear layers stay dense.
Below each panel: BiP minus Hydra per seed, with the mean's 95% t-interval.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures.bip import runs as R
from figures.bip.fig_bip_trajectory import long
from figures.plot import PAIRED_NOTE, band, mean_spread, paired, paired_panel, save_figure, save_long, sparsity_axis

PAPER = "BiP (Zhang et al. 2022) Fig. 7: filter-wise and channel-wise structured pruning"
ARMS, VALUES = ("setup", "structure", "method", "sparsity"), ("acc", "dense_acc")  # the long CSV: arms, seed, values


def runs(profile: str):
    return [("bip.prune", R.prune_config(setup, method, structure=structure, exclude=("first",), target_sparsity=s,
                                         seed=seed))
            for setup in R.setups(profile, R.STRUCTURED_SETUPS[profile]).values() for structure in R.STRUCTURES[profile]
            for method in ("bip", "hydra") for s in R.STRUCTURED[profile]
            for seed in R.STRUCTURED_SEEDS.get(profile, R.SEEDS)]


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    data = long(df).assign(structure=R.tidy(df)["config.structure"].values)
    stats = mean_spread(data, ["setup", "structure", "method", "sparsity"], "acc")
    dense = mean_spread(data.drop_duplicates(["setup", "seed"]), ["setup"], "dense_acc").set_index("setup")["mean"]
    panels = list(dict.fromkeys(zip(data["setup"], data["structure"])))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 6.6), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    for ax, dax, (setup, structure) in zip(axes[0], axes[1], panels):
        part = data[(data["setup"] == setup) & (data["structure"] == structure)]
        for method in ("hydra", "bip"):
            s = stats[(stats["setup"] == setup) & (stats["structure"] == structure) & (stats["method"] == method)]
            band(ax, s["sparsity"], s.sort_values("sparsity"), R.LABELS[method], R.COLORS[method])
        ax.axhline(dense[setup], color="k", ls="--", lw=1, label=f"dense ({dense[setup]:.2f}%)")
        for a in (ax, dax):
            sparsity_axis(a, part["sparsity"], f"{structure}s removed per conv layer")
        ax.set(title=f"{setup}, {structure}-wise", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paired_panel(dax, paired(part, "method", "bip", "hydra", "acc", ["sparsity"]), "sparsity",
                     ylabel="BiP - Hydra, accuracy (pt)")
        dax.set_title(PAIRED_NOTE, fontsize=7)
    fig.suptitle("structured pruning (mean over seeds, min-max band); below: BiP minus Hydra per seed", fontsize=9)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(data[[*ARMS, "seed", *VALUES, "run"]], base, ARMS, VALUES)]
