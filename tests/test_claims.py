"""tab-claims, the reproduction scoreboard: its verdict rule on hand-made numbers, and its runs are exactly the union of
the runs of the figures it reads."""
import pandas as pd
import pytest

from common.store import Run
from figures import pipeline
from figures.claims import tab_claims as T
from figures.claims.tab_claims import FAILS, HOLDS, INCONCLUSIVE, NOT_RUN, Side

# the figures whose numbers the scoreboard judges
READS = ("fig-bip-trajectory", "tab-bip-tickets", "fig-bip-time", "fig-bip-rewind", "fig-bip-structured",
         "fig-bip-ig", "fig-seqattn-oneshot", "tab-seqattn-blocks", "tab-seqattn-ablations", "fig-gmp-vs-oneshot",
         "fig-gmp-wd", "fig-posttrain-ablation", "tab-posttrain", "fig-posttrain-samples", "fig-posttrain-time")


def seeds(label, *values):
    return Side.of(label, values)


def test_the_comparison_rule_on_hand_made_numbers():
    a, b = seeds("A", 96.0, 96.5, 97.0), seeds("B", 94.0, 94.4, 94.8)  # d = +2.1, spreads 1.0 and 0.8
    assert T.judge(a, b).verdict == HOLDS
    assert T.judge(b, a).verdict == FAILS                      # the claim says B > A: the opposite sign, beyond noise
    assert T.judge(b, a, higher=False).verdict == HOLDS        # a loss: lower is better
    assert T.judge(b, a, two_sided=True).verdict == HOLDS      # "changes": either sign
    wide = seeds("C", 93.0, 95.0, 97.5)                        # d = +1.33 < its spread 4.5
    assert T.judge(a, wide) == T.Outcome(INCONCLUSIVE, T.NOISE)
    assert T.judge(wide, a) == T.Outcome(INCONCLUSIVE, T.NOISE)
    assert T.judge(a, seeds("D", 95.0, 95.0, 95.0)).verdict == HOLDS  # identical runs: no spread, d = +1.5
    assert T.judge(a, seeds("E", 96.5, 96.5)) == T.Outcome(INCONCLUSIVE, T.NOISE)  # d = 0
    assert T.judge(a, seeds("one", 90.0)) == T.Outcome(INCONCLUSIVE, T.SINGLE)      # a single run has no spread
    missing = T.judge(a, Side("F"))
    assert missing.verdict == NOT_RUN and "F" in missing.why
    assert T.judge(a, seeds("G", float("nan"))).verdict == NOT_RUN  # a NaN metric is no run


def test_chains_ranges_and_the_rules_of_their_own():
    a, b, c = seeds("A", 97, 97.2), seeds("B", 95, 95.2), seeds("C", 90, 91)
    assert T.point("p", [a, b, c]).outcome.verdict == HOLDS
    assert T.point("p", [a, c, b]).outcome.verdict == FAILS        # one link fails: the chain fails
    p = T.point("p", [a, b, seeds("C", 94, 96)])
    assert p.outcome == T.Outcome(INCONCLUSIVE, T.NOISE) and "A - B = +2.00" in p.text
    assert T.point("p", [a, b, Side("C")]).outcome.verdict == NOT_RUN
    assert T.point("p", [a, b, c], links=[(0, 1), (0, 2)]).outcome.verdict == HOLDS

    def pts(*verdicts):
        return [T.Point(str(i), T.Outcome(v, T.SINGLE if v == INCONCLUSIVE else ""), "") for i, v in
                enumerate(verdicts)]

    assert T.over_range(pts(HOLDS, HOLDS, INCONCLUSIVE)) == (T.Outcome(HOLDS), "holds at 2/3, does not hold at 0/3, "
                                                             "inconclusive at 1/3 (1 with a single run) points")
    assert T.over_range(pts(HOLDS, INCONCLUSIVE))[0].verdict == INCONCLUSIVE    # no majority
    assert T.over_range(pts(HOLDS, HOLDS, FAILS))[0].verdict == INCONCLUSIVE    # holds at most, fails at one
    assert T.over_range(pts(FAILS, FAILS, INCONCLUSIVE))[0].verdict == FAILS
    assert T.over_range(pts(HOLDS, NOT_RUN))[0].verdict == NOT_RUN
    assert T.over_range([])[0].verdict == NOT_RUN
    # BiP without retraining: within noise everywhere is what the claim predicts
    assert T.no_better_than(pts(HOLDS) + [T.Point("n", T.Outcome(INCONCLUSIVE, T.NOISE), "")])[0].verdict == HOLDS
    assert T.no_better_than(pts(HOLDS, FAILS))[0].verdict == FAILS
    assert T.no_better_than(pts(HOLDS, INCONCLUSIVE))[0].verdict == INCONCLUSIVE  # a single run
    assert T.no_better_than(pts(NOT_RUN))[0].verdict == NOT_RUN
    assert [T.ticket_outcome(*x).verdict for x in ((89.3, 86.6), (86.6, 86.6), (79.0, 86.6), (None, 20.0),
                                                   (20.0, None), (None, None))] == \
        [HOLDS, HOLDS, FAILS, FAILS, HOLDS, INCONCLUSIVE]
    assert [T.time_outcome(*x).verdict for x in ((1.1, 13), (2.6, 13), (1.1, 1.2), (1.7, 13))] == \
        [HOLDS, FAILS, FAILS, INCONCLUSIVE]
    assert T.threshold("t", 0.04, T.CHEAP, "").outcome.verdict == HOLDS
    assert T.threshold("t", 0.12, T.CHEAP, "").outcome.verdict == FAILS
    assert T.threshold("t", 1.0, 1.0, "", at_most=True).outcome.verdict == HOLDS
    assert T.threshold("t", None, T.CHEAP, "").outcome.verdict == NOT_RUN


def test_sides_are_read_from_the_figures_statistics():
    stats = pd.DataFrame({"method": ["bip", "imp"], "x": [86.58, 86.58], "mean": [96.2, 96.8], "min": [95.8, 96.4],
                          "max": [96.4, 96.9], "count": [3, 3]})
    assert T.side_of("BiP", stats, {"method": "bip", "x": 86.58}) == Side("BiP", 96.2, 95.8, 96.4, 3)
    assert T.side_of("BiP", stats, {"method": "bip", "x": 91.41}) == Side("BiP")
    assert T.side_of("BiP", None, {"method": "bip"}) == Side("BiP")


@pytest.mark.parametrize("profile", pipeline.PROFILES)
def test_its_runs_are_the_union_of_the_figures_it_reads(profile):
    mine = [(s, Run(s, c).hash) for s, c in T.runs(profile)]
    assert len(mine) == len(set(mine))
    theirs = {(s, Run(s, c).hash) for name in READS for s, c in pipeline.figure_module(name).runs(profile)}
    assert set(mine) == theirs
    assert set(T.SOURCES) == set(READS)


def test_claims_without_runs_are_not_run(tmp_path):
    paths = T.draw(pd.DataFrame(), "tiny", tmp_path / "tab-claims")
    assert [p.name for p in paths] == ["tab-claims.md", "tab-claims.tex", "tab-claims.csv", "tab-claims-points.csv"]
    table = pd.read_csv(tmp_path / "tab-claims.csv")
    assert len(table) > 20 and set(table["verdict"]) == {NOT_RUN} and set(table["figure"]) == set(READS)
    assert "Rule:" in paths[0].read_text().splitlines()[0] and r"\%" in paths[1].read_text()


def test_rows_are_judged_from_the_store_rows_of_the_figures_runs(tmp_path):
    """A hand-made store of the GMP figures' runs: GMP 5 pt above one-shot at every seed, weight decay making no
    difference; every other claim has no runs."""
    from figures.gmp import fig_gmp_vs_oneshot, fig_gmp_wd

    rows = {}
    for script, cfg in fig_gmp_vs_oneshot.runs("tiny") + fig_gmp_wd.runs("tiny"):
        acc = 0.9 + 0.001 * cfg.seed + (0.05 if cfg.method == "gmp" else 0.0)
        rows[Run(script, cfg).hash] = {
            "script": script, "hash": Run(script, cfg).hash, "config.model": cfg.model, "config.dataset": cfg.dataset,
            "config.method": cfg.method, "config.seed": cfg.seed, "config.target_sparsity": cfg.target_sparsity,
            "config.finetune_weight_decay": cfg.finetune_weight_decay, "test_acc": acc}
    T.draw(pd.DataFrame(list(rows.values())), "tiny", tmp_path / "tab-claims")
    table = pd.read_csv(tmp_path / "tab-claims.csv").set_index("figure")
    assert table.loc["fig-gmp-vs-oneshot", "verdict"] == HOLDS
    assert table.loc["fig-gmp-vs-oneshot", "detail"].startswith("holds at 4/4")  # 80, 90, 95, 98%
    assert "GMP 95.10 [95.00, 95.20], one-shot 90.10 [90.00, 90.20]" in table.loc["fig-gmp-vs-oneshot", "measured"]
    assert table.loc["fig-gmp-wd", "verdict"] == INCONCLUSIVE
    assert set(table.drop(index=["fig-gmp-vs-oneshot", "fig-gmp-wd"])["verdict"]) == {NOT_RUN}
    points = pd.read_csv(tmp_path / "tab-claims-points.csv")
    assert len(points[points["figure"] == "fig-gmp-vs-oneshot"]) == 4
