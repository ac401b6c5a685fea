"""The claims rule (figures/claims/rule.py): its distributions against printed table values, its verdicts on hand-made
seeds, its errors, and its operating characteristics by seeded Monte Carlo (false holds, power, the margin)."""
import math

import numpy as np
import pytest

from figures.claims import rule as R
from figures.claims.rule import FAILS, HOLDS, INCONCLUSIVE, MIXED, compare, over_range


@pytest.mark.parametrize("p, df, value", [(0.95, 1, 6.3138), (0.95, 2, 2.9200), (0.975, 2, 4.3027),
                                          (0.95, 4, 2.1318), (0.975, 10, 2.2281), (0.995, 30, 2.7500),
                                          (0.95, 120, 1.6577), (0.05, 9, -1.8331)])
def test_t_quantiles_match_the_tables(p, df, value):
    assert R.t_quantile(p, df) == pytest.approx(value, abs=1e-4)
    assert R.t_cdf(R.t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)


def test_t_cdf_and_chi_square_match_closed_forms_and_tables():
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):  # one degree of freedom: Cauchy; two: t / sqrt(2 + t^2)
        assert R.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert R.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert R.t_cdf(1.5, 7.3) + R.t_cdf(-1.5, 7.3) == pytest.approx(1.0)  # a Welch df need not be whole
    for p, df, value in ((0.05, 9, 3.3251), (0.95, 9, 16.9190), (0.05, 2, 0.1026), (0.95, 1, 3.8415)):
        assert R.chi2_quantile(p, df) == pytest.approx(value, abs=1e-4)
    assert R.chi2_cdf(2.0, 2) == pytest.approx(1 - math.exp(-1.0), abs=1e-12)
    with pytest.raises(ValueError):
        R.t_quantile(1.0, 3)


def test_superiority_on_hand_made_seeds():
    a, b = [96.0, 96.5, 97.0], [94.0, 94.4, 94.8]
    c = compare(a, b, paired=True, margin=0.1)
    assert c.verdict == HOLDS and c.estimate == pytest.approx(2.1) and c.lower > 0 and c.n == (3,)
    assert compare(b, a, paired=True, margin=0.1).verdict == FAILS
    noisy = compare([96.0, 95.0, 97.5], [95.9, 95.2, 96.4], paired=True, margin=0.1)  # +0.33, differences +-0.6
    assert noisy.verdict == INCONCLUSIVE and noisy.lower < 0 < noisy.upper
    # identical differences: no spread, the sign and the margin decide
    assert compare([1.0, 2.0], [0.5, 1.5], paired=True, margin=0.1).verdict == HOLDS
    assert compare([1.0, 2.0], [0.95, 1.95], paired=True, margin=0.1).verdict == INCONCLUSIVE  # 0.05 < margin
    # the pairing: a shared seed effect cancels in paired differences, not in Welch's
    seed = np.array([0.0, 2.0, 4.0, 6.0])
    assert compare(seed + 1.0, seed + [0.0, 0.1, -0.1, 0.05], paired=True, margin=0.1).verdict == HOLDS
    welch = compare(seed + 1.0, seed + [0.0, 0.1, -0.1, 0.05], paired=False, margin=0.1)
    assert welch.verdict == INCONCLUSIVE and welch.n == (4, 4) and 5.9 < welch.df <= 6.0
    assert c.interval() == f"{c.estimate:+.2f} [{c.lower:+.2f}, {c.upper:+.2f}]"
    assert c.excludes(3.0) and not c.excludes(2.0)  # a paper's +3 pt is beyond the interval: smaller here


def test_non_inferiority_and_equivalence():
    a, close, far = [90.0, 90.2, 89.9, 90.1], [90.02, 90.21, 89.93, 90.08], [89.0, 89.3, 88.8, 89.1]
    assert compare(a, close, paired=True, margin=0.1, kind="equivalence").verdict == HOLDS
    assert compare(a, far, paired=True, margin=0.1, kind="equivalence").verdict == FAILS
    wide = [90.5, 89.6, 90.4, 89.7]  # differences of +-0.5 around 0: neither inside nor outside the margin
    assert compare(a, wide, paired=True, margin=0.1, kind="equivalence").verdict == INCONCLUSIVE
    assert compare(far, a, paired=True, margin=0.1, kind="non-inferiority").verdict == FAILS
    assert compare(a, far, paired=True, margin=0.1, kind="non-inferiority").verdict == HOLDS
    assert compare(a, close, paired=True, margin=0.1, kind="non-inferiority").verdict == HOLDS


@pytest.mark.parametrize("a, b, paired, message", [
    ([1.0, 2.0, 3.0], [1.0, 2.0], True, "one value per seed"),
    ([1.0], [1.0, 2.0], False, "at least 2"),
    ([1.0, 2.0], [2.0], True, "at least 2"),
    ([1.0, float("nan")], [1.0, 2.0], True, "NaN"),
])
def test_bad_input_is_one_clear_error(a, b, paired, message):
    with pytest.raises(ValueError, match=message):
        compare(a, b, paired=paired, margin=0.1)


def test_holm():
    assert R.holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]  # 0.01 < 0.05/3; 0.03 >= 0.05/2 stops it
    assert R.holm([0.01, 0.02, 0.04], 0.05) == [True, True, True]
    assert R.holm([0.2, 0.001], 0.05) == [False, True]


def test_a_range_is_decided_by_its_omnibus_and_placed_by_holm():
    rng = np.random.default_rng(0)
    seed = rng.normal(0, 0.3, 3)
    # a regime effect: small at low sparsity, large at high, every point positive (paired by seed)
    growing = {f"{x}%": (seed + e + rng.normal(0, 0.05, 3), seed) for x, e in
               ((80, 0.04), (90, 0.06), (95, 0.26), (98, 0.45), (99, 1.26), (99.5, 2.4))}
    r = over_range(growing, margin=0.1)
    assert r.verdict == HOLDS and r.omnibus.estimate == pytest.approx(np.mean([.04, .06, .26, .45, 1.26, 2.4]),
                                                                         abs=0.1)
    assert "99.5%" in r.where(HOLDS) and "80%" not in r.where(HOLDS)
    # one point decidedly reversed, the rest decidedly for: mixed
    both = {"a": (seed + 2.0, seed), "b": (seed + 2.1, seed), "c": (seed - 2.0, seed)}
    both = {k: (a + [0.0, 0.01, -0.01], b) for k, (a, b) in both.items()}
    assert over_range(both, margin=0.1).verdict == MIXED
    with pytest.raises(ValueError):
        over_range({}, margin=0.1)


# ----------------------------------------------------------------------------------- operating characteristics
def rate(verdict, effect, seeds, reps, rng, margin=0.0, sd=1.0, paired=True):
    hits = 0
    for _ in range(reps):
        shared = rng.normal(0, 3.0, seeds)  # a seed effect both sides share
        a = shared + effect + rng.normal(0, sd / math.sqrt(2), seeds)
        b = shared + rng.normal(0, sd / math.sqrt(2), seeds)
        hits += compare(a, b, paired=paired, margin=margin).verdict == verdict
    return hits / reps


def test_false_holds_are_at_most_alpha_under_no_effect():
    rng = np.random.default_rng(1)
    for seeds in (3, 5, 10):  # 2,000 replications: a binomial SD of 0.005 around 0.05
        assert rate(HOLDS, 0.0, seeds, 2000, rng) <= R.ALPHA + 0.015
        assert rate(FAILS, 0.0, seeds, 2000, rng) <= R.ALPHA + 0.015
    assert rate(HOLDS, 0.0, 4, 300, rng, paired=False, sd=3.0) <= R.ALPHA + 0.04  # Welch


def test_power_rises_with_the_seeds():
    rng = np.random.default_rng(2)
    power = [rate(HOLDS, 1.0, seeds, 1000, rng) for seeds in (3, 5, 10)]  # an effect of one SD of the differences
    assert power[0] + 0.1 < power[1] and power[1] + 0.2 < power[2] and power[2] > 0.85


def test_the_margin_stops_a_difference_of_seven_test_images():
    """0.07 pt on 10,000 test images: consistent over seeds, so significant, but below the 0.1 pt margin."""
    rng = np.random.default_rng(3)
    assert rate(HOLDS, 0.07, 10, 300, rng, margin=0.1, sd=0.02) == 0.0
    assert rate(FAILS, 0.07, 10, 300, rng, margin=0.1, sd=0.02) == 0.0
    assert rate(HOLDS, 0.07, 10, 300, rng, margin=0.0, sd=0.02) > 0.95  # without the margin it would decide


def test_a_long_range_without_effects_rarely_decides_a_point():
    """18 points and nothing differs: Holm keeps any point decided either way (and so mixed) near 2 alpha at most."""
    rng = np.random.default_rng(4)
    decided = omnibus = 0
    for _ in range(300):
        shared = rng.normal(0, 1.0, 3)
        r = over_range({i: (shared + rng.normal(0, 0.2, 3), shared + rng.normal(0, 0.2, 3)) for i in range(18)},
                       margin=0.0)
        decided += any(v != INCONCLUSIVE for v in r.decided.values())
        omnibus += r.omnibus.verdict == HOLDS
    assert decided / 300 <= 2 * R.ALPHA + 0.04 and omnibus / 300 <= R.ALPHA + 0.04
