"""The scoreboard's rows: the runs a figure plans and the store holds, per-seed values, and a claim judged by the rule
(``figures.claims.rule``) from them -- a range (one link) or a chain of links (A > B > C), each row stating what was
compared, the regime, the estimate with its interval, where the claim holds and how it stands to the paper's effect.
Its points CSV is long: one row per claim, link, point and seed with both sides' values and their difference."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.store import Run
from figures.claims import rule as R
from figures.claims.rule import FAILS, HOLDS, INCONCLUSIVE, MIXED, NOT_RUN, NOT_TESTABLE

MARGIN = 0.1   # pt: the practical margin, 10 of 10,000 test images, unless a claim states its own
LISTED = 8     # a link of at most this many points lists each point's estimate; a longer one only where it holds
NAMED = 4      # missing runs named in a "not run" row (then a count)
FIELDS = ("method", "seed", "target_sparsity", "structure", "score", "block", "sparsity", "sparsities", "ratio",
          "samples", "sample_seed", "finetune_weight_decay")
COLUMNS = ["paper", "claim", "figure", "compared", "regime", "measured", "rule", "verdict", "detail", "vs paper"]


@dataclass
class Link:
    """One contrast of a claim: ``a`` claimed better than (``kind``: at least as good as, within ``margin`` of) ``b``,
    at each point (point -> (Series a, Series b), indexed by seed); ``paper``: the paper's own effect a - b, if stated;
    ``lower``: lower is better (losses), so the rule sees b - a."""
    a: str
    b: str
    points: dict
    kind: str = "superiority"
    margin: float = MARGIN
    paper: float | None = None
    lower: bool = False
    digits: int = 2

    @property
    def name(self) -> str:
        sign = {"superiority": ">", "non-inferiority": ">=", "equivalence": "~"}[self.kind]
        return f"{self.a} {sign} {self.b}"


def per_seed(rows: pd.DataFrame, value: str, seed: str = "config.seed") -> pd.Series:
    """One value per seed (the mean where a seed has several rows), indexed by seed, NaNs dropped."""
    if rows.empty or value not in rows:
        return pd.Series(dtype=float)
    return rows.groupby(seed)[value].mean().dropna().astype(float)


def judge(link: Link) -> tuple[R.Range | None, list, str]:
    """The rule on a link, paired by seed: each point on the seeds both its sides have, the omnibus (each seed's
    mean over the points) on the seeds every point has. Returns (range, those seeds, why not judged)."""
    sign = -1.0 if link.lower else 1.0
    pairs, seeds = {}, None
    for p, (a, b) in link.points.items():
        mine = sorted(set(a.index) & set(b.index))
        if len(mine) < 2:
            return None, mine, f"{len(mine)} seed(s) with both sides at {p}: an interval needs 2"
        pairs[p] = (sign * a.loc[mine].to_numpy(), sign * b.loc[mine].to_numpy())
        seeds = set(mine) if seeds is None else seeds & set(mine)
    seeds = sorted(seeds)
    if len(seeds) < 2:
        return None, seeds, f"{len(seeds)} seed(s) shared by every point: an interval needs 2"
    omnibus = tuple(sign * np.mean([side.loc[seeds].to_numpy() for side in sides], axis=0)
                    for sides in zip(*link.points.values()))
    return R.over_range(pairs, margin=link.margin, kind=link.kind, omnibus=omnibus), seeds, ""


def chain(verdicts: list[str]) -> str:
    """A claim of several links: does not hold when one does not; mixed when one is mixed; holds when all hold."""
    for verdict in (NOT_RUN, FAILS, MIXED, INCONCLUSIVE):
        if verdict in verdicts:
            return verdict
    return HOLDS


def listed(points) -> str:
    return ", ".join(map(str, points)) if points else "none"


def describe(link: Link, r: R.Range | None, seeds: list, why: str) -> tuple[str, str, str]:
    """(measured, detail, vs paper) texts of one judged link."""
    unit = " (loss: lower is better; the estimate is b - a)" if link.lower else ""
    if r is None:
        return f"{link.name}: not judged ({why})", why, ""
    d = link.digits
    n = len(link.points)
    counts = sorted({c.n[0] for c in r.points.values()})
    text = (f"{link.name}{unit}: mean difference over {n} point{'s' * (n > 1)} x {len(seeds)} seeds "
            f"{r.omnibus.interval(d)} ({100 * (1 - 2 * r.omnibus.alpha):g}% interval)"
            + (f"; each point on its own seeds ({'-'.join(map(str, (counts[0], counts[-1])))})"
               if len(counts) > 1 or counts[0] != len(seeds) else ""))
    if 1 < n <= LISTED:
        text += "; per point " + ", ".join(f"{p}: {c.interval(d)}" for p, c in r.points.items())
    detail = (f"{link.name}: {r.verdict}; per point (Holm): holds at {listed(r.where(HOLDS))}, does not hold at "
              f"{listed(r.where(FAILS))}")
    if link.paper is None:
        versus = f"{link.name}: the paper states no effect size"
    else:
        paper = -link.paper if link.lower else link.paper
        versus = (f"{link.name}: the paper's {link.paper:+.{d}f} "
                  + ("is excluded: smaller than the paper's here" if r.omnibus.excludes(paper)
                     else "lies within the interval"))
    return text, detail, versus


def rule_text(links: list[Link]) -> str:
    if not links:
        return ""
    kinds = sorted({(k.kind, k.margin) for k in links})
    return ("; ".join(f"{kind}, margin {margin:g}" for kind, margin in kinds)
            + f"; paired by seed, one-sided {100 * (1 - R.ALPHA):g}% bounds; omnibus over the points, Holm per point"
            + ("; a chain holds when every link holds" if len(links) > 1 else ""))


class Board:
    """The rows of the scoreboard and their per-seed records, from ``df`` (the store's rows of its runs)."""

    def __init__(self, df: pd.DataFrame, profile: str, sources: dict):
        self.df, self.profile, self.sources = df, profile, sources
        self.rows, self.records, self._plans = [], [], {}

    def plan(self, name: str) -> pd.DataFrame:
        """One row per run of figure ``name``: script, hash, setup, dataset, config (``cfg``) and selected fields."""
        if name not in self._plans:
            rows = [{"script": script, "hash": Run(script, cfg).hash, "setup": f"{cfg.model} / {cfg.dataset}",
                     "dataset": cfg.dataset, "cfg": cfg, **{f: getattr(cfg, f) for f in FIELDS if hasattr(cfg, f)}}
                    for script, cfg in self.sources[name].runs(self.profile)]
            self._plans[name] = pd.DataFrame(rows)
        return self._plans[name]

    def data(self, name: str) -> pd.DataFrame:
        """The store's rows of figure ``name``'s runs (what the pipeline would hand its ``draw``)."""
        if self.df.empty or "hash" not in self.df:
            return pd.DataFrame()
        return self.df[self.df["hash"].isin(set(self.plan(name)["hash"]))].reset_index(drop=True)

    def not_run(self, paper: str, claim: str, name: str, compared: str, plan: pd.DataFrame | None = None,
                metric: str = "test_acc") -> bool:
        """Whether runs of the claim (``plan``, as for ``missing``) are missing; if so its row says "not run", naming
        them."""
        missing = self.missing(name, plan, metric)
        if missing:
            self.add(paper, claim, name, compared, "", [], missing)
        return bool(missing)

    @staticmethod
    def seeds_text(runs: pd.DataFrame, keys) -> str:
        """How many seeds the planned ``runs`` give each arm and point (``keys``: the columns that name one):
        "5 seeds", or "2-5 seeds per point" where the table gives some points fewer."""
        n = runs.groupby(list(keys))["seed"].nunique()
        lo, hi = (int(n.min()), int(n.max())) if len(n) else (0, 0)
        return f"{hi} seeds" if lo == hi else f"{lo}-{hi} seeds per point"

    def missing(self, name: str, plan: pd.DataFrame | None = None, metric: str = "test_acc") -> list[str]:
        """The planned runs (of ``plan``, a part of figure ``name``'s) that the store lacks or that have no
        ``metric`` (failed), each named by script, hash and its selecting fields."""
        plan = self.plan(name) if plan is None else plan
        data = self.data(name)
        done = set() if data.empty or metric not in data else set(data.loc[data[metric].notna(), "hash"])
        out = []
        for _, run in plan[~plan["hash"].isin(done)].iterrows():
            fields = ", ".join(f"{f} {run[f]}" for f in FIELDS if f in run and not _blank(run[f]))
            out.append(f"{run['script']} {run['hash'][:12]} ({fields})")
        return out

    def add(self, paper: str, claim: str, figure: str, compared: str, regime: str, links: list[Link],
            missing: list[str] = (), budget: str = "") -> str:
        """A claim judged by the rule on its links; a claim with runs missing is "not run" with them named."""
        if missing:
            return self.put(paper, claim, figure, compared, regime, "not run", rule_text(links), NOT_RUN,
                            f"{len(missing)} run(s) missing or failed: " + "; ".join(missing[:NAMED])
                            + (f"; and {len(missing) - NAMED} more" if len(missing) > NAMED else ""))
        if not links or not all(link.points for link in links):
            return self.put(paper, claim, figure, compared, regime, "no grid point in the regime", rule_text(links),
                            NOT_TESTABLE, "the claim's regime holds no grid point at this scale")
        texts, details, versus, verdicts = [], [], [], []
        for link in links:
            r, seeds, why = judge(link)
            text, detail, vs = describe(link, r, seeds, why)
            texts.append(text), details.append(detail), versus.append(vs)
            verdicts.append(r.verdict if r is not None else INCONCLUSIVE)
            self._record(paper, claim, figure, link, r, seeds)
        verdict = chain(verdicts)
        detail = "; ".join(details) + (f". Budget: {budget}" if budget else "")
        return self.put(paper, claim, figure, compared, regime, "; ".join(texts), rule_text(links), verdict, detail,
                        "; ".join(v for v in versus if v))

    def put(self, paper, claim, figure, compared, regime, measured, rule, verdict, detail, versus="") -> str:
        self.rows.append(dict(zip(COLUMNS, (paper, claim, figure, compared, regime, measured, rule, verdict, detail,
                                            versus))))
        return verdict

    def untestable(self, paper: str, claim: str, figure: str, compared: str, reason: str, missing=()) -> str:
        """A claim the design makes vanish at this scale: the measured reason (quantity and value) in the row."""
        if missing:
            return self.add(paper, claim, figure, compared, "", [], missing)
        return self.put(paper, claim, figure, compared, "", reason, "testability: the contrast's design quantity "
                        "against its stated threshold", NOT_TESTABLE, reason)

    def _record(self, paper, claim, figure, link: Link, r: R.Range | None, seeds: list) -> None:
        """One record per point and seed: both values and a - b; the point's estimate, bounds and Holm decision in
        the rule's orientation (claimed better minus other: b - a for a loss)."""
        for point, (a, b) in link.points.items():
            c = r.points[point] if r is not None else None
            for seed in sorted(set(a.index) | set(b.index)):
                va, vb = a.get(seed, np.nan), b.get(seed, np.nan)
                self.records.append({
                    "paper": paper, "claim": claim, "figure": figure, "link": link.name, "point": point,
                    "seed": seed, "paired": seed in a.index and seed in b.index, "omnibus": seed in seeds,
                    "side": link.a, "value": va, "other": link.b,
                    "other_value": vb, "difference": va - vb,
                    "point_estimate": np.nan if c is None else c.estimate,
                    "point_lower": np.nan if c is None else c.lower, "point_upper": np.nan if c is None else c.upper,
                    "point_decided": "" if r is None else r.decided[point]})


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
