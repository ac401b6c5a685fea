"""Where the design makes a contrast vanish at a profile's scale: each function measures the quantity that carries the
contrast, from the runs or the configs they ran, and compares it with a threshold stated here. A claim whose quantity
is below it is "not testable at this scale", its row giving the quantity and its value.

Quantities the configs give are compared with the same quantity at the paper's setup (the paper profile's configs of
the same figure; the smallest where it has several): below SCALE (a tenth) of it, not testable.
- c in {2, 4, 8}: the length in steps of the sparsification phases, the only place c acts.
- weight decay in fine-tuning: the weights' total shrink 1 - prod(1 - lr_t wd / (1 - momentum)) over the fine-tuning
  steps (coupled decay; SGD momentum's steady-state gain).
- structured BiP vs Hydra: the model's prunable units (filters or channels) the methods choose among.
Quantities only a run measures have an absolute threshold:
- the IG term: BiP's logged ig_ratio (||IG term|| / ||straight-through gradient||, mean over epochs) at the configs'
  gamma; below IG_NEGLIGIBLE the term cannot move the upper-level step.
- softmax vs exp(L): the SD of the SA++ block logits at the end of training; below LOGIT_SD both give attention
  1 + L - mean(L) to first order (the same ranking and the same gradients up to a per-layer constant).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

SCALE = 0.1
IG_NEGLIGIBLE = 1e-3
LOGIT_SD = 0.1


def against(name: str, here: float, paper: list[float], fmt: str = "{:g}") -> tuple[bool, str]:
    """Testable when ``here`` is at least SCALE of the paper's setup's value (the smallest of ``paper``)."""
    ref = min(paper)
    return here >= SCALE * ref, (f"{name} {fmt.format(here)} here vs {fmt.format(ref)} at the paper's setup "
                                 f"(testable from {SCALE:g} of it)")


def steps_per_epoch(cfg) -> int:
    """A config's steps per epoch from its dataset's training-set size (``figures/epoch_times.toml``)."""
    from common.cost import load_times

    return math.ceil((load_times().samples(cfg.dataset) - getattr(cfg, "val_size", 0)) / cfg.optim.batch_size)


def ig_ratio(rows: pd.DataFrame) -> tuple[bool, str]:
    """``rows``: the BiP runs with the IG term at the configs' gamma (store rows with ``ig_ratio``)."""
    values = rows["ig_ratio"].dropna() if "ig_ratio" in rows else pd.Series(dtype=float)
    if values.empty:
        return True, "ig_ratio not logged by these runs"
    value = float(values.mean())
    return value >= IG_NEGLIGIBLE, (f"the IG term is {value:.2g} of the straight-through gradient (ig_ratio, mean over "
                                    f"{len(values)} runs; testable from {IG_NEGLIGIBLE:g})")


def logit_sd(rows: pd.DataFrame) -> tuple[bool, str] | None:
    """``rows``: SA++ runs; None when they do not log ``logit_sd`` (the block logits' SD at the end of training)."""
    if "logit_sd" not in rows or rows["logit_sd"].dropna().empty:
        return None
    value = float(rows["logit_sd"].max())
    return value >= LOGIT_SD, (f"the block logits' SD reaches {value:.3g} (max over {rows['logit_sd'].notna().sum()} "
                               f"runs; testable from {LOGIT_SD:g}): softmax and exp(L) agree to first order")


def phase_steps(cfg, steps_per_epoch: int, kind: str = "sparsify") -> list[int]:
    """The length in steps of each ``kind`` phase of an SA++ config with ``steps_per_epoch``."""
    from seqattn import phases as P

    plan = P.Plan(P.layout(cfg.method, cfg.phases, cfg.sparsify_share, cfg.sparsification),
                  cfg.epochs * steps_per_epoch, sparsity=cfg.sparsity, c=cfg.c, every=cfg.mask_every,
                  short_dense_steps=cfg.short_dense_steps)
    return [p.end - p.start for p in plan.phases if p.kind == kind]


def sparsification(cfg, steps: int, paper) -> tuple[bool, str]:
    """``cfg`` an SA++ config run with ``steps`` per epoch; ``paper``: the paper setup's SA++ configs."""
    here = phase_steps(cfg, steps)
    if not here:
        return False, "no sparsification phase in the layout"
    ok, text = against("c acts only within the sparsification phases: their median length in steps is",
                       float(np.median(here)), [float(np.median(phase_steps(c, steps_per_epoch(c)))) for c in paper])
    return ok, text + f" ({len(here)} phases of {listed(here)} steps, of {cfg.epochs * steps}; configs)"


def shrink(cfg, steps: int) -> tuple[float, int]:
    """The weights' total shrink by weight decay over a gmp.prune config's fine-tuning, and its steps."""
    from gmp.prune import lr_of

    wd = cfg.optim.weight_decay if cfg.finetune_weight_decay is None else cfg.finetune_weight_decay
    gain = 1.0 / (1.0 - cfg.optim.momentum) if cfg.optim.optimizer == "sgd" else 1.0
    start, end = (cfg.stabilize_epochs + cfg.prune_epochs) * steps, cfg.epochs * steps
    lrs = np.array([lr_of(cfg, s / steps) for s in range(start, end)])
    return 1.0 - math.exp(np.log1p(-np.minimum(lrs * wd * gain, 1.0 - 1e-12)).sum()), end - start


def wd_shrink(cfg, steps: int, paper) -> tuple[bool, str]:
    """``cfg``: a gmp.prune config keeping the optimizer's weight decay in fine-tuning, run with ``steps`` per epoch;
    ``paper``: the paper setup's."""
    value, n = shrink(cfg, steps)
    ok, text = against("weight decay's total shrink of the weights over fine-tuning (1 - prod(1 - lr wd / "
                       "(1 - momentum)))", 100 * value, [100 * shrink(c, steps_per_epoch(c))[0] for c in paper],
                       "{:.2g}%")
    return ok, text + f" ({n} fine-tuning steps here; configs)"


def units(cfg, paper) -> tuple[bool, str]:
    """``cfg``: a structured bip.prune config; ``paper``: the paper setup's (their models built once each)."""
    n, layers = _units(cfg.model, cfg.dataset, tuple(cfg.exclude), cfg.structure)
    ok, text = against(f"{cfg.model}'s prunable {cfg.structure}s:", n,
                       [_units(c.model, c.dataset, tuple(c.exclude), c.structure)[0] for c in paper])
    return ok, text + f" ({layers} conv layer(s); models)"


@functools.lru_cache(maxsize=None)
def _units(model: str, dataset: str, exclude: tuple, structure: str) -> tuple[int, int]:
    import torch

    from common import sparsity as S
    from common.data import dataset_info
    from common.models import build_model

    info = dataset_info(dataset)
    with torch.no_grad():
        params = {n: p for n, p in S.prunable(build_model(model, info.num_classes, info.input_shape),
                                              exclude).items() if p.dim() == 4}
    return sum(int(p.shape[0 if structure == "filter" else 1]) for p in params.values()), len(params)


def listed(values) -> str:
    values = sorted(set(values))
    return ", ".join(map(str, values))
