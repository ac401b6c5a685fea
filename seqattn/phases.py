"""The phase layout of a run: dense, sparsification and sparse phases, in optimizer steps.

Every method starts from an ACDC skeleton (Kuznedelev et al.): fractions of training that alternate
dense, sparse, dense, sparse, ..., ending with the final sparse phase (an even number of entries summing to 1).

- ``acdc``:      the skeleton itself (masks set at once by block magnitude at each sparse phase's start).
- ``sapp``:      SequentialAttention++ (paper §3.2): each sparse phase becomes sparsification + sparse (the
                 sparsification takes ``share`` of it), except that the last sparse-dense pair before the final
                 sparse phase is replaced by one sparsification phase; then the final sparse phase.
                 Without sparsification phases (an ablation) it is the ACDC skeleton.
- ``magnitude``, ``powerprop``: dense until the final sparse phase, pruned once at its start, then fine-tuned.

In a sparsification phase the sparsity follows the exponential schedule (paper eq. in §3.2)
    s(t) = s (1 - e^{-c t}) / (1 - e^{-c}),   t in [0, 1] the position in the phase,
sampled at its steps: step j of a phase of L steps (j = 0 .. L-1) sits at t = j / (L - 1), so the phase's first step
trains with every block (s(0) = 0) and its last one with the target s(1) = s (a one-step phase: s). Masks are updated
every ``every`` steps (1: at every step, the schedule followed exactly) and always at the last step; between two updates
the mask of the earlier one is held, so a step trains with s(t) of the most recent update at or before it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from common.errors import UserError

# ACDC skeletons of the paper's setups (fractions of all training steps).
# ImageNet: the ACDC schedule of Kuznedelev et al. (2023b) that the paper follows (its setups are summarized in
# figures/reference/README.md): 10% dense, 7 equal sparse-dense phases (the last dense +5%), 15% final sparse.
IMAGENET = (0.10,) + (0.05, 0.05) * 6 + (0.05, 0.10, 0.15)
# Criteo (paper §4.2): 20% dense, 10 sparse-dense phases, 20% final sparse.
CRITEO = (0.20,) + (0.03, 0.03) * 10 + (0.20,)
LAYOUTS = {"imagenet": IMAGENET, "criteo": CRITEO}


def exp_sparsity(t: float, s: float, c: float) -> float:
    """s(t) = s (1 - e^{-ct}) / (1 - e^{-c}): 0 at t = 0, s at t = 1, front-loaded for c > 0."""
    return s * (1.0 - math.exp(-c * t)) / (1.0 - math.exp(-c))


def check_skeleton(fractions) -> None:
    text = ",".join(f"{f:g}" for f in fractions)
    if len(fractions) < 2 or len(fractions) % 2:
        raise UserError(f"--phases {text}: give an even number of fractions alternating dense,sparse,...,dense,sparse "
                        f"(ending with the final sparse phase), e.g. --phases 0.1,0.05,0.05,0.8")
    if any(f < 0 for f in fractions) or fractions[-1] <= 0:
        raise UserError(f"--phases {text}: fractions must be >= 0 and the final sparse phase > 0")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise UserError(f"--phases {text} sum to {sum(fractions):g}, not 1; they are fractions of all training steps")


def layout(method: str, fractions, share: float = 0.5, sparsify: bool = True) -> list[tuple[str, float]]:
    """(kind, fraction) of every phase of ``method`` derived from the ACDC skeleton ``fractions``."""
    check_skeleton(fractions)
    if method in ("magnitude", "powerprop"):
        return [("dense", 1.0 - fractions[-1]), ("sparse", fractions[-1])]
    kinds = ["dense", "sparse"] * (len(fractions) // 2)
    acdc = list(zip(kinds, fractions))
    if method == "acdc" or not sparsify:
        return acdc
    out = [acdc[0]]
    pairs = [(fractions[i], fractions[i + 1]) for i in range(1, len(fractions) - 1, 2)]
    for i, (sparse, dense) in enumerate(pairs):
        if i == len(pairs) - 1:
            out.append(("sparsify", sparse + dense))  # the last sparse-dense pair -> one sparsification phase
        else:
            out += [("sparsify", share * sparse), ("sparse", (1 - share) * sparse), ("dense", dense)]
    if not pairs:
        out += [("sparsify", share * fractions[-1]), ("sparse", (1 - share) * fractions[-1])]
    else:
        out.append(("sparse", fractions[-1]))
    return out


@dataclass(frozen=True)
class Phase:
    kind: str   # dense | sparsify | sparse
    start: int  # first step
    end: int    # one past the last step


class Plan:
    """The phases of a run in steps and the mask updates of its sparsification phases."""

    def __init__(self, phases: list[tuple[str, float]], total_steps: int, *, sparsity: float, c: float = 4.0,
                 every: int = 1, short_dense_steps: int = 0):
        self.total, self.sparsity, self.c = total_steps, sparsity, c
        bounds, acc = [0], 0.0
        for _, f in phases:
            acc += f
            bounds.append(round(acc * total_steps))
        bounds[-1] = total_steps
        steps = [[k, a, b] for (k, _), a, b in zip(phases, bounds, bounds[1:]) if b > a]
        if short_dense_steps > 0:  # ablation: every dense phase after the first lasts only this many steps
            for i in range(1, len(steps)):
                kind, a, b = steps[i]
                if kind == "dense" and b - a > short_dense_steps:
                    steps[i - 1][2] = steps[i][1] = b - short_dense_steps
        self.phases = [Phase(k, a, b) for k, a, b in steps]
        self.targets: dict[int, float] = {}  # step -> sparsity the masks must have from that step on
        for p in self.phases:
            if p.kind == "sparsify":
                last = p.end - p.start - 1  # step j of the phase is at t = j / last
                for j in sorted({*range(every, last, every), last}):
                    self.targets[p.start + j] = exp_sparsity(j / last, sparsity, c) if last else sparsity

    def phase_at(self, step: int) -> Phase:
        for p in self.phases:
            if p.start <= step < p.end:
                return p
        return self.phases[-1]

    def starts(self, step: int) -> Phase | None:
        """The phase that starts at ``step``, if any."""
        return next((p for p in self.phases if p.start == step), None)
