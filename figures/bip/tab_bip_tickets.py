"""BiP paper, Table 1: the sparsest "winning ticket" per method and setup -- the highest grid sparsity whose test
accuracy (mean over seeds) is at least the dense model's (mean over the seeds) minus the profile's tolerance,
``R.TICKET_TOLERANCE[profile]`` seed SDs of the dense models (0: at least the dense accuracy); the table states it.
At the paper profile the paper's tickets are listed beside ours. The CSV holds every run's accuracy at every grid point (long: one row per run
and point, with its seed); the table itself is ``tab-bip-tickets-summary.csv``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.bip import runs as R
from figures.bip.fig_bip_trajectory import long
from figures.plot import mean_spread, save_long, save_table

PAPER = "BiP (Zhang et al. 2022) Table 1: sparsest winning tickets"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "bip_table1.csv"
ARMS, VALUES = ("setup", "method", "sparsity"), ("acc", "dense_acc")  # the long CSV (the table: -summary.csv)


def runs(profile: str):
    return R.trajectory(profile)


def dense_accuracy(df: pd.DataFrame) -> pd.Series:
    """setup -> the dense model's test accuracy (%), mean over the seeds (``df``: ``R.tidy`` rows)."""
    return mean_spread(df.drop_duplicates(["setup", "config.seed"]), ["setup"], "dense").set_index("setup")["mean"]


def dense_sd(df: pd.DataFrame) -> pd.Series:
    """setup -> the seed SD of the dense models' test accuracy (pt; 0 with a single dense model; ``df``: ``R.tidy``
    rows)."""
    return mean_spread(df.drop_duplicates(["setup", "config.seed"]), ["setup"], "dense").set_index("setup")["std"]


def seed_counts(df: pd.DataFrame) -> str:
    """The seeds each grid point has, from the runs (``R.tidy`` rows): "2 below 93.13%, 5 from it" or "3"."""
    n = df[df["method"] != "imp"].groupby("x")["config.seed"].nunique().sort_index()
    if n.empty:
        return "none"
    steps = n[n != n.shift()]
    return ", ".join(f"{c} from {x:g}%" if i else f"{c}" for i, (x, c) in enumerate(steps.items()))


def sparsest_ticket(s: pd.DataFrame, dense: float):
    """The winning ticket of one setup x method (``s``: its ``mean_spread`` rows over ``x``): the row at the highest
    sparsity whose mean accuracy is >= ``dense`` (the threshold: the dense accuracy less the tolerance), or None."""
    wins = s[s["mean"] >= dense]
    return wins.loc[wins["x"].idxmax()] if len(wins) else None


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    data, df = long(df), R.tidy(df)
    stats = mean_spread(df, ["setup", "method", "x"], "acc")
    dense, sd = dense_accuracy(df), dense_sd(df)
    k = R.TICKET_TOLERANCE[profile]
    ref = pd.read_csv(REFERENCE) if profile == "paper" else None
    rows = []
    for (setup, method), s in stats.groupby(["setup", "method"], sort=False):
        tolerance = k * sd[setup]
        best = sparsest_ticket(s, dense[setup] - tolerance)
        row = {"setup": setup, "dense acc (%)": round(dense[setup], 2), "tolerance (pt)": round(tolerance, 2),
               "ticket floor (%)": round(dense[setup] - tolerance, 2), "method": R.LABELS[method],
               "sparsest ticket (%)": round(best["x"], 1) if best is not None else "none",
               "its acc (%)": round(best["mean"], 2) if best is not None else "-"}
        if ref is not None:
            r = ref[(ref["setup"] == setup) & (ref["method"] == method)]
            row["paper ticket"] = f"{r['sparsity'].iloc[0]}% ({r['accuracy'].iloc[0]})" if len(r) else "-"
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(["IMP", "OMP", "Hydra", "BiP"])}
    table = table.sort_values(["setup", "method"], key=lambda c: c.map(order) if c.name == "method" else c)
    caption = ("Sparsest winning ticket: highest grid sparsity with mean test accuracy >= the dense model's mean "
               f"minus a tolerance of {k:g} seed SD of the dense models (the ticket floor; per setup in the table) "
               f"(seeds per point: {seed_counts(df)}; grid: remaining 0.8^n, n in {list(R.GRID_N[profile])}; IMP's "
               f"rounds give every n up to {max(R.GRID_N[profile])})")
    cuts = [f"{name}: {len(R.seeds(name))} seed(s), n in {list(R.SETUP_GRID_N[name])}" for name in R.SETUP_GRID_N
            if name in set(df["setup"])]
    caption += "".join(f"; cut for cost, {c}" for c in cuts)
    return [*save_table(table, base, caption, csv_suffix="-summary"),
            *save_long(data, base, ARMS, VALUES, summary=False)]
