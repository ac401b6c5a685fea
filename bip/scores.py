"""The upper-level variable of BiP and Hydra: mask scores m, projected to a binary mask by a hard top-k.

Three tensors per prunable weight, none sharing storage with another:
  theta  the weights (the lower-level variable), kept dense: a pruned weight keeps its value and can come back;
  m      the scores (the upper-level variable), initialized from |theta| of the pretrained model times a constant,
         so that the first mask is the global magnitude mask;
  z      the model's own weight tensor, always z = top-k(m) (.) theta: the forward pass of the model computes with it,
         so one backward pass gives grad_z l, from which every gradient of the algorithm follows (straight-through
         top-k: dz/dm = theta, dz/dtheta = top-k(m)):
             grad_theta l = top-k(m) (.) grad_z l
             grad_m l     = theta (.) grad_z l
             IG term      = -(1/gamma) grad_z l (.) grad_theta l            (the paper's closed-form implicit gradient)
Projections: unstructured = global top-k over all prunable scores (or per layer with scope=layer); filter / channel =
top-k of the sum of each filter's / input channel's signed scores, the same keep ratio in every layer. Signed, as in
the unstructured top-k: a negative score votes for pruning (a norm would count it as large). The sum is itself a
per-unit score trained by the same step: under SGD (the upper level's optimizer by default; momentum and weight
decay are linear too) the sum of a unit's score updates is the update of one score per unit whose gradient is the
sum of grad_m l over the unit, the straight-through gradient of that unit's mask. From m_0 = c|theta| the first
structured mask keeps the filters / channels of largest L1 norm.
"""
from __future__ import annotations

import torch
from torch import nn

from common import sparsity as S
from common.errors import UserError

STRUCTURES = ("unstructured", "filter", "channel")


def kept_units(shape, structure: str, sparsity: float) -> int:
    """Units (weights, filters or input channels) a layer keeps under a uniform per-layer ratio."""
    if structure == "unstructured":
        units = int(torch.Size(shape).numel())
    else:
        units = shape[0] if structure == "filter" else shape[1]
    return units - S.num_to_prune(sparsity, units)


def check_keeps_some(params: dict[str, torch.Tensor], structure: str, scope: str, sparsity: float, flag: str) -> None:
    """The top-k must leave every layer at least one weight / filter / channel (``common.sparsity.check_keeps_some``):
    each layer's own under a per-layer ratio (``scope`` layer; filter / channel: always), enough for one each under a
    global one."""
    unit = {"unstructured": "weights", "filter": "filters", "channel": "input channels"}[structure]
    counts = {name: kept_units(p.shape, structure, 0.0) for name, p in params.items()}
    S.check_keeps_some(counts, sparsity, "layer" if structure != "unstructured" else scope, flag, unit)


def unit_sums(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """The sum of the signed scores of each filter (dim 0) or input channel (dim 1): the unit's score."""
    return scores.transpose(0, dim).reshape(scores.shape[dim], -1).sum(1)


def kth_smallest_reference(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest of the flat scores (1 <= k <= n), by ``torch.kthvalue``: the value that the fast selections
    (``topk_kthvalue``, ``Threshold``) return exactly."""
    return torch.kthvalue(flat, k).values


def kth_smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest of the flat scores (1 <= k <= n): the reference on a CPU (a quickselect, the faster one
    there: ``python -m bip.bench``), ``topk_kthvalue`` on CUDA, where ``torch.kthvalue`` sorts the whole slice in one
    thread block."""
    return topk_kthvalue(flat, k) if flat.is_cuda else kth_smallest_reference(flat, k)


def topk_kthvalue(flat: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.kthvalue(flat, k).values`` by ``torch.topk`` over the smaller side (on CUDA a radix select: a few
    passes over the scores, no host sync): the largest of the k smallest, or the smallest of the n - k + 1 largest.
    Both are values of ``flat`` itself, so the threshold, hence the mask, is the same. NaN ranks above every number
    in both ``torch.topk`` and ``torch.kthvalue``, hence a second ``topk`` for the smallest, not ``.min()``."""
    n = flat.numel()
    if k <= n - k + 1:
        return torch.topk(flat, k, largest=False, sorted=False).values.max()
    return torch.topk(torch.topk(flat, n - k + 1, sorted=False).values, 1, largest=False).values[0]


class Threshold:
    """The exact ``kth_smallest_reference(flat, n_prune)`` of scores that change a little at every step, found near
    the last one.

    Selection over all n scores (``torch.kthvalue``) costs many dense passes on a CPU, at every BiP iteration. The new
    threshold lies close to the previous one, so: count the scores at or below the lower edge ``a`` of a band around
    the previous threshold (L of them), gather the scores inside the band (a, b], and if the n_prune-th smallest score
    falls in it (L < n_prune <= L + |band|), select it there: kth_smallest_reference(band, n_prune - L), the value the
    reference returns on all n scores, hence the same mask; a band that misses it is widened (or, as a last resort,
    the full selection runs). On CUDA the full selection ``kth_smallest`` (a radix select there, without the band's
    host synchronizations) runs at every step.
    """

    def __init__(self):
        self.value: torch.Tensor | None = None
        self.width = 0.0

    def __call__(self, flat: torch.Tensor, n_prune: int) -> torch.Tensor:
        if flat.is_cuda or self.value is None:
            return self._full(flat, n_prune)
        centre = float(self.value)
        width = self.width
        for _ in range(4):
            a, b = centre - width, centre + width
            below = int((flat <= a).sum())
            if below < n_prune:
                band = flat[(flat > a) & (flat <= b)]
                if n_prune <= below + band.numel():
                    self.value = kth_smallest_reference(band, n_prune - below)
                    self.width = max(width / 2, abs(float(self.value) - centre) * 4, 1e-12)
                    return self.value
            width *= 8
        return self._full(flat, n_prune)

    def _full(self, flat: torch.Tensor, n_prune: int) -> torch.Tensor:
        self.value = kth_smallest(flat, n_prune)
        if not flat.is_cuda:  # a first band width: the spread of the middle 1% of the scores (then adapted per step)
            sample = flat[:: max(1, flat.numel() // 4096)].float()  # levels in the sample's dtype, not the default
            q = torch.quantile(sample, torch.tensor([0.495, 0.505], dtype=sample.dtype, device=flat.device))
            self.width = max(float(q[1] - q[0]), 1e-12)
        return self.value


class ScoredWeights:
    """theta, scores and binary masks of a set of prunable weights; the model's weights hold z = mask (.) theta."""

    def __init__(self, params: dict[str, nn.Parameter], sparsity: float, structure: str = "unstructured",
                 scope: str = "global", init_scale: float = 1.0):
        if structure not in STRUCTURES:
            raise UserError(f"unknown structure '{structure}'; choose one of: {', '.join(STRUCTURES)}")
        self.names = list(params)
        self.z = [params[n] for n in self.names]
        self.sparsity, self.structure, self.scope = sparsity, structure, scope
        self.threshold = Threshold()
        with torch.no_grad():
            self.theta = [p.detach().clone().requires_grad_(True) for p in self.z]
            # scores and masks live in one flat buffer each (per-layer views), so the global top-k and the score
            # optimizer touch one tensor instead of one per layer
            self.score_param = torch.cat([p.detach().abs().reshape(-1) for p in self.z]).mul_(init_scale)
            self.score_param.requires_grad_(True)
            self.flat_mask = torch.ones_like(self.score_param).detach()
            self.scores = self._views(self.score_param.detach())
            self.masks = self._views(self.flat_mask)
        self.project()

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for p in self.z:
            out.append(flat[start:start + p.numel()].view(p.shape))
            start += p.numel()
        return out

    # ------------------------------------------------------------------------------------------ projection
    @torch.no_grad()
    def project(self) -> None:
        """masks = top-k(m), then z = masks (.) theta.

        The top-k is a threshold, the round(sparsity * n)-th smallest score (``ties="prune_all"``: linear time, no
        host sync, the same cost at every sparsity, the same mask on a CPU and on CUDA); scores tied with it are all
        pruned, so with ties the sparsity can exceed the target by the tie count (continuous scores have none in
        practice; ``sparsity`` in the result is the one measured). Global: the threshold of the flat scores, found
        near the last one (``Threshold``); per layer and per unit: ``kth_smallest``."""
        if self.structure == "unstructured" and self.scope == "global":
            self.flat_mask.copy_(S.topk_mask(self.score_param, self.sparsity, ties="prune_all", kth=self.threshold))
        elif self.structure == "unstructured":
            for mask, s in zip(self.masks, self.scores):
                mask.copy_(S.topk_mask(s, self.sparsity, ties="prune_all", kth=kth_smallest))
        else:
            dim = 0 if self.structure == "filter" else 1
            for mask, s in zip(self.masks, self.scores):
                keep = S.topk_mask(unit_sums(s, dim), self.sparsity, ties="prune_all", kth=kth_smallest)
                mask.copy_(S.expand_structured(keep, s.shape, dim))
        self.write_weights()

    @torch.no_grad()
    def write_weights(self) -> None:
        for z, theta, mask in zip(self.z, self.theta, self.masks):
            torch.mul(theta, mask, out=z.data)

    # ------------------------------------------------------------------------------------------ gradients
    @torch.no_grad()
    def set_theta_grads(self, grad_z: list[torch.Tensor]) -> None:
        """grad_theta l = mask (.) grad_z l (computed in place: grad_z is not used afterwards)."""
        for theta, g in zip(self.theta, grad_z):
            theta.grad = g
        S.mask_grads(self.theta, self.masks)

    @torch.no_grad()
    def set_score_grads(self, grad_z: list[torch.Tensor], inv_gamma: float = 0.0) -> None:
        """grad_m l = theta (.) grad_z l (straight-through), minus (1/gamma) grad_z l (.) grad_theta l if inv_gamma > 0.

        grad_theta l = mask (.) grad_z l, so the sum is grad_z (.) (theta - (1/gamma) mask (.) grad_z), in place.
        """
        if inv_gamma > 0:
            factor = torch._foreach_mul(grad_z, self.masks)
            torch._foreach_mul_(factor, -inv_gamma)
            torch._foreach_add_(factor, self.theta)
        else:
            factor = self.theta
        if self.score_param.grad is None:
            self.score_param.grad = torch.zeros_like(self.score_param)
        for g, f, out in zip(grad_z, factor, self.score_grads()):
            torch.mul(g, f, out=out)

    def score_grads(self) -> list[torch.Tensor]:
        """Per-layer views of the scores' gradient."""
        return self._views(self.score_param.grad)

    @torch.no_grad()
    def ig_ratio(self, grad_z: list[torch.Tensor], inv_gamma: float) -> float:
        """||(1/gamma) grad_z (.) grad_theta|| / ||grad_m|| of an upper step's grad_z (a host sync: logging only)."""
        ig = sum(float((inv_gamma * m * g * g).pow(2).sum()) for g, m in zip(grad_z, self.masks)) ** 0.5
        ste = sum(float((g * t).pow(2).sum()) for g, t in zip(grad_z, self.theta)) ** 0.5
        return ig / max(ste, 1e-30)

    # ------------------------------------------------------------------------------------------ state
    def density(self) -> float:
        return float(self.flat_mask.sum()) / max(1, self.flat_mask.numel())

    def aimed_sparsity(self) -> float:
        """The sparsity the projection aims at: round(sparsity * n) of the n weights of the global scope, or of each
        layer's weights / filters / channels (ties at the threshold only add to it); structured, the whole units
        make it differ from ``sparsity`` (e.g. 29 of 32 channels: 90.6% for 90%)."""
        if self.structure == "unstructured" and self.scope == "global":
            return S.num_to_prune(self.sparsity, self.flat_mask.numel()) / max(1, self.flat_mask.numel())
        kept = sum(kept_units(z.shape, self.structure, self.sparsity) * z.numel()
                   // kept_units(z.shape, self.structure, 0.0) for z in self.z)
        return 1.0 - kept / max(1, self.flat_mask.numel())

    def mask_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.detach().cpu().clone() for n, m in zip(self.names, self.masks)}

    def state_dict(self) -> dict:
        return {"theta": [t.detach().clone() for t in self.theta], "scores": self.score_param.detach().clone(),
                "masks": self.flat_mask.clone()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for dst, src in zip(self.theta, state["theta"]):
            dst.copy_(src)
        self.score_param.copy_(state["scores"])
        self.flat_mask.copy_(state["masks"])
        self.write_weights()
