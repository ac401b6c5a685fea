"""The cubic sparsity schedule of Zhu & Gupta (2017), "To prune, or not to prune", eq. (1).

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3      for t in {t0, t0 + dt, ..., t0 + n*dt}

s_i is the initial and s_f the final sparsity, pruning starts at step t0 and updates the masks every dt steps, n times.
Before t0 the model is dense; after t0 + n*dt the sparsity stays at s_f (the value is clamped to [s_i, s_f]).
"""
from __future__ import annotations

from dataclasses import dataclass


def cubic_sparsity(t: float, s_i: float, s_f: float, t0: float, n: int, dt: float) -> float:
    """Zhu & Gupta's s_t, clamped between s_i and s_f (dense before t0)."""
    if t < t0:
        return 0.0
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
