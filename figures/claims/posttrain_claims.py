"""The post-training structured pruning paper's claims, paired by calibration draw (``sample_seed``: the same dense
model and the same calibration samples for every method of a draw): the ablation chain, the methods' chain, the
spread over the draws, more calibration samples, and the calibration time."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from figures.claims import paper
from figures.claims.board import MARGIN, Board, Link, per_seed
from figures.claims.rule import ALPHA, FAILS, HOLDS, INCONCLUSIVE, MIXED, chi2_quantile
from figures.posttrain import fig_posttrain_ablation
from figures.posttrain import runs as PR

PAPER = "post-training"
CHEAP = 0.10  # calibration time below this fraction of L1 + retraining's: "a small fraction"
SHORT = {"ours": "ours", "holistic": "holistic", "layerwise": "layer-wise", "none": "no reconstruction"}


def pct(x: float) -> str:
    return f"{100 * x:g}%"


def draws(rows: pd.DataFrame, value: str = "top1") -> pd.Series:
    return per_seed(rows, value, "config.sample_seed")


def tidy(data: pd.DataFrame) -> pd.DataFrame:
    if data.empty:
        return data
    return data.assign(top1=100 * data["test_acc"], dense=100 * data["dense_test_acc"],
                       setup=data.apply(PR.setup_label, axis=1))


def claims(board: Board) -> None:
    ablation(board)
    methods(board)
    samples(board)
    calibration_time(board)


def ablation(board: Board) -> None:
    name = "fig-posttrain-ablation"
    plan, t = board.plan(name), tidy(board.data(name))
    names = list(fig_posttrain_ablation.VARIANTS)
    ratios = sorted(set(plan["ratio"]))
    claim = " > ".join(names)
    compared = (f"{plan['setup'].iloc[0]}: test top-1 (%) at channel ratios {', '.join(map(pct, ratios))}, "
                f"{plan['sample_seed'].nunique()} calibration draws, paired by draw")
    if board.not_run(PAPER, claim, name, compared):
        return
    t = t.assign(variant=t.apply(fig_posttrain_ablation.variant, axis=1))
    side = lambda v, r: draws(t[(t["variant"] == v) & np.isclose(t["config.ratio"], r)])  # noqa: E731
    cost = {r: float(t["dense"].mean() - side(names[-1], r).mean()) for r in ratios}
    where = [r for r in ratios if cost[r] > MARGIN]
    regime = (f"ratios where removing without reconstruction costs more than the margin ({MARGIN:g} pt) against the "
              f"dense model ({t['dense'].mean():.2f}%), from the runs: "
              + (", ".join(f"{pct(r)} (-{cost[r]:.2f})" for r in where) if where else "none"))
    board.add(PAPER, claim, name, compared, regime,
              [Link(a, b, {pct(r): (side(a, r), side(b, r)) for r in where}) for a, b in zip(names, names[1:])]
              if where else [])


def methods(board: Board) -> None:
    name = "tab-posttrain"
    plan, t = board.plan(name), tidy(board.data(name))
    order = ("ours", "holistic", "layerwise", "none")
    claim = "ours > holistic (gAP-like) > layer-wise (AdaPrune-like) > no reconstruction"
    for setup, runs in plan.groupby("setup", sort=False):
        ratio = runs["ratio"].iloc[0]
        compared = (f"{setup}: test top-1 (%) at channel ratio {pct(ratio)}, "
                    f"{runs[runs['method'] == 'ours']['sample_seed'].nunique()} calibration draws, paired by draw")
        mine = t[t["setup"] == setup] if len(t) else t
        side = lambda m: draws(mine[mine["config.method"] == m]) if len(mine) else pd.Series(dtype=float)  # noqa
        board.add(PAPER, claim, name, compared, f"the setup's ratio {pct(ratio)}",
                  [Link(SHORT[a], SHORT[b], {pct(ratio): (side(a), side(b))}) for a, b in zip(order, order[1:])],
                  board.missing(name, runs[runs["method"].isin(order)]))


def sd_interval(values: np.ndarray, alpha: float = ALPHA) -> tuple[float, float, float]:
    """The SD of ``values`` and its one-sided (1 - alpha) bounds (chi-square with n - 1 degrees of freedom)."""
    n, sd = len(values), float(np.std(values, ddof=1))
    return sd, sd * math.sqrt((n - 1) / chi2_quantile(1 - alpha, n - 1)), \
        sd * math.sqrt((n - 1) / chi2_quantile(alpha, n - 1))


def test_images(fractions) -> int:
    """The test-set size the accuracies ``fractions`` (k / N) imply: the smallest N making every one a whole count
    (at most the true N, so one image's worth, 100 / N pt, is if anything overstated)."""
    v = np.unique(np.asarray(fractions, dtype=float))
    for n in range(1, 200_001):
        if np.all(np.abs(v * n - np.round(v * n)) < 1e-6 * n):
            return n
    return 200_000


def spread(board: Board, claim: str, name: str, compared: str, values: np.ndarray, image: float) -> None:
    """The draws' SD against the margin, by its chi-square bounds; not testable where one test image (``image``,
    pt) exceeds the margin: draws that agree say nothing of a smaller spread."""
    sd, lo, hi = sd_interval(values)
    if image > MARGIN:
        board.untestable(PAPER, claim, name, compared, f"one test image is {image:.2f} pt (the accuracies' "
                         f"resolution), more than the margin {MARGIN:g} pt: the draws' SD {sd:.3f} cannot be placed "
                         "against it")
        return
    verdict = HOLDS if hi < MARGIN else FAILS if lo > MARGIN else INCONCLUSIVE
    ref = paper.ten_draws_sd()
    versus = ("the paper states no draws" if ref is None else
              f"the paper's SD over its ten draws {ref:.3f} " + ("is excluded: the spread is larger here"
                                                                  if ref < lo else "lies within the interval"))
    board.put(PAPER, claim, name, compared, f"small: the draws' SD below the practical margin {MARGIN:g} pt",
              f"SD over the draws {sd:.3f} pt, one-sided {100 * (1 - ALPHA):g}% bounds [{lo:.3f}, {hi:.3f}] "
              f"(chi-square, {len(values)} draws; min-max {values.max() - values.min():.2f} pt)",
              f"spread rule: holds when the SD's upper bound < {MARGIN:g} pt, does not hold when its lower bound > "
              "it, otherwise inconclusive", verdict,
              {HOLDS: "the SD is below the margin", FAILS: "the SD exceeds the margin",
               INCONCLUSIVE: "the draws cannot place the SD against the margin"}[verdict], versus)


def samples(board: Board) -> None:
    name = "fig-posttrain-samples"
    plan, t = board.plan(name), tidy(board.data(name))
    counts, n = sorted(set(plan["samples"])), plan["sample_seed"].nunique()
    setup = plan["setup"].iloc[0]
    default = PR.config(PR.SAMPLES_SETUP[board.profile]).samples
    size = default if default in counts else counts[-1]
    side = lambda c: draws(t[t["config.samples"] == c]) if len(t) else pd.Series(dtype=float)  # noqa: E731
    claim = "the spread over the calibration draws is small"
    compared = f"{setup}: test top-1 (%) over {n} calibration draws at the setup's calibration size ({size} samples)"
    if not board.not_run(PAPER, claim, name, compared, plan[plan["samples"] == size]):
        spread(board, claim, name, compared, side(size).to_numpy(), 100.0 / test_images(t["test_acc"]))
    board.add(PAPER, "more calibration samples help", name,
              f"{setup}: test top-1 (%) with the most ({counts[-1]}) vs the fewest ({counts[0]}) calibration samples, "
              f"{n} draws each, paired by draw", f"the extremes of the grid ({counts[0]} and {counts[-1]} samples)",
              [Link(f"{counts[-1]} samples", f"{counts[0]} samples",
                    {f"{counts[-1]} vs {counts[0]}": (side(counts[-1]), side(counts[0]))})],
              board.missing(name, plan[plan["samples"].isin((counts[0], counts[-1]))]))


def calibration_time(board: Board) -> None:
    name = "fig-posttrain-time"
    plan, data = board.plan(name), board.data(name)
    ratios = sorted(set(plan["ratio"]))
    claim = "calibration costs a small fraction of L1 + retraining's time"
    n = plan.groupby(["method", "ratio"]).size().max()
    compared = (f"{plan['setup'].iloc[0]}: wall time (s) of our calibration vs L1-norm pruning + retraining at "
                f"channel ratios {', '.join(map(pct, ratios))}, the fastest of {n} run(s) per method and ratio")
    rule = (f"time rule (a threshold on the fastest run, not a test): at each ratio below {100 * CHEAP:g}% of L1 + "
            "retraining's time holds; holds at every ratio: holds, at none: does not hold, otherwise mixed")
    if board.not_run(PAPER, claim, name, compared, metric="method_time"):
        return
    time = lambda m, r: float(data[(data["config.method"] == m) & np.isclose(data["config.ratio"], r)]  # noqa
                              ["method_time"].min())
    ratio = {r: time("ours", r) / time("l1", r) for r in ratios}
    below = [r for r in ratios if ratio[r] < CHEAP]
    verdict = HOLDS if len(below) == len(ratios) else FAILS if not below else MIXED
    board.put(PAPER, claim, name, compared, "every ratio of the figure",
              "; ".join(f"{pct(r)}: {time('ours', r):.3g} s vs {time('l1', r):.3g} s = {100 * ratio[r]:.1f}%"
                        for r in ratios), rule, verdict,
              f"below {100 * CHEAP:g}% at {', '.join(map(pct, below)) or 'none'}")
