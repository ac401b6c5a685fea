"""The GMP claims: gradual magnitude pruning beats one-shot pruning + fine-tuning at high sparsity, and dropping weight
decay in fine-tuning helps."""
from __future__ import annotations

import numpy as np
import pandas as pd

from figures.claims import scale
from figures.claims.board import Board, Link, per_seed
from figures.claims.rule import NOT_TESTABLE
from figures.gmp import runs as GR

PAPER = "GMP"
HIGH_LOSS = 1.0  # pt: "high sparsity" is where one-shot pruning + fine-tuning loses this much to the dense model


def pct(x: float) -> str:
    return f"{100 * x:g}%"


def tidy(data: pd.DataFrame) -> pd.DataFrame:
    if data.empty:
        return data
    return data.assign(setup=data.apply(GR.setup_label, axis=1), accuracy=100 * data["test_acc"],
                       dense=100 * data["dense_test_acc"])


def at(t: pd.DataFrame, s: float, value: str = "accuracy", **match) -> pd.Series:
    if t.empty:
        return pd.Series(dtype=float)
    sel = np.isclose(t["config.target_sparsity"].astype(float), s)
    for key, v in match.items():
        col = t[f"config.{key}"]
        sel &= (col.isna() if v is None else col == v).to_numpy()
    return per_seed(t[sel], value)


def claims(board: Board) -> None:
    vs_oneshot(board)
    weight_decay(board)


def vs_oneshot(board: Board) -> None:
    name = "fig-gmp-vs-oneshot"
    plan, t = board.plan(name), tidy(board.data(name))
    claim = "GMP beats one-shot magnitude pruning + fine-tuning at high sparsity"
    for setup, runs in plan.groupby("setup", sort=False):
        grid = sorted(set(runs["target_sparsity"]))
        compared = (f"{setup}: test accuracy (%), GMP (cubic schedule) vs one-shot pruning + fine-tuning, the same "
                    f"epochs, learning rates and dense model, at {', '.join(map(pct, grid))}, "
                    f"{runs['seed'].nunique()} seeds, paired by seed")
        if board.not_run(PAPER, claim, name, compared, runs):
            continue
        mine = t[t["setup"] == setup]
        loss = {s: float((at(mine, s, "dense", method="oneshot") - at(mine, s, method="oneshot")).mean())
                for s in grid}
        high = [s for s in grid if loss[s] >= HIGH_LOSS]
        dense = float(mine["dense"].mean())
        regime = (f"high sparsity: where one-shot loses >= {HIGH_LOSS:g} pt to the dense model ({dense:.2f}%), from "
                  "the runs: " + (", ".join(f"{pct(s)} (-{loss[s]:.2f})" for s in high) if high else "no grid point"))
        if not high:
            board.put(PAPER, claim, name, compared, regime, f"one-shot's largest loss to dense: "
                      f"{max(loss.values()):.2f} pt", "", NOT_TESTABLE, "the regime is not reached on the grid")
            continue
        board.add(PAPER, claim, name, compared, regime,
                  [Link("GMP", "one-shot", {pct(s): (at(mine, s, method="gmp"), at(mine, s, method="oneshot"))
                                            for s in high})])


def weight_decay(board: Board) -> None:
    name = "fig-gmp-wd"
    plan, t = board.plan(name), tidy(board.data(name))
    claim = "dropping weight decay in fine-tuning helps"
    papers = [cfg for _, cfg in GR.grid("paper", method="gmp", seeds=(0,), sparsities=(0.9,))]
    for setup, runs in plan.groupby("setup", sort=False):
        grid = sorted(set(runs["target_sparsity"]))
        compared = (f"{setup}: test accuracy (%) of GMP without weight decay in fine-tuning vs with the optimizer's "
                    f"kept, at {', '.join(map(pct, grid))}, {runs['seed'].nunique()} seeds, paired by seed")
        if board.not_run(PAPER, claim, name, compared, runs):
            continue
        mine = t[t["setup"] == setup]
        kept = runs[runs["finetune_weight_decay"].isna()]["cfg"].iloc[0]
        ok, reason = scale.wd_shrink(kept, int(mine["steps_per_epoch"].iloc[0]), papers)
        if not ok:
            board.untestable(PAPER, claim, name, compared, reason)
            continue
        board.add(PAPER, claim, name, compared, f"every sparsity of the figure ({reason})",
                  [Link("no wd", "wd kept", {pct(s): (at(mine, s, finetune_weight_decay=0.0),
                                                      at(mine, s, finetune_weight_decay=None)) for s in grid})])
