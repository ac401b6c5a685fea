"""The reproduction scoreboard: one row per claim of the four papers (per setup where its figure has several), with
what was compared, the measured effect and the verdict: holds / does not hold / inconclusive / not run.

Every row is computed from the runs of the figure it names, through that figure module's own tidy and select functions,
so its numbers are the ones the figure shows. ``runs(profile)`` is the union of those figures' runs (the scoreboard has
no grid of its own), and every setup, grid point and seed count is read from them.

The rule (the table's caption states it too):

- comparison: side A (claimed better) against side B, each over its seeds (calibration draws, post-training);
  difference d = mean(A) - mean(B), a side's spread = max - min over its runs; accuracy is better higher, a loss
  lower. Holds: d has the claimed sign and |d| exceeds both spreads; does not hold: the opposite sign and |d| exceeds
  both spreads; otherwise inconclusive (within noise). A side with a single run has no spread: inconclusive. A ">="
  of a claim is tested as ">": holding needs a win beyond the noise.
- chain (A > B > C, or A beats both B and C) at one point: holds when every link holds, does not hold when a link
  does not hold, otherwise inconclusive.
- range (a claim over several grid points, e.g. every sparsity >= 80%): holds when it holds at a majority of the points
  and does not hold at none; does not hold when it does not hold at a majority and holds at none; otherwise
  inconclusive. The counts are given.
- rules of their own, each stated in its row: BiP without retraining (holds when no rewinding point beats it beyond
  the noise), the IG term (two-sided: a change of either sign beyond the noise holds), winning tickets (tab-bip-tickets'
  tickets, which average the seeds first, compared as grid sparsities on the grid both methods share), and the time and
  spread thresholds (the measured value against the stated threshold; they need no spread).
- not run: a point of the claim has no runs in the store; no value is made up.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import atomic_write
from common.store import Run
from figures.bip import fig_bip_ig, fig_bip_rewind, fig_bip_structured, fig_bip_time, fig_bip_trajectory
from figures.bip import runs as BR
from figures.bip import tab_bip_tickets
from figures.gmp import fig_gmp_vs_oneshot, fig_gmp_wd
from figures.gmp import runs as GR
from figures.plot import mean_spread, save_csv, save_table, tex_escape
from figures.posttrain import fig_posttrain_ablation, fig_posttrain_samples, fig_posttrain_time, tab_posttrain
from figures.posttrain import runs as PR
from figures.seqattn import fig_seqattn_oneshot, tab_seqattn_ablations, tab_seqattn_blocks
from figures.seqattn import runs as SR

PAPER = "reproduction scoreboard: each paper claim the figures test, its measured effect over seeds and a verdict"

# the figures the rows are computed from; the timed ones first, so that computing the scoreboard from an empty store
# times their runs in their own sequence, as `python -m figures all` does
SOURCES = {m.__name__.rsplit(".", 1)[1].replace("_", "-"): m for m in (
    fig_bip_time, fig_posttrain_time, fig_bip_trajectory, tab_bip_tickets, fig_bip_rewind, fig_bip_structured,
    fig_bip_ig, fig_seqattn_oneshot, tab_seqattn_blocks, tab_seqattn_ablations, fig_gmp_vs_oneshot, fig_gmp_wd,
    fig_posttrain_ablation, tab_posttrain, fig_posttrain_samples)}

HIGH_SPARSITY = 0.8        # "high sparsity" (BiP Fig. 6, GMP)
HIGH_BLOCK_SPARSITY = 0.9  # "high block sparsity" (SA++ Tables 1-2)
FLAT, GROWS = 1.5, 2.0     # time max/min below FLAT: flat in sparsity; above GROWS: grows
SMALL_SPREAD = 1.0         # pt: "small" spread over the calibration draws
CHEAP = 0.10               # calibration time below this fraction of L1 + retraining's: "a small fraction"
LISTED = 8                 # a range of at most this many points lists each; a longer one is summarized

HOLDS, FAILS, INCONCLUSIVE, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"
NOISE, SINGLE = "within noise", "single run"
RULE = ("Rule: per comparison, d = mean(claimed better) - mean(other) over the seeds (post-training: calibration "
        "draws), a side's spread = max - min over its runs (losses: lower is better). holds: d has the claimed sign "
        "and |d| exceeds both spreads; does not hold: the opposite sign and |d| exceeds both spreads; otherwise "
        "inconclusive (within noise); a side with a single run has no spread: inconclusive; '>=' is tested as '>'. "
        "A chain (A > B > C) holds at a point when every link holds and does not hold when a link does not. Over a "
        "range of points: holds when it holds at a majority of them and does not hold at none, does not hold when it "
        "does not hold at a majority and holds at none, otherwise inconclusive. Rows with a rule of their own state "
        "it (rewinding, IG term, tickets, thresholds). not run: a point has no runs in the store.")
RANGE = "comparison rule per point, majority over the points"
CHAIN = "comparison rule per link, chain per point, majority over the points"
FIELDS = ("method", "seed", "target_sparsity", "structure", "score", "block", "sparsity", "sparsities", "ratio",
          "samples", "sample_seed", "finetune_weight_decay")
COLUMNS = ["paper", "claim", "figure", "compared", "measured", "rule", "verdict", "detail"]


# ------------------------------------------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class Side:
    """One side of a comparison: its label and the mean, min, max and number of its runs (n = 0: none in the store)."""
    label: str
    mean: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    n: int = 0

    @property
    def spread(self) -> float:
        return self.hi - self.lo

    @classmethod
    def of(cls, label: str, values) -> Side:
        v = pd.Series(values, dtype=float).dropna()
        return cls(label, float(v.mean()), float(v.min()), float(v.max()), len(v)) if len(v) else cls(label)

    def text(self, digits: int = 2) -> str:
        if not self.n:
            return f"{self.label}: not run"
        if self.n == 1:
            return f"{self.label} {self.mean:.{digits}f} (1 run)"
        return f"{self.label} {self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


@dataclass(frozen=True)
class Outcome:
    verdict: str
    why: str = ""


def judge(better: Side, worse: Side, higher: bool = True, two_sided: bool = False) -> Outcome:
    """The comparison rule: ``better`` is the side the claim says is better (higher, or lower for a loss);
    ``two_sided``: the claim is only that the two differ."""
    if not (better.n and worse.n):
        return Outcome(NOT_RUN, "no runs of " + " and ".join(s.label for s in (better, worse) if not s.n))
    if min(better.n, worse.n) < 2:
        return Outcome(INCONCLUSIVE, SINGLE)
    d = better.mean - worse.mean
    if abs(d) <= max(better.spread, worse.spread):
        return Outcome(INCONCLUSIVE, NOISE)
    return Outcome(HOLDS) if two_sided or (d > 0) == higher else Outcome(FAILS)


def chain(outcomes) -> Outcome:
    """Every link of a chain at one point: holds when all hold, does not hold when one does not."""
    outcomes = list(outcomes)
    for verdict in (NOT_RUN, FAILS):
        hit = [o for o in outcomes if o.verdict == verdict]
        if hit:
            return hit[0]
    if all(o.verdict == HOLDS for o in outcomes):
        return Outcome(HOLDS)
    return Outcome(INCONCLUSIVE, SINGLE if any(o.why == SINGLE for o in outcomes) else NOISE)


@dataclass
class Point:
    """One grid point of a claim: its outcome, its text (the sides and differences) and its rows for the points CSV."""
    where: str
    outcome: Outcome
    text: str
    records: list = field(default_factory=list)
    differences: list = field(default_factory=list)
    spreads: list = field(default_factory=list)


def point(where: str, sides: list[Side], links=None, higher: bool = True, two_sided: bool = False,
          digits: int = 2) -> Point:
    """``sides`` in the claimed order (best first) compared along ``links`` (pairs of indices; default: the chain
    sides[0] > sides[1] > ...)."""
    links = links or [(i, i + 1) for i in range(len(sides) - 1)]
    outcomes, diffs, records = [], [], []
    for i, j in links:
        a, b = sides[i], sides[j]
        o = judge(a, b, higher, two_sided)
        outcomes.append(o)
        if a.n and b.n:
            diffs.append(a.mean - b.mean)
        records.append({"point": where, "side": a.label, "mean": a.mean, "min": a.lo, "max": a.hi, "n": a.n,
                        "other": b.label, "other_mean": b.mean, "other_min": b.lo, "other_max": b.hi, "other_n": b.n,
                        "difference": a.mean - b.mean, "verdict": o.verdict, "why": o.why})
    shown = [f"{sides[i].label} - {sides[j].label} = {sides[i].mean - sides[j].mean:+.{digits}f}"
             for i, j in links if sides[i].n and sides[j].n]
    text = f"{where}: " + ", ".join(s.text(digits) for s in sides) + (f" ({'; '.join(shown)})" if shown else "")
    return Point(where, chain(outcomes), text, records, diffs, [s.spread for s in sides if s.n > 1])


def threshold(where: str, value: float | None, limit: float, text: str, at_most: bool = False) -> Point:
    """A threshold claim at one point: holds when ``value`` < ``limit`` (``at_most``: <=), else does not hold."""
    if value is None or not np.isfinite(value):
        return Point(where, Outcome(NOT_RUN), f"{where}: not run")
    ok = value <= limit if at_most else value < limit
    outcome = Outcome(HOLDS if ok else FAILS)
    return Point(where, outcome, f"{where}: {text}", [{"point": where, "value": value, "threshold": limit,
                                                        "verdict": outcome.verdict}])


def over_range(points: list[Point]) -> tuple[Outcome, str]:
    """The range rule: holds at a majority of the points and fails at none (or the reverse); else inconclusive."""
    n = len(points)
    if not n:
        return Outcome(NOT_RUN), "no grid point in the range"
    count = Counter(p.outcome.verdict for p in points)
    unit = "point" if n == 1 else "points"
    if count[NOT_RUN]:
        return Outcome(NOT_RUN), f"no runs at {count[NOT_RUN]}/{n} {unit}"
    h, f = count[HOLDS], count[FAILS]
    i, single = n - h - f, sum(p.outcome.why == SINGLE for p in points)
    verdict = HOLDS if h > n / 2 and not f else FAILS if f > n / 2 and not h else INCONCLUSIVE
    parts = [f"holds at {h}/{n}", f"does not hold at {f}/{n}"]
    if i:
        parts.append(f"inconclusive at {i}/{n}" + (f" ({single} with a single run)" if single else ""))
    return Outcome(verdict), ", ".join(parts) + f" {unit}"


def no_better_than(points: list[Point]) -> tuple[Outcome, str]:
    """BiP without retraining against its retrained masks: holds when no retrained point is better beyond the noise
    (each point compares "no retraining > retrained"), does not hold when one is."""
    n = len(points)
    count = Counter(p.outcome.verdict for p in points)
    if count[NOT_RUN] or not n:
        return Outcome(NOT_RUN), f"no runs at {count[NOT_RUN]}/{n} points"
    single = sum(p.outcome.why == SINGLE for p in points)
    f, h = count[FAILS], count[HOLDS]
    verdict = FAILS if f else INCONCLUSIVE if single else HOLDS
    detail = (f"retrained better beyond noise at {f}/{n} points, within noise at {n - f - h - single}/{n}, "
              f"no retraining better beyond noise at {h}/{n}")
    return Outcome(verdict), detail + (f", a single run at {single}/{n}" if single else "")


def ticket_outcome(bip, imp) -> Outcome:
    """BiP's sparsest winning ticket at least as sparse as IMP's (grid sparsities, None: no ticket)."""
    if bip is None and imp is None:
        return Outcome(INCONCLUSIVE, "neither has a winning ticket")
    if bip is None or (imp is not None and bip < imp):
        return Outcome(FAILS)
    return Outcome(HOLDS)


def time_outcome(bip_ratio: float, imp_ratio: float) -> Outcome:
    """BiP's time flat in sparsity (max/min < FLAT) while IMP's grows (largest / smallest > GROWS)."""
    if bip_ratio < FLAT and imp_ratio > GROWS:
        return Outcome(HOLDS)
    if bip_ratio > GROWS or imp_ratio < FLAT:
        return Outcome(FAILS)
    return Outcome(INCONCLUSIVE, "between the thresholds")


# --------------------------------------------------------------------------------------------------- selection
def side_of(label: str, stats: pd.DataFrame | None, where: dict, cols=("mean", "min", "max", "count")) -> Side:
    """The side of ``stats`` (``mean_spread``-like rows) at ``where`` (column -> value; floats matched to 1e-9)."""
    if stats is None or stats.empty or not set(where) <= set(stats.columns):
        return Side(label)
    sel = np.ones(len(stats), dtype=bool)
    for col, value in where.items():
        column = stats[col]
        sel &= np.isclose(column.astype(float), value) if isinstance(value, float) else (column == value).to_numpy()
    hit = stats[sel]
    if len(hit) > 1:
        raise ValueError(f"{label}: {len(hit)} rows of the statistics at {where}")
    if hit.empty or not hit[cols[3]].iloc[0]:
        return Side(label)
    mean, lo, hi, n = (hit[c].iloc[0] for c in cols)
    return Side(label, float(mean), float(lo), float(hi), int(n))


def close(values, grid) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.isclose(values[:, None], np.asarray(grid, dtype=float)[None, :]).any(axis=1) if len(grid) else \
        np.zeros(len(values), dtype=bool)


def pct(values) -> list[float]:
    """Fractions as the percentages ``figures.bip.runs.tidy`` gives (``x``: two decimals), sorted, each once."""
    return list((100 * pd.Series(sorted(set(values)), dtype=float)).round(2))


def listed(percentages) -> str:
    return ", ".join(f"{x:g}%" for x in percentages)


class Board:
    """The rows of the scoreboard and their points, from ``df`` (the store's rows of the scoreboard's runs)."""

    def __init__(self, df: pd.DataFrame, profile: str, points_name: str):
        self.df, self.profile, self.points_name = df, profile, points_name
        self.rows, self.records, self._plans = [], [], {}

    def plan(self, name: str) -> pd.DataFrame:
        """One row per run of figure ``name``: script, hash, setup and the config fields the claims select on."""
        if name not in self._plans:
            rows = [{"script": script, "hash": Run(script, cfg).hash, "setup": f"{cfg.model} / {cfg.dataset}",
                     "dataset": cfg.dataset, **{f: getattr(cfg, f) for f in FIELDS if hasattr(cfg, f)}}
                    for script, cfg in SOURCES[name].runs(self.profile)]
            self._plans[name] = pd.DataFrame(rows)
        return self._plans[name]

    def data(self, name: str) -> pd.DataFrame:
        """The store's rows of figure ``name``'s runs (what the pipeline would hand its ``draw``)."""
        if self.df.empty or "hash" not in self.df:
            return pd.DataFrame()
        return self.df[self.df["hash"].isin(set(self.plan(name)["hash"]))].reset_index(drop=True)

    def add(self, paper: str, claim: str, figure: str, compared: str, points: list[Point], rule: str,
            judged: tuple[Outcome, str] | None = None, measured: str | None = None) -> None:
        outcome, detail = judged or over_range(points)
        self.rows.append({"paper": paper, "claim": claim, "figure": figure, "compared": compared,
                          "measured": measured or self.measured(points), "rule": rule, "verdict": outcome.verdict,
                          "detail": detail})
        self.records += [{"paper": paper, "claim": claim, "figure": figure, "compared": compared, **r}
                         for p in points for r in p.records]

    def measured(self, points: list[Point]) -> str:
        if len(points) <= LISTED:
            return "; ".join(p.text for p in points)
        diffs = [d for p in points for d in p.differences]
        spreads = [s for p in points for s in p.spreads]
        fails = [p.where for p in points if p.outcome.verdict == FAILS]
        text = f"{len(points)} points"
        if diffs:
            text += f": differences from {min(diffs):+.2f} to {max(diffs):+.2f}"
        if spreads:
            text += f", largest seed spread {max(spreads):.2f}"
        if fails:
            text += f"; does not hold at {', '.join(fails)}"
        return text + f" (every point with both sides' min-max: {self.points_name})"


def _grid(plan: pd.DataFrame, column: str, **match) -> list:
    sel = np.ones(len(plan), dtype=bool)
    for key, value in match.items():
        sel &= (plan[key] == value).to_numpy()
    return sorted(set(plan.loc[sel, column].dropna()))


def _seeds(plan: pd.DataFrame, column: str = "seed", what: str = "seed") -> str:
    """How many seeds (or calibration draws: ``column`` sample_seed) the planned runs have, in words."""
    n = plan[column].nunique()
    return f"{n} {what}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------------------------------------- BiP
def bip_claims(board: Board) -> None:
    plan, data = board.plan("fig-bip-trajectory"), board.data("fig-bip-trajectory")
    tidy = BR.tidy(data) if len(data) else None
    acc = mean_spread(tidy, ["setup", "method", "x"], "acc") if tidy is not None else None
    dense = tab_bip_tickets.dense_accuracy(tidy) if tidy is not None else pd.Series(dtype=float)
    for setup, runs in plan.groupby("setup", sort=False):
        grid = pct(_grid(runs, "target_sparsity", method="bip"))
        methods = [m for m in ("bip", "imp", "omp") if m in set(runs["method"])]
        high = [x for x in grid if x >= 100 * HIGH_SPARSITY]
        names = " > ".join(BR.LABELS[m] for m in methods).replace(">", ">=", 1)
        board.add("BiP", f"accuracy {names} at high sparsity (>= {100 * HIGH_SPARSITY:g}%)"
                  + ("" if "omp" in methods else "; this setup has no OMP"), "fig-bip-trajectory",
                  f"{setup}: test accuracy (%) at the {len(high)} grid sparsities >= {100 * HIGH_SPARSITY:g}% "
                  f"({listed(high)}), {_seeds(runs)} each; IMP: its round at that sparsity",
                  [point(f"{x:g}%", [side_of(BR.LABELS[m], acc, {"setup": setup, "method": m, "x": x})
                                     for m in methods]) for x in high], CHAIN)
        _tickets(board, setup, grid, acc, dense, _seeds(runs))
    _time(board)
    _rewind(board)
    _structured(board)
    _ig(board)


def _tickets(board: Board, setup: str, grid: list[float], acc, dense: pd.Series, seeds: str) -> None:
    compared = (f"{setup}: sparsest winning ticket (highest grid sparsity whose mean test accuracy over {seeds} "
                f">= the dense model's), BiP vs IMP on the grid both share ({len(grid)} sparsities)")
    rule = ("ticket rule: holds when BiP's ticket sparsity >= IMP's, does not hold when IMP's is sparser (or BiP has "
            "none); tickets of seed means, as tab-bip-tickets, so no spread")
    mine = acc[acc["setup"] == setup] if acc is not None else pd.DataFrame()
    if mine.empty or setup not in dense or not {"bip", "imp"} <= set(mine["method"]):
        board.add("BiP", "BiP's sparsest winning ticket at least as sparse as IMP's", "tab-bip-tickets", compared,
                  [], rule, (Outcome(NOT_RUN), "no runs"), "not run")
        return
    on_grid = mine[close(mine["x"], grid)]
    tickets = {m: tab_bip_tickets.sparsest_ticket(on_grid[on_grid["method"] == m], dense[setup])
               for m in ("bip", "imp")}
    every_round = tab_bip_tickets.sparsest_ticket(mine[mine["method"] == "imp"], dense[setup])
    x = {m: None if t is None else float(t["x"]) for m, t in tickets.items()}
    text = "; ".join(f"{BR.LABELS[m]} " + ("none" if t is None else f"{t['x']:g}% ({t['mean']:.2f}%)")
                     for m, t in tickets.items())
    text += (f"; dense {dense[setup]:.2f}%; tab-bip-tickets' IMP ticket over all its rounds: "
             + ("none" if every_round is None else f"{every_round['x']:g}%"))
    outcome = ticket_outcome(x["bip"], x["imp"])
    board.add("BiP", "BiP's sparsest winning ticket at least as sparse as IMP's", "tab-bip-tickets", compared,
              [Point("tickets", outcome, text, [{"point": "ticket", "side": "BiP", "value": x["bip"], "other": "IMP",
                                                 "other_value": x["imp"], "verdict": outcome.verdict}])],
              rule, (outcome, " vs ".join(f"{BR.LABELS[m]} " + ("none" if v is None else f"{v:g}%")
                                          for m, v in x.items())), text)


def _time(board: Board) -> None:
    plan, data = board.plan("fig-bip-time"), board.data("fig-bip-time")
    times = mean_spread(BR.tidy(data), ["setup", "method", "x"], "time") if len(data) else pd.DataFrame()
    rule = (f"time rule: holds when BiP's max/min time over the grid < {FLAT:g} and IMP's time at the largest / at the "
            f"smallest grid sparsity > {GROWS:g}; does not hold when BiP's > {GROWS:g} or IMP's < {FLAT:g}; otherwise "
            "inconclusive. Fastest seed per point (fig-bip-time's estimate least disturbed by other load)")
    for setup, runs in plan[plan["script"] != "common.pretrain"].groupby("setup", sort=False):
        grid = pct(_grid(runs, "target_sparsity", method="bip"))
        compared = (f"{setup}: wall time (s) of BiP (each run) and IMP (cumulative over its rounds) at the "
                    f"{len(grid)} grid sparsities {grid[0]:g}%-{grid[-1]:g}%, {_seeds(runs)}")
        mine = times[(times["setup"] == setup) & close(times["x"], grid)] if len(times) else times
        bip = mine[mine["method"] == "bip"] if len(mine) else mine
        imp = mine[mine["method"] == "imp"].set_index("x") if len(mine) else mine
        if len(bip) < len(grid) or len(imp) < len(grid):
            board.add("BiP", "BiP's wall time flat in sparsity while IMP's grows", "fig-bip-time", compared, [], rule,
                      (Outcome(NOT_RUN), "no runs at some grid points"), "not run")
            continue
        bounds = fig_bip_time._bounds(mine, setup)[0]  # the numbers of fig-bip-time-summary.csv
        b, b_mean = bounds["bip_fastest_seed_max_over_min"], bounds["bip_time_max_over_min"]
        i, i_mean = (imp.loc[imp.index.max(), c] / imp.loc[imp.index.min(), c] for c in ("min", "mean"))
        text = (f"BiP max/min {b:.2f} ({bip['min'].min():.3g}-{bip['min'].max():.3g} s; of the seed means "
                f"{b_mean:.2f}); IMP at {imp.index.max():g}% / at {imp.index.min():g}%: {i:.2f} "
                f"({imp.loc[imp.index.min(), 'min']:.3g} to {imp.loc[imp.index.max(), 'min']:.3g} s; of the seed "
                f"means {i_mean:.2f})")
        outcome = time_outcome(b, i)
        board.add("BiP", "BiP's wall time flat in sparsity while IMP's grows", "fig-bip-time", compared,
                  [Point("time", outcome, text, [{"point": "max/min", "side": "BiP", "value": b, "other": "IMP",
                                                  "other_value": i, "verdict": outcome.verdict}])],
                  rule, (outcome, f"BiP max/min {b:.2f} (flat: < {FLAT:g}), IMP {i:.2f} (grows: > {GROWS:g})"), text)


def _rewind(board: Board) -> None:
    plan, data = board.plan("fig-bip-rewind"), board.data("fig-bip-rewind")
    stats = mean_spread(fig_bip_rewind.tidy(data), ["setup", "x", "rewind"], "acc") if len(data) else None
    for setup, runs in plan.groupby("setup", sort=False):
        xs = pct(_grid(runs, "target_sparsity"))
        points = []
        for x in xs:
            bip = side_of("no retraining", stats, {"setup": setup, "x": x, "rewind": "no retrain"})
            points += [point(f"{x:g}%, rewind {lab}", [bip, side_of(f"rewind {lab}", stats, {
                "setup": setup, "x": x, "rewind": lab})]) for lab in fig_bip_rewind.labels()[1:]]
        board.add("BiP", "BiP without retraining within noise of its masks retrained from any rewinding point",
                  "fig-bip-rewind",
                  f"{setup}: test accuracy (%) of BiP without retraining vs its mask retrained from "
                  f"{len(fig_bip_rewind.labels()) - 1} rewinding points ({', '.join(fig_bip_rewind.labels()[1:])} of the "
                  f"dense training) at {listed(xs)}, {_seeds(runs)}",
                  points, "rewinding rule: holds when at every point the retrained mask is within noise of or below "
                  "BiP (comparison rule on 'no retraining > retrained'), does not hold when one is above beyond "
                  "noise", no_better_than(points))


def _structured(board: Board) -> None:
    plan, data = board.plan("fig-bip-structured"), board.data("fig-bip-structured")
    stats = (mean_spread(BR.tidy(data).assign(structure=lambda d: d["config.structure"]),
                         ["setup", "structure", "method", "x"], "acc") if len(data) else None)
    for (setup, structure), runs in plan.groupby(["setup", "structure"], sort=False):
        xs = pct(_grid(runs, "target_sparsity"))
        where = {"setup": setup, "structure": structure}
        board.add("BiP", f"structured ({structure}-wise) BiP >= Hydra", "fig-bip-structured",
                  f"{setup}, {structure}-wise: test accuracy (%) at {listed(xs)} of the "
                  f"{structure}s removed per conv layer, {_seeds(runs)}",
                  [point(f"{x:g}%", [side_of(BR.LABELS[m], stats, {**where, "method": m, "x": x})
                                     for m in ("bip", "hydra")]) for x in xs], RANGE)


def _ig(board: Board) -> None:
    plan, data = board.plan("fig-bip-ig"), board.data("fig-bip-ig")
    stats = mean_spread(BR.tidy(data), ["setup", "x", "config.ig", "config.gamma"], "acc") if len(data) else None
    gammas = {name: BR.prune_config(setup).gamma for name, setup in BR.setups(board.profile).items()}
    for setup, runs in plan.groupby("setup", sort=False):
        xs = pct(_grid(runs, "target_sparsity"))
        gamma = gammas[setup]
        points = [point(f"{x:g}%", [
            side_of(f"IG (gamma {gamma:g})", stats, {"setup": setup, "x": x, "config.ig": "paper",
                                                     "config.gamma": float(gamma)}),
            side_of("no IG", stats, {"setup": setup, "x": x, "config.ig": "none"})], two_sided=True) for x in xs]
        board.add("BiP", "the implicit-gradient term changes accuracy", "fig-bip-ig",
                  f"{setup}: test accuracy (%) of BiP with the IG term at the configs' gamma ({gamma:g}) vs without "
                  f"it (--ig none) at {listed(xs)}, {_seeds(runs)}",
                  points, "IG rule: two-sided comparison (a difference of either sign beyond both spreads holds; "
                  "within noise: inconclusive), majority over the points")


# --------------------------------------------------------------------------------------------------------- SA++
SHORT = {"sapp": "SA++", "acdc": "ACDC", "magnitude": "magnitude", "powerprop": "PowerProp",  # method -> shown as
         "ours": "ours", "holistic": "holistic", "layerwise": "layer-wise", "none": "no reconstruction"}
# (claim, the variants of tab-seqattn-ablations the default SA++ must beat: (ablation, variant, shown as))
ABLATIONS = [
    ("removing the sparsification phase hurts", [("sparsification phase", "removed", "no sparsification phase")]),
    ("c = 4 beats c = 2 and c = 8", [("exponential c", "c = 2", "c = 2"), ("exponential c", "c = 8", "c = 8")]),
    ("normalized (softmax) attention beats unnormalized exp(L)",
     [("attention", "unnormalized exp(L)", "unnormalized exp(L)")]),
    ("very short dense phases hurt", [("short dense phases", "short", "short dense phases")]),
]


def _metric(dataset: str) -> tuple[str, str, bool, int]:
    """figures.seqattn.runs.metric for a setup's dataset, and the digits its values are shown with."""
    value, label, higher = SR.metric(pd.DataFrame({"config.dataset": [dataset]}))
    return value, label, higher, 2 if value == "accuracy" else 4


def seqattn_claims(board: Board) -> None:
    _oneshot(board)
    plan, data = board.plan("tab-seqattn-blocks"), board.data("tab-seqattn-blocks")
    if len(data):
        data = SR.with_accuracy(data).assign(setup=data.apply(SR.setup_label, axis=1))
    for setup, runs in plan.groupby("setup", sort=False):
        value, label, higher, digits = _metric(runs["dataset"].iloc[0])
        part = data[data["setup"] == setup] if len(data) else data
        stats = mean_spread(part, ["config.method", "config.block", "config.sparsity"], value) if len(part) else None
        cells = sorted(set(zip(runs["block"], runs["sparsity"])))
        methods = set(runs["method"])

        def at(b, s, chain_):
            return point(f"{b}x{b}, {100 * s:g}%", [side_of(SHORT[m], stats, {
                "config.method": m, "config.block": b, "config.sparsity": float(s)}) for m in chain_],
                higher=higher, digits=digits)

        order = [m for m in ("sapp", "acdc", "magnitude") if m in methods]
        high = [(b, s) for b, s in cells if s >= HIGH_BLOCK_SPARSITY]
        board.add("SA++", f"{' > '.join(SHORT[m] for m in order)} at high block sparsity "
                  f"(>= {100 * HIGH_BLOCK_SPARSITY:g}%)", "tab-seqattn-blocks",
                  f"{setup}: {label} at {len(high)} cells (block size x sparsity >= {100 * HIGH_BLOCK_SPARSITY:g}%), "
                  f"{_seeds(runs)} each", [at(b, s, order) for b, s in high], CHAIN)
        if {"powerprop", "magnitude"} <= methods:
            board.add("SA++", "block PowerProp beats block magnitude", "tab-seqattn-blocks",
                      f"{setup}: {label} at every cell of the table ({len(cells)}: block sizes "
                      f"{', '.join(str(b) for b in sorted(set(runs['block'])))} x sparsities "
                      f"{listed(pct(runs['sparsity']))}), {_seeds(runs)}",
                      [at(b, s, ("powerprop", "magnitude")) for b, s in cells], RANGE)
    _ablations(board)


def _oneshot(board: Board) -> None:
    plan, data = board.plan("fig-seqattn-oneshot"), board.data("fig-seqattn-oneshot")
    tidy = fig_seqattn_oneshot.tidy(data) if len(data) else None
    stats = fig_seqattn_oneshot.score_stats(tidy) if tidy is not None else None
    gains = None
    if tidy is not None:  # per seed: attention - magnitude (the two share the dense recipe, seed and data order)
        gains = tidy.pivot_table(index=["config.block", "sparsity", "config.seed"], columns="config.score",
                                 values="accuracy").reset_index()
        gains["gain"] = gains.get("attention", np.nan) - gains.get("magnitude", np.nan)
    setup, blocks, seeds = plan["setup"].iloc[0], sorted(set(plan["block"])), _seeds(plan)
    sparsities = sorted(set(s for t in plan["sparsities"] for s in t))
    points = [point(f"{b}x{b}, {100 * s:g}%", [side_of(score, stats, {"config.score": score, "config.block": b,
                                                                     "sparsity": float(s)})
                                               for score in ("attention", "magnitude")])
              for b in blocks for s in sparsities]
    board.add("SA++", "one-shot softmax-attention scores beat magnitude scores", "fig-seqattn-oneshot",
              f"{setup}: test accuracy (%) after one-shot block pruning + fine-tuning, attention vs magnitude scores, "
              f"at {len(points)} cells (block sizes {', '.join(map(str, blocks))} x sparsities "
              f"{listed(pct(sparsities))}), {seeds}", points, RANGE)
    big, small = blocks[-1], blocks[0]

    def gain(b, s):
        if gains is None:
            return Side(f"gain {b}x{b}")
        sel = (gains["config.block"] == b) & np.isclose(gains["sparsity"], s)
        return Side.of(f"gain {b}x{b}", gains.loc[sel, "gain"])

    board.add("SA++", "one-shot attention's gain over magnitude grows with the block size", "fig-seqattn-oneshot",
              f"{setup}: the per-seed gain (attention - magnitude, pt) at the largest block size ({big}x{big}) vs the "
              f"smallest ({small}x{small}), at each of the {len(sparsities)} sparsities, {seeds}",
              [point(f"{100 * s:g}%", [gain(big, s), gain(small, s)]) for s in sparsities], RANGE)


def _ablations(board: Board) -> None:
    name = "tab-seqattn-ablations"
    plan, data = board.plan(name), board.data(name)
    data = SR.with_accuracy(data) if len(data) else data
    value, label, higher, digits = _metric(plan["dataset"].iloc[0])
    focus = SR.FOCUS[board.profile]["block"]
    variants = {(a, v): (overrides, block) for a, v, overrides, block in tab_seqattn_ablations._variant_rows(
        board.profile)}
    sparsities = _grid(plan, "sparsity", block=focus)

    def side(lab, s, key=None):
        overrides, block = variants[key] if key else ({}, focus)
        if data.empty:
            return Side(lab)
        return Side.of(lab, tab_seqattn_ablations._select(data, "sapp", block, s, **{
            **tab_seqattn_ablations.DEFAULTS, **overrides})[value])

    for claim, keys in ABLATIONS:
        default = "c = 4" if keys[0][0] == "exponential c" else "default SA++"
        points = [point(f"{100 * s:g}%", [side(default, s)] + [side(shown, s, (a, v)) for a, v, shown in keys],
                        links=[(0, k) for k in range(1, len(keys) + 1)], higher=higher, digits=digits)
                  for s in sparsities]
        board.add("SA++", claim, name,
                  f"{plan['setup'].iloc[0]}: {label} of the default SA++ ({focus}x{focus} blocks) vs "
                  f"{' and '.join(shown for _, _, shown in keys)} at "
                  f"{listed(pct(sparsities))}, {_seeds(plan)}", points,
                  CHAIN if len(keys) > 1 else RANGE)


# ---------------------------------------------------------------------------------------------------------- GMP
def gmp_claims(board: Board) -> None:
    for name, claim in (("fig-gmp-vs-oneshot", "GMP beats one-shot magnitude pruning + fine-tuning at high sparsity "
                                               f"(>= {100 * HIGH_SPARSITY:g}%)"),
                        ("fig-gmp-wd", "dropping weight decay in fine-tuning helps")):
        plan, data = board.plan(name), board.data(name)
        if len(data):
            data = data.assign(setup=data.apply(GR.setup_label, axis=1), accuracy=100 * data["test_acc"])
        for setup, runs in plan.groupby("setup", sort=False):
            xs = [s for s in _grid(runs, "target_sparsity") if name == "fig-gmp-wd" or s >= HIGH_SPARSITY]

            def side(lab, s, **sel):
                if data.empty:
                    return Side(lab)
                rows = data[(data["setup"] == setup) & np.isclose(data["config.target_sparsity"], s)]
                for key, value in sel.items():
                    col = rows[f"config.{key}"]
                    rows = rows[col.isna() if value is None else col == value]
                return Side.of(lab, rows["accuracy"])

            if name == "fig-gmp-vs-oneshot":
                points = [point(f"{100 * s:g}%", [side("GMP", s, method="gmp"), side("one-shot", s, method="oneshot")])
                          for s in xs]
                compared = "GMP (cubic schedule) vs one-shot pruning + fine-tuning, same epochs and learning rates"
            else:
                points = [point(f"{100 * s:g}%", [side("no wd", s, finetune_weight_decay=0.0),
                                                  side("wd kept", s, finetune_weight_decay=None)]) for s in xs]
                compared = "GMP without weight decay in fine-tuning vs with the optimizer's weight decay kept"
            board.add("GMP", claim, name, f"{setup}: test accuracy (%), {compared}, at "
                      f"{listed(pct(xs))}, {_seeds(runs)}", points, RANGE)


# ------------------------------------------------------------------------------------------------ post-training
def posttrain_claims(board: Board) -> None:
    plan, data = board.plan("fig-posttrain-ablation"), board.data("fig-posttrain-ablation")
    stats = None
    if len(data):
        stats = mean_spread(data.assign(variant=data.apply(fig_posttrain_ablation.variant, axis=1),
                                        top1=100 * data["test_acc"]), ["variant", "config.ratio"], "top1")
    ratios = _grid(plan, "ratio")
    board.add("post-training", " > ".join(fig_posttrain_ablation.VARIANTS), "fig-posttrain-ablation",
              f"{plan['setup'].iloc[0]}: test top-1 (%) at channel ratios {listed(pct(ratios))}, "
              f"{_seeds(plan, 'sample_seed', 'calibration draw')}",
              [point(f"{100 * r:g}%", [side_of(v, stats, {"variant": v, "config.ratio": float(r)})
                                       for v in fig_posttrain_ablation.VARIANTS]) for r in ratios], CHAIN)

    plan, data = board.plan("tab-posttrain"), board.data("tab-posttrain")
    table = tab_posttrain.table(data) if len(data) else None
    order = ("ours", "holistic", "layerwise", "none")
    for setup, runs in plan.groupby("setup", sort=False):
        ratio = runs["ratio"].iloc[0]
        sides = [side_of(SHORT[m], table, {"model": setup, "method": PR.LABELS[m]},
                         ("top1", "top1_min", "top1_max", "draws")) for m in order]
        board.add("post-training", "ours > holistic (gAP-like) > layer-wise (AdaPrune-like) > no reconstruction",
                  "tab-posttrain", f"{setup}: test top-1 (%) at channel ratio {100 * ratio:g}%, "
                  f"{_seeds(runs[runs['method'] == 'ours'], 'sample_seed', 'calibration draw')}",
                  [point(f"ratio {100 * ratio:g}%", sides)], CHAIN)
    _samples(board)
    _calibration_time(board)


def _samples(board: Board) -> None:
    plan, data = board.plan("fig-posttrain-samples"), board.data("fig-posttrain-samples")
    stats = mean_spread(data.assign(top1=100 * data["test_acc"]), ["config.samples"], "top1") if len(data) else None
    counts, draws = _grid(plan, "samples"), _seeds(plan, "sample_seed", "calibration draw")
    setup = plan["setup"].iloc[0]
    default = PR.config(PR.SAMPLES_SETUP[board.profile]).samples
    at = default if default in counts else counts[-1]
    sides = {n: side_of(f"{n} samples", stats, {"config.samples": n}) for n in counts}
    s = sides[at]
    if not s.n:
        p = Point(f"{at} samples", Outcome(NOT_RUN), f"{at} samples: not run")
    elif s.n < 2:
        p = Point(f"{at} samples", Outcome(INCONCLUSIVE, SINGLE), f"{at} samples: a single draw, no spread")
    else:
        p = threshold(f"{at} samples", s.spread, SMALL_SPREAD,
                      f"spread {s.spread:.2f} pt ({s.text()}; the spread at each count: "
                      + ", ".join(f"{n}: {sides[n].spread:.2f}" for n in counts if sides[n].n) + ")", at_most=True)
    board.add("post-training", "the spread over the calibration draws is small (paper: 0.19 pt over ten ImageNet "
              "draws)", "fig-posttrain-samples",
              f"{setup}: test top-1 (%) over {draws} at the setup's calibration size ({at} samples)",
              [p], f"spread rule: holds when max - min over the draws <= {SMALL_SPREAD:g} pt, does not hold above",
              (p.outcome, p.outcome.why or ("no runs" if not s.n else
                                            f"spread {s.spread:.2f} pt vs <= {SMALL_SPREAD:g} pt")))
    board.add("post-training", "more calibration samples help", "fig-posttrain-samples",
              f"{setup}: test top-1 (%) with the most ({counts[-1]}) vs the fewest ({counts[0]}) calibration samples, "
              f"{draws} each", [point(f"{counts[-1]} vs {counts[0]}", [sides[counts[-1]], sides[counts[0]]])],
              RANGE)


def _calibration_time(board: Board) -> None:
    plan, data = board.plan("fig-posttrain-time"), board.data("fig-posttrain-time")
    ratios = _grid(plan, "ratio")
    table = (fig_posttrain_time.table(data) if len(data) and {"ours", "l1"} <= set(data["config.method"])
             else pd.DataFrame(columns=["ratio"]))
    points = []
    for r in ratios:
        row = table[np.isclose(table["ratio"].astype(float), r)]
        value = float(row["time_ratio"].iloc[0]) if len(row) else None
        text = (f"{row['calibration_s'].iloc[0]:.3g} s vs {row['l1_retrain_s'].iloc[0]:.3g} s = {100 * value:.1f}%"
                if len(row) else "")
        points.append(threshold(f"ratio {100 * r:g}%", value, CHEAP, text))
    board.add("post-training", "calibration costs a small fraction of L1 + retraining's time", "fig-posttrain-time",
              f"{plan['setup'].iloc[0]}: wall time (s) of our calibration vs L1-norm pruning + retraining at channel "
              f"ratios {listed(pct(ratios))}, one run per method and ratio",
              points, f"time rule: at each ratio holds when calibration < {100 * CHEAP:g}% of L1 + retraining's time "
              "(single runs: a threshold needs no spread), majority over the ratios")


# --------------------------------------------------------------------------------------------------------- entry
def runs(profile: str):
    """The union of the runs of every figure the scoreboard reads (each (script, hash) once)."""
    rows, seen = [], set()
    for module in SOURCES.values():
        for script, cfg in module.runs(profile):
            key = (script, Run(script, cfg).hash)
            if key not in seen:
                seen.add(key)
                rows.append((script, cfg))
    return rows


def scoreboard(df: pd.DataFrame, profile: str, points_name: str = "points.csv") -> Board:
    board = Board(df, profile, points_name)
    for claims in (bip_claims, seqattn_claims, gmp_claims, posttrain_claims):
        claims(board)
    return board


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    points = base.with_name(base.name + "-points")
    board = scoreboard(df, profile, points.name + ".csv")
    table = pd.DataFrame(board.rows, columns=COLUMNS)
    count = Counter(table["verdict"])
    caption = (f"Reproduction scoreboard, {profile} profile: {len(table)} claims; "
               + ", ".join(f"{v}: {count[v]}" for v in (HOLDS, FAILS, INCONCLUSIVE, NOT_RUN)) + ". " + RULE)
    paths = save_table(table, base, caption)
    paths[1] = atomic_write(base.with_suffix(".tex"), lambda p: Path(p).write_text(_tex(table, caption)))
    return [*paths, save_csv(pd.DataFrame(board.records), points)]


def _tex(table: pd.DataFrame, caption: str) -> str:
    """The table as a LaTeX longtable (booktabs), every cell escaped."""
    esc = tex_escape
    widths = ("1.3cm", "3cm", "2.2cm", "4cm", "6cm", "3cm", "1.6cm", "2.4cm")
    lines = [r"\begin{longtable}{" + "".join(f"p{{{w}}}" for w in widths) + "}", rf"\caption{{{esc(caption)}}}\\",
             r"\toprule", " & ".join(esc(c) for c in table.columns) + r" \\", r"\midrule", r"\endhead"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{longtable}"]) + "\n"
