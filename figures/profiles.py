"""The profiles a figure is made at, and the one derived from another by a rule.

tiny, small, paper: tables of configs keyed by profile in each paper's runs module (``figures/<paper>/runs.py``) and,
for a few settings of one figure, in that figure's module.
smoke: tiny's runs thinned by one rule (``thin``), drawn with tiny's tables into ``<out>/smoke/``: of a figure's runs
       only those at its smallest seed and calibration draw (``SEED_FIELDS``) and, along each axis it sweeps
       (``GRID_FIELDS``: sparsity, channel ratio, calibration samples, block size, gamma, rewinding epoch), at its two
       extreme values (a run without a value there stays); every method and variant stays. The kept runs are then
       shortened (``SHORT``: each script's training lengths, a field set only where the run's method uses it), the
       dense models they start from staying tiny's. Every script runs and every figure is drawn -- every code path --
       in a few minutes: a check of the code, not evidence.
There is no scoreboard (tab-claims) at tiny or smoke (``SCOREBOARD``): their runs are not evidence.
"""
from __future__ import annotations

PROFILES = ("smoke", "tiny", "small", "paper")
DERIVED = {"smoke": "tiny"}  # derived profile -> the profile whose tables it reads
SCOREBOARD = ("small", "paper")  # the profiles whose runs are evidence: the only ones tab-claims is made at
SEED_FIELDS = ("seed", "sample_seed")
# smoke: each script's training lengths (tiny's in the comment); the stages of GMP kept consistent (1 + 2 + 2 epochs,
# the fine-tuning LR decayed once), SA++'s phases being fractions of its steps
SHORT = {
    "seqattn.prune": {"epochs": 6},                                               # 30 (MLP), 40 (CNN)
    "seqattn.oneshot": {"pretrain.epochs": 6, "finetune.epochs": 1},              # 30, 3
    "gmp.prune": {"epochs": 5, "stabilize_epochs": 1, "prune_epochs": 2,           # 20 = 1 + 9 + 10
                  "finetune_lr.milestones": (1.0,)},                              # (4, 7)
    "posttrain.prune": {"phase1_epochs": 2, "phase2_epochs": 2, "retrain.epochs": 5},  # 10, 10, 100
    "bip.prune": {"epochs": 1, "finetune_epochs": 1},                             # 10 (MLP), 5 (CNN)
    "bip.magnitude": {"epochs": 1},                                               # per IMP round / OMP: 10, 5
    "bip.retrain": {"retrain_epochs": 1},                                         # 10, 5
}
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
    return [(s, shorten(s, cfg)) for s, cfg in rows if all(getattr(cfg, f, None) in v for f, v in keep.items())]


def shorten(script: str, cfg):
    """``cfg`` with the training lengths of ``SHORT[script]`` that its method uses (a field's ``when`` met)."""
    from dataclasses import fields

    from common import config as C

    meta = {f.name: f.metadata.get("when") or {} for f in fields(cfg)}
    applies = {key: value for key, value in SHORT.get(script, {}).items() if key.partition(".")[0] in meta and
               all(getattr(cfg, name) in values for name, values in meta[key.partition(".")[0]].items())}
    return C.replace(cfg, **applies)
