"""The cubic sparsity schedule of Zhu & Gupta (2017), "To prune, or not to prune", eq. (1), and ``GradualPruner``,
which follows it in any training loop.

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3      for t in {t0, t0 + dt, ..., t0 + n*dt}

s_i is the initial and s_f the final sparsity, pruning starts at step t0 and updates the masks every dt steps, n times.
Before t0 the model is dense; after t0 + n*dt the sparsity stays at s_f (the value is clamped to [s_i, s_f]); n = 0 is
a single update at t0, straight to s_f (one-shot pruning).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from common import sparsity as S


def cubic_sparsity(t: float, s_i: float, s_f: float, t0: float, n: int, dt: float) -> float:
    """Zhu & Gupta's s_t, clamped between s_i and s_f (dense before t0)."""
    if t < t0:
        return 0.0
    if n * dt == 0:  # one update, at t0
        return s_f
    s_t = s_f + (s_i - s_f) * (1.0 - (t - t0) / (n * dt)) ** 3
    lo, hi = min(s_i, s_f), max(s_i, s_f)
    return min(max(s_t, lo), hi)


@dataclass(frozen=True)
class PruningSteps:
    """Where the pruning stage's mask updates fall, in optimizer steps."""

    t0: int   # first update (start of the pruning stage)
    dt: int   # steps between updates
    n: int    # number of intervals: updates at t0, t0 + dt, ..., t0 + n*dt

    def is_update(self, t: int) -> bool:
        return t >= self.t0 and (t - self.t0) % self.dt == 0 and (t - self.t0) // self.dt <= self.n

    def sparsity(self, t: int, s_i: float, s_f: float) -> float:
        return cubic_sparsity(t, s_i, s_f, self.t0, self.n, self.dt)


class GradualPruner:
    """Gradual magnitude pruning for any training loop: the cubic schedule and the masks it sets.

        pruner = GradualPruner(model, optimizer, final_sparsity=0.9, start_step=500, end_step=3000, every=100)
        for t, (x, y) in enumerate(batches):       # t: optimizer steps from 0
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            pruner.mask_grads()                    # pruned weights get no gradient (momentum, weight decay) ...
            optimizer.step()
            pruner.step(t)                         # ... are zero again, and the masks of step t + 1 are set
        pruner.sparsity()                          # final_sparsity once t has passed end_step

    The masks of step t are in place before step t runs: the constructor sets step 0's (a schedule that starts at 0
    prunes at once), ``step(t)`` sets step t + 1's where the schedule updates them, at t in {start_step, start_step +
    every, ..., end_step} (the last multiple of ``every`` at or before end_step); start_step == end_step prunes once,
    to final_sparsity (one-shot). An update ranks the prunable weights (every Conv2d / Linear weight but ``exclude``:
    "first", "last" or module-name patterns) by magnitude, per layer (``scope`` "layer": the same ratio in each) or
    over all of them ("global"), prunes exactly round(s_t * n) (``common.sparsity.topk_mask``, ties="exact"), and
    zeroes ``optimizer``'s momentum / moments of the pruned weights. ``log(**record)``, if given, receives each update:
    event "prune", step, target_sparsity, sparsity (measured) and layer_sparsity. ``state_dict`` / ``load_state_dict``
    checkpoint the masks (the schedule is a function of t).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, final_sparsity: float,
                 initial_sparsity: float = 0.0, start_step: int = 0, end_step: int = 0, every: int = 1,
                 scope: str = "layer", exclude=("last",), log: Callable[..., None] | None = None):
        if not 0.0 <= initial_sparsity <= final_sparsity < 1.0:
            raise ValueError(f"sparsities must satisfy 0 <= initial ({initial_sparsity}) <= final ({final_sparsity}) "
                             f"< 1")
        if every < 1 or start_step < 0 or end_step < start_step:
            raise ValueError(f"need every >= 1 and 0 <= start_step <= end_step (got every={every}, "
                             f"start_step={start_step}, end_step={end_step})")
        self.optimizer, self.scope, self.log = optimizer, scope, log
        self.initial_sparsity, self.final_sparsity = initial_sparsity, final_sparsity
        self.plan = PruningSteps(t0=start_step, dt=every, n=(end_step - start_step) // every)
        self.params = S.prunable(model, exclude)
        self.masks = S.Masks(self.params)
        self.update(0)

    @property
    def last_update(self) -> int:
        """The step from which the masks have the final sparsity."""
        return self.plan.t0 + self.plan.n * self.plan.dt

    def target(self, t: int) -> float | None:
        """The sparsity the masks must have from step t on, if step t is a mask update."""
        return self.plan.sparsity(t, self.initial_sparsity, self.final_sparsity) if self.plan.is_update(t) else None

    def update(self, t: int) -> None:
        """Set the masks of step t by magnitude, if the schedule updates them at t."""
        s_t = self.target(t)
        if s_t is None:
            return
        self.masks.set(S.topk_masks(S.magnitudes(self.params), s_t, self.scope, ties="exact"), self.optimizer)
        if self.log is not None:
            self.log(event="prune", step=t, target_sparsity=s_t, sparsity=self.sparsity(),
                     layer_sparsity={n: 1.0 - float(m.mean()) for n, m in self.masks.masks.items()})

    def mask_grads(self) -> None:
        """Zero the pruned weights' gradients: call after backward, before the optimizer step."""
        self.masks.mask_grads()

    def step(self, t: int) -> None:
        """After optimizer step t: zero the pruned weights again, then set the masks of step t + 1."""
        self.masks.apply()
        self.update(t + 1)

    def sparsity(self) -> float:
        """The fraction of the prunable weights pruned now."""
        return 1.0 - self.masks.density()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.masks.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.masks.load_state_dict(state)
