"""The profiles a figure is made at, and the one derived from another by a rule.

tiny, small, paper: tables of configs keyed by profile in each paper's runs module (``figures/<paper>/runs.py``) and,
for a few settings of one figure, in that figure's module.
smoke: tiny's runs thinned by one rule (``thin``), drawn with tiny's tables into ``<out>/smoke/``: of a figure's runs
       only those at its smallest seed and calibration draw (``SEED_FIELDS``) and, along each grid axis
       (``GRID_FIELDS``: sparsity, channel ratio, calibration samples), at its two extreme values. Every script runs
       and every figure is drawn -- every code path -- in a few minutes: a check of the code, not evidence.
There is no scoreboard (tab-claims) at tiny or smoke (``SCOREBOARD``): their runs are not evidence.
"""
from __future__ import annotations

PROFILES = ("smoke", "tiny", "small", "paper")
DERIVED = {"smoke": "tiny"}  # derived profile -> the profile whose tables it reads
SCOREBOARD = ("small", "paper")  # the profiles whose runs are evidence: the only ones tab-claims is made at
SEED_FIELDS = ("seed", "sample_seed")
GRID_FIELDS = ("target_sparsity", "sparsity", "ratio", "samples")


def tables(profile: str) -> str:
    """The profile whose tables ``profile`` reads (itself unless derived)."""
    return DERIVED.get(profile, profile)


def thin(profile: str, rows) -> list:
    """The (script, config) rows of a figure at ``profile``: those of its tables' profile, thinned by the rule above
    when ``profile`` is derived."""
    rows = list(rows)
    if profile not in DERIVED:
        return rows
    keep = {}
    for field in SEED_FIELDS + GRID_FIELDS:
        values = sorted({getattr(cfg, field) for _, cfg in rows if hasattr(cfg, field)})
        if values:
            keep[field] = {values[0]} if field in SEED_FIELDS else {values[0], values[-1]}
    return [(s, cfg) for s, cfg in rows if all(getattr(cfg, f) in v for f, v in keep.items() if hasattr(cfg, f))]
