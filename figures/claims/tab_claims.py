"""The reproduction scoreboard: one row per claim of the four papers (per setup where its figure has several), judged
by the rule of ``figures.claims.rule`` on per-seed values paired by seed: holds / does not hold / inconclusive /
mixed / not run / not testable at this scale.

Every row is computed from the store's rows of the runs of the figure it names, through that figure's profile table
and tidy functions; ``runs(profile)`` is the union of those figures' runs (the scoreboard has no grid of its own).
The claims of each paper are in ``<paper>_claims.py``, the rows and their per-seed records in ``board.py``, what the
design makes vanish at a scale in ``scale.py``, the papers' own effect sizes in ``paper.py``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from common.atomic import atomic_write
from common.store import Run
from figures.bip import fig_bip_ig, fig_bip_rewind, fig_bip_structured, fig_bip_time, fig_bip_trajectory
from figures.bip import tab_bip_tickets
from figures.claims import bip_claims, gmp_claims, posttrain_claims, seqattn_claims
from figures.claims.board import COLUMNS, MARGIN, Board
from figures.claims.rule import ALPHA, VERDICTS
from figures.gmp import fig_gmp_vs_oneshot, fig_gmp_wd
from figures.plot import save_csv, save_table, tex_escape
from figures.posttrain import fig_posttrain_ablation, fig_posttrain_samples, fig_posttrain_time, tab_posttrain
from figures.seqattn import fig_seqattn_oneshot, tab_seqattn_ablations, tab_seqattn_blocks

PAPER = "reproduction scoreboard: each paper claim the figures test, judged on per-seed values paired by seed"

# the figures the rows are computed from; the timed ones first, so that computing the scoreboard from an empty store
# times their runs in their own sequence, as `python -m figures all` does
SOURCES = {m.__name__.rsplit(".", 1)[1].replace("_", "-"): m for m in (
    fig_bip_time, fig_posttrain_time, fig_bip_trajectory, tab_bip_tickets, fig_bip_rewind, fig_bip_structured,
    fig_bip_ig, fig_seqattn_oneshot, tab_seqattn_blocks, tab_seqattn_ablations, fig_gmp_vs_oneshot, fig_gmp_wd,
    fig_posttrain_ablation, tab_posttrain, fig_posttrain_samples)}
PAPERS = (bip_claims, seqattn_claims, gmp_claims, posttrain_claims)

RULE = (f"Rule: per contrast, the mean over seeds of the per-seed paired difference (claimed better - other; losses: "
        f"other - claimed) with one-sided {100 * (1 - ALPHA):g}% t bounds. Superiority holds when the lower bound is "
        f"> 0 and the estimate >= the margin, does not hold when the upper bound is < 0 and the estimate <= -margin; "
        f"non-inferiority holds when the lower bound is > -margin; equivalence holds when both bounds lie within "
        f"+-margin, does not hold when the interval lies outside; otherwise inconclusive. Margin {MARGIN:g} pt "
        f"(10 of 10,000 test images) unless a row states its own. Over a range of points: one omnibus test of each "
        f"seed's mean difference over the claim's regime decides; Holm-corrected per-point tests say where; mixed "
        f"when points are decided both ways. A chain (A > B > C) holds when every link holds. not testable at this "
        f"scale: the design makes the contrast vanish, the measured reason in the row; not run: runs missing or "
        f"failed, named in the row.")


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


def scoreboard(df: pd.DataFrame, profile: str) -> Board:
    board = Board(df, profile, SOURCES)
    for claims in PAPERS:
        claims.claims(board)
    return board


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    board = scoreboard(df, profile)
    table = pd.DataFrame(board.rows, columns=COLUMNS)
    count = Counter(table["verdict"])
    caption = (f"Reproduction scoreboard, {profile} profile: {len(table)} claims; "
               + ", ".join(f"{v}: {count[v]}" for v in VERDICTS) + ". " + RULE)
    paths = save_table(table, base, caption)
    paths[1] = atomic_write(base.with_suffix(".tex"), lambda p: Path(p).write_text(_tex(table, caption)))
    points = pd.DataFrame(board.records, columns=RECORD_COLUMNS)
    return [*paths, save_csv(points, base.with_name(base.name + "-points"))]


RECORD_COLUMNS = ["paper", "claim", "figure", "link", "point", "seed", "paired", "omnibus", "side", "value", "other",
                  "other_value", "difference", "point_estimate", "point_lower", "point_upper", "point_decided"]


def _tex(table: pd.DataFrame, caption: str) -> str:
    """The table as a LaTeX longtable (booktabs), every cell escaped."""
    esc = tex_escape
    widths = ("1.2cm", "2.6cm", "2cm", "3.2cm", "2.6cm", "5cm", "2.4cm", "1.6cm", "3cm", "2.4cm")
    lines = [r"\begin{longtable}{" + "".join(f"p{{{w}}}" for w in widths) + "}", rf"\caption{{{esc(caption)}}}\\",
             r"\toprule", " & ".join(esc(c) for c in table.columns) + r" \\", r"\midrule", r"\endhead"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{longtable}"]) + "\n"
