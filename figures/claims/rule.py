"""The claims rule: a confidence-interval verdict on per-seed values, paired by seed where the design pairs them.

``compare(a, b, paired=..., margin=...)`` judges one contrast (one value per seed a side): the mean of a - b with its
one-sided (1 - alpha) bounds, from a t interval of the per-seed differences (paired) or Welch's (unpaired).

- superiority (a > b): holds when the lower bound is > 0 and the estimate >= margin; does not hold when the upper
  bound is < 0 and the estimate <= -margin; otherwise inconclusive.
- non-inferiority (a >= b): holds when the lower bound is > -margin; does not hold when the upper bound is < -margin.
- equivalence (a within margin of b), two one-sided tests: holds when both bounds lie inside (-margin, +margin);
  does not hold when the interval lies outside them (lower bound > margin or upper bound < -margin).

``over_range`` judges a claim over several points: one pre-declared omnibus test (each seed's mean difference over
the points) gives the verdict; per-point tests, Holm-corrected, say where; **mixed** when points are decided in both
directions. The t and chi-square distributions are computed here (no scipy): the regularized incomplete beta and
gamma functions, inverted by bisection.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

HOLDS, FAILS, INCONCLUSIVE, MIXED = "holds", "does not hold", "inconclusive", "mixed"
NOT_RUN, NOT_TESTABLE = "not run", "not testable at this scale"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, MIXED, NOT_RUN, NOT_TESTABLE)
KINDS = ("superiority", "non-inferiority", "equivalence")
ALPHA = 0.05


# ------------------------------------------------------------------------------------------------ distributions
def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def gammainc(a: float, x: float) -> float:
    """The regularized lower incomplete gamma function P(a, x)."""
    if x <= 0.0:
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # series
        term = total = 1.0 / a
        for n in range(1, 1000):
            term *= x / (a + n)
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return math.exp(log_front) * total
    tiny, b = 1e-300, x + 1.0 - a  # continued fraction for Q = 1 - P (modified Lentz)
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 1000):
        an, b = -i * (i - a), b + 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return 1.0 - math.exp(log_front) * h


def chi2_cdf(x: float, df: float) -> float:
    return gammainc(df / 2.0, x / 2.0)


def _invert(cdf, p: float, lo: float, hi: float) -> float:
    """The x with cdf(x) = p (cdf increasing), by bisection after widening [lo, hi] to bracket it."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, not {p}")
    while cdf(lo) > p:
        lo = lo * 2 if lo < 0 else lo / 2
    while cdf(hi) < p:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
        if hi - lo <= 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t with ``df`` degrees of freedom."""
    return _invert(lambda t: t_cdf(t, df), p, -1.0, 1.0)


def chi2_quantile(p: float, df: float) -> float:
    """The p quantile of the chi-square distribution with ``df`` degrees of freedom."""
    return _invert(lambda x: chi2_cdf(x, df), p, 1e-3, max(1.0, 2.0 * df))


# -------------------------------------------------------------------------------------------------- one contrast
@dataclass(frozen=True)
class Comparison:
    """One contrast's verdict, its estimate (mean of a - b) and one-sided (1 - alpha) bounds (together the two-sided
    1 - 2 alpha interval), the seeds (n: pairs, or each side's count), the t distribution's df and the two one-sided
    p-values: of the claim (``p_holds``) and of its opposite (``p_fails``), which ``over_range`` corrects by Holm."""
    verdict: str
    estimate: float
    lower: float
    upper: float
    n: tuple
    df: float
    p_holds: float
    p_fails: float
    kind: str
    margin: float
    alpha: float
    paired: bool

    def interval(self, digits: int = 2) -> str:
        return f"{self.estimate:+.{digits}f} [{self.lower:+.{digits}f}, {self.upper:+.{digits}f}]"

    def excludes(self, effect: float) -> bool:
        """Whether ``effect`` (a - b, e.g. the paper's) lies beyond the interval: the effect here is smaller."""
        return effect > self.upper if effect >= 0 else effect < self.lower


def values(x, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=float).ravel()
    if np.isnan(v).any():
        raise ValueError(f"{name} holds NaN: a failed or missing run is not a value (drop it and report it as not "
                         "run)")
    if len(v) < 2:
        raise ValueError(f"{name} has {len(v)} value(s): an interval needs at least 2 seeds a side")
    return v


def _p_above(excess: float, se: float, df: float) -> float:
    """One-sided p-value of a mean exceeding a bound by ``excess`` (estimate minus bound) with standard error ``se``;
    identical differences (se = 0) decide by their sign alone."""
    if se == 0.0:
        return 0.0 if excess > 0 else 1.0
    return 1.0 - t_cdf(excess / se, df)


def compare(a, b, *, paired: bool, margin: float, alpha: float = ALPHA, kind: str = "superiority") -> Comparison:
    """The rule on one contrast: ``a``, ``b`` one value per seed (the same seed order when ``paired``)."""
    a, b = values(a, "a"), values(b, "b")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    if not (margin >= 0 and 0 < alpha < 0.5):
        raise ValueError(f"margin {margin} must be >= 0 and alpha {alpha} in (0, 0.5)")
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired sides need one value per seed each: {len(a)} vs {len(b)}")
        d = a - b
        est, se, df, n = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1.0, (len(d),)
    else:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        est, se, n = float(a.mean() - b.mean()), float(math.sqrt(va + vb)), (len(a), len(b))
        df = ((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0
              else len(a) + len(b) - 2.0)
    q = t_quantile(1.0 - alpha, df)
    lower, upper = est - q * se, est + q * se
    above = lambda c: _p_above(est - c, se, df)  # noqa: E731  one-sided p of H1: mean > c
    below = lambda c: _p_above(c - est, se, df)  # noqa: E731  one-sided p of H1: mean < c
    if kind == "superiority":
        p_holds, p_fails = above(0.0), below(0.0)
        ok, bad = est >= margin, est <= -margin
    elif kind == "non-inferiority":
        p_holds, p_fails = above(-margin), below(-margin)
        ok = bad = True
    else:
        p_holds, p_fails = max(above(-margin), below(margin)), min(above(margin), below(-margin))
        ok = bad = True
    verdict = HOLDS if p_holds < alpha and ok else FAILS if p_fails < alpha and bad else INCONCLUSIVE
    return Comparison(verdict, est, lower, upper, n, df, p_holds, p_fails, kind, margin, alpha, paired)


# ------------------------------------------------------------------------------------------------- over a range
def holm(pvalues, alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down: which of the hypotheses are rejected with the family-wise error rate <= alpha."""
    p = list(pvalues)
    rejected = [False] * len(p)
    for rank, i in enumerate(sorted(range(len(p)), key=lambda k: p[k])):
        if p[i] >= alpha / (len(p) - rank):
            break
        rejected[i] = True
    return rejected


@dataclass
class Range:
    """A claim over points: the omnibus comparison (its verdict, or mixed), each point's comparison and where the
    Holm-corrected per-point tests decide it (holds / does not hold / undecided)."""
    verdict: str
    omnibus: Comparison
    points: dict = field(default_factory=dict)  # point -> Comparison
    decided: dict = field(default_factory=dict)  # point -> HOLDS, FAILS or INCONCLUSIVE (undecided)

    def where(self, verdict: str) -> list:
        return [p for p, v in self.decided.items() if v == verdict]


def over_range(pairs: dict, *, margin: float, alpha: float = ALPHA, kind: str = "superiority",
               omnibus: tuple | None = None) -> Range:
    """``pairs``: point -> (a, b), per-seed values paired within each point. The omnibus contrast is each seed's mean
    over the points (``omnibus``: those means, given where the points' seeds differ; by default computed from
    ``pairs``, whose points must then share their seeds in the same order); per-point decisions are Holm-corrected
    over the points."""
    if not pairs:
        raise ValueError("a range needs at least one point")
    if omnibus is None:
        omnibus = (np.mean([values(x, f"a at {p}") for p, (x, _) in pairs.items()], axis=0),
                   np.mean([values(y, f"b at {p}") for p, (_, y) in pairs.items()], axis=0))
    omnibus = compare(*omnibus, paired=True, margin=margin, alpha=alpha, kind=kind)
    points = {p: compare(x, y, paired=True, margin=margin, alpha=alpha, kind=kind) for p, (x, y) in pairs.items()}
    ups = holm([c.p_holds for c in points.values()], alpha)
    downs = holm([c.p_fails for c in points.values()], alpha)
    decided = {}
    for (p, c), up, down in zip(points.items(), ups, downs):
        ok = c.estimate >= margin if kind == "superiority" else True
        bad = c.estimate <= -margin if kind == "superiority" else True
        decided[p] = HOLDS if up and ok else FAILS if down and bad else INCONCLUSIVE
    both = HOLDS in decided.values() and FAILS in decided.values()
    return Range(MIXED if both else omnibus.verdict, omnibus, points, decided)
