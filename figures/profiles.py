"""The profiles a figure is made at, and the one derived from another by a rule.

tiny, small, paper: tables of configs keyed by profile in each paper's runs module (``figures/<paper>/runs.py``) and,
for a few settings of one figure, in that figure's module.
smoke: tiny's runs thinned by one rule (``thin``), drawn with tiny's tables into ``<out>/smoke/``: of a figure's runs
       only those at its smallest seed and calibration draw (``SEED_FIELDS``) and, along each axis it sweeps
       (``GRID_FIELDS``: sparsity, channel ratio, calibration samples, block size, gamma, rewinding epoch), at its two
       extreme values (a run without a value there stays); every method and variant stays. Every script runs and
       every figure is drawn -- every code path -- in a few minutes: a check of the code, not evidence.
There is no scoreboard (tab-claims) at tiny or smoke (``SCOREBOARD``): their runs are not evidence.
"""
from __future__ import annotations

PROFILES = ("smoke", "tiny", "small", "paper")
DERIVED = {"smoke": "tiny"}  # derived profile -> the profile whose tables it reads
SCOREBOARD = ("small", "paper")  # the profiles whose runs are evidence: the only ones tab-claims is made at
SEED_FIELDS = ("seed", "sample_seed")
GRID_FIELDS = ("target_sparsity", "sparsity", "ratio", "samples", "block", "gamma", "rewind_epoch")


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
        values = sorted({getattr(cfg, field, None) for _, cfg in rows} - {None})
        if values:
            keep[field] = {None, values[0]} if field in SEED_FIELDS else {None, values[0], values[-1]}
    return [(s, cfg) for s, cfg in rows if all(getattr(cfg, f, None) in v for f, v in keep.items())]
