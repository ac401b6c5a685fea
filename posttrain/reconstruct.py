"""Layer reconstruction against the original model (the teacher) on a few unlabeled calibration samples.

Holistic loss, normalized per layer (every conv / linear / BatchNorm output l of the student S and teacher T):

    L_rec = sum_l || S_l - T_l[:, kept_l] ||^2 / || T_l[:, kept_l] ||^2                              (eq. 2)

Phase 1 (before pruning, the student still has every channel): Adam on L_rec over the channels that will stay, while
a growing sparsity penalty (lambda_j / 2) ||W_P||^2 pulls the weights W_P of the to-be-removed channels to zero,
lambda_j = lambda_0 + j * delta at epoch j. As in the official code W_P is, in every group, the producing conv/linear
weight rows, the consumers' input columns and BN's gamma of those channels (beta and biases are not penalized;
``Plan.slices``). The penalty's gradient step
W_P <- W_P - lambda_j W_P is applied after every Adam step, decoupled from Adam (as AdamW applies weight decay):
Adam divides each coordinate's gradient by its own running scale, so a penalty added to the loss would move W_P by
~lr per step whatever lambda is, and the growing coefficient would have no effect. The kept channels meanwhile take
over what the shrinking ones carried, so removing them afterwards loses little (a removed BN channel still outputs
its constant ReLU(beta), but its consumers' columns have shrunk with it, so little of it reaches them).
Phase 2 (after pruning): Adam on L_rec over the kept channels; with balanced updates the layer at depth k of N gets
learning rate lr / (N - k + 1): the first layer (whose weights receive the gradient of every later layer's error)
takes the smallest steps, the last one lr / 1.
Layer-wise reconstruction (the AdaPrune-like baseline) detaches every layer's input, so each layer is fitted to the
teacher's output on its own.

BatchNorm: teacher and student both run in eval mode, so BN uses the dense model's running statistics (sliced to
the kept channels by the removal) and never re-estimates them on the few calibration samples; the affine gamma/beta
are learned like every other parameter.

``calibrate`` runs the whole method (step 1's groups, phase 1, the removal, phase 2) on a batch of unlabeled samples,
for any trained model.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Callable, NamedTuple

import torch
from torch import nn

from common.errors import Diverged
from posttrain import groups as G
from posttrain.groups import RECORDED, forward_with_hooks


@contextmanager
def recording(model: nn.Module, detach_inputs: bool = False):
    """Collect ``{layer name: output}`` of every recorded layer during a forward pass (optionally cut each
    layer's input from the graph, so that every layer's error only reaches its own parameters)."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, RECORDED):
            # clone: a following ReLU(inplace=True) must not overwrite the recorded BN output
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: outputs.__setitem__(name, out.clone())))
            if detach_inputs:
                hooks.append(m.register_forward_pre_hook(lambda mod, inp: tuple(x.detach() for x in inp)))
    try:
        yield outputs
    finally:
        for h in hooks:
            h.remove()


def holistic_loss(student: dict, target: dict, norm: dict, kept: dict, unpruned: bool = False) -> torch.Tensor:
    """Eq. 2: sum over layers of ||S_l - T_l||^2 / ||T_l||^2, where ``target`` already holds the teacher's kept
    channels and ``norm`` their squared norms (``unpruned``: the student still has every channel; select the kept
    ones of its outputs too)."""
    total = 0.0
    for name, s in student.items():
        if unpruned and name in kept:
            s = s.index_select(1, kept[name].to(s.device))
        total = total + nn.functional.mse_loss(s, target[name], reduction="sum") / norm[name].clamp_min(1e-12)
    return total


def layer_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The layers that own parameters (conv / linear / BN), in the order the forward pass runs them."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, RECORDED)}
    order = []
    forward_with_hooks(model, example, list(names), lambda mod, i, o: order.append((names[mod], mod)))
    return list(dict.fromkeys(order))


def balanced_groups(model: nn.Module, example: torch.Tensor, lr: float, balanced: bool) -> list[dict]:
    """One Adam parameter group per layer; balanced: lr / N for the first of N layers ... lr / 1 for the last."""
    if not balanced:
        return [{"params": list(model.parameters()), "lr": lr}]
    layers = layer_order(model, example)
    n = len(layers)
    groups = [{"params": list(m.parameters(recurse=False)), "lr": lr / (n - k), "name": name}
              for k, (name, m) in enumerate(layers)]
    seen = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in model.parameters() if id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "other"})
    return groups


def sample_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The calibration samples in a fresh seeded order each epoch (batches are consecutive slices of it)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))


class TeacherOutputs:
    """The teacher's outputs on the calibration samples, restricted to the kept channels, with their squared norms:
    computed once and kept when they fit in ``budget_bytes`` (the samples are fixed and never augmented), else
    recomputed for every batch."""

    def __init__(self, teacher: nn.Module, x: torch.Tensor, kept: dict, budget_bytes: float = 2**30, chunk: int = 256):
        self.teacher, self.x, self.kept = teacher.eval(), x, kept
        with torch.no_grad(), recording(teacher) as out:
            teacher(x[:1])
        per_sample = sum(t.numel() * t.element_size() for t in out.values())
        self.cache = None
        if per_sample * len(x) <= budget_bytes:
            parts = [self._run(x[i:i + chunk]) for i in range(0, len(x), chunk)]
            self.cache = {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
            self.sample_norms = {name: t.flatten(1).pow(2).sum(1) for name, t in self.cache.items()}

    @torch.no_grad()
    def _run(self, xb) -> dict:
        with recording(self.teacher) as out:
            self.teacher(xb)
        return {name: t.index_select(1, self.kept[name].to(t.device)) if name in self.kept else t
                for name, t in out.items()}

    def __call__(self, idx: torch.Tensor) -> tuple[dict, dict]:
        """(kept teacher outputs, their squared norms) for the samples at ``idx``."""
        idx = idx.to(self.x.device)
        if self.cache is None:
            target = self._run(self.x[idx])
            return target, {name: t.pow(2).sum() for name, t in target.items()}
        return ({name: t[idx] for name, t in self.cache.items()},
                {name: n[idx].sum() for name, n in self.sample_norms.items()})

    def epoch(self, order: torch.Tensor, batch_size: int):
        """(sample indices, targets, norms) of every batch of one epoch in ``order``: the cached outputs are put in
        that order once per epoch (one gather per layer), and each batch is a slice of them."""
        if self.cache is None:
            for idx in order.split(batch_size):
                yield (idx, *self(idx))
            return
        order = order.to(self.x.device)
        targets = {name: t[order].split(batch_size) for name, t in self.cache.items()}
        norms = {name: n[order].split(batch_size) for name, n in self.sample_norms.items()}
        for i, idx in enumerate(order.split(batch_size)):
            yield (idx, {name: t[i] for name, t in targets.items()}, {name: n[i].sum() for name, n in norms.items()})


def reconstruct(student: nn.Module, teacher: TeacherOutputs, x: torch.Tensor, *, epochs: int, lr: float,
                batch_size: int, seed: int, kept: dict, balanced: bool = False, layerwise: bool = False,
                penalty: list | None = None, lambda0: float = 0.0, growth: float = 0.0, log=None,
                phase: str = "") -> list[dict]:
    """Adam on the reconstruction loss; with ``penalty`` slices (phase 1, the student still has every channel)
    the growing sparsity penalty shrinks them after every step. Returns the per-epoch log."""
    student.eval()
    groups = balanced_groups(student, x[:1], lr, balanced)
    try:  # one fused kernel per parameter group: the balanced groups are many and small
        optimizer = torch.optim.Adam(groups, fused=True)
    except (RuntimeError, ValueError):  # a device or torch version without fused Adam
        optimizer = torch.optim.Adam(balanced_groups(student, x[:1], lr, balanced), foreach=True)
    records = []
    for epoch in range(epochs):
        lam = min(1.0, lambda0 + epoch * growth)  # lambda_j, j = epoch
        total = torch.zeros((), device=x.device)
        shrink = [1.0 - lam * m for _, m in penalty or ()]  # W_P <- W_P - lambda_j W_P as one multiply per tensor
        for idx, target, norm in teacher.epoch(sample_order(len(x), epoch, seed), batch_size):
            with recording(student, detach_inputs=layerwise) as s_out:
                student(x[idx.to(x.device)])
            loss = holistic_loss(s_out, target, norm, kept, unpruned=bool(penalty))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if penalty:
                with torch.no_grad():  # the penalty's step, decoupled from Adam
                    for (p, _), f in zip(penalty, shrink):
                        p.mul_(f)
            total += loss.detach() * len(idx)
        rec = float(total) / len(x)
        if not math.isfinite(rec):
            raise Diverged(f"{phase} reconstruction loss became {rec} in epoch {epoch + 1}; lower --lr")
        record = {"phase": phase, "epoch": epoch + 1, "rec_loss": rec}
        if penalty:
            with torch.no_grad():
                norm = float(sum((p * m).pow(2).sum() for p, m in penalty)) ** 0.5
            record.update(penalty_coef=lam, pruned_norm=norm)
        records.append(record)
        if log is not None:
            log(**record)
    return records


@torch.no_grad()
def calibration_loss(student: nn.Module, teacher: TeacherOutputs, x: torch.Tensor, kept: dict,
                     unpruned: bool = False, batch_size: int = 256) -> float:
    """Mean holistic loss of ``student`` over the calibration samples (no update)."""
    student.eval()
    total = 0.0
    for idx in torch.arange(len(x)).split(batch_size):
        with recording(student) as s_out:
            student(x[idx.to(x.device)])
        total += float(holistic_loss(s_out, *teacher(idx), kept, unpruned)) * len(idx)
    return total / len(x)


def update_sizes(before: dict, model: nn.Module) -> list[dict]:
    """Per layer, in forward order: ||W_after - W_before|| / ||W_before|| of its weight (Fig. 6's update magnitude)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and name in before:
            w0, w1 = before[name], m.weight.detach()
            out.append({"layer": name, "update": float((w1 - w0).norm() / w0.norm().clamp_min(1e-12)),
                        "abs_update": float((w1 - w0).norm())})
    return out


class Calibrated(NamedTuple):
    """What ``calibrate`` returns: the pruned model, and what a report of the method reads besides it."""

    model: nn.Module             # the model given, its channels removed and recalibrated
    plan: G.Plan                 # the removed groups and, per recorded layer, the output channels that stay
    targets: TeacherOutputs      # the dense model's outputs on the samples, over the channels that stay
    updates: list[dict]          # phase 2's per-layer update sizes (``update_sizes``)


def calibrate(model: nn.Module, samples: torch.Tensor, ratio: float, *, teacher: nn.Module | None = None,
              ignore=(), phase1_epochs: int = 10, phase2_epochs: int = 10, lr: float = 3e-3, batch_size: int = 32,
              penalty: float = 0.02, penalty_growth: float = 0.02, balanced: bool = True, layerwise: bool = False,
              seed: int = 0, log: Callable[..., None] | None = None) -> Calibrated:
    """Remove ``ratio`` of the prunable channels of a trained ``model`` in place, without labels or retraining:

        pruned = calibrate(model, x, 0.5).model       # x: a few hundred training inputs (no labels), on model's device

    Step 1 ranks the channels by group importance under one global ratio, never the classifier's outputs nor those of
    layers matching ``ignore`` (``posttrain.groups``); phase 1 (``phase1_epochs``, 0 skips it) reconstructs the
    teacher's outputs while the penalty lambda_j = ``penalty`` + j ``penalty_growth`` shrinks the channels to remove;
    the removal makes the model smaller; phase 2 (``phase2_epochs``) recalibrates it at balanced per-layer learning
    rates lr/N ... lr/1 (``balanced``; else one rate), each layer fitted on its own if ``layerwise``. Both phases: Adam
    at ``lr``, batches of ``batch_size`` in an order drawn from ``seed``. ``teacher``: the dense model to reconstruct
    (default: a frozen copy of ``model``, taken first); both run in eval mode. ``log(**record)`` receives every epoch's
    record (phase, epoch, rec_loss; phase 1: penalty_coef, pruned_norm). The defaults are the tiny profile's
    (``posttrain.prune``); its baselines switch phases off: holistic (phase1_epochs=0, balanced=False), layer-wise (the
    same with layerwise=True), none (both phases 0).
    """
    model.eval().requires_grad_(True)
    teacher = copy.deepcopy(model).requires_grad_(False) if teacher is None else teacher
    plan = G.plan(model, samples[:1], ratio, "group-l2", "global", ignore)                           # step 1
    targets = TeacherOutputs(teacher, samples, plan.kept)  # its outputs on the samples, over the channels that stay
    if phase1_epochs > 0:                                                                          # phase 1
        reconstruct(model, targets, samples, epochs=phase1_epochs, lr=lr, batch_size=batch_size, seed=seed,
                    kept=plan.kept, penalty=plan.slices(), lambda0=penalty, growth=penalty_growth, log=log,
                    phase="phase1")
    plan.remove()                                                                                  # phase 2: prune ...
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if phase2_epochs > 0:                                                                          # ... and recalibrate
        reconstruct(model, targets, samples, epochs=phase2_epochs, lr=lr, batch_size=batch_size, seed=seed,
                    kept=plan.kept, balanced=balanced, layerwise=layerwise, log=log, phase="phase2")
    return Calibrated(model, plan, targets, update_sizes(before, model))
