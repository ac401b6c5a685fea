"""Block reparameterizations: the effective weight each block-sparsified layer computes with.

    W_eff = W (.) expand(S (.) M)        S: one scale per block, M: the 0/1 block mask (when applied)

- SequentialAttention++ (paper §3.1): S = A, the softmax attention of the layer's block logits L,
      A = n_blocks * softmax(L / T)    (mean 1; ``unnormalized``: A = exp(L / T))
  optionally clipped (``clip``; the paper's text is ambiguous, see ``clip_range``);
- block PowerPropagation: S_b = ||W_b||_F^(alpha - 1), each block multiplied by (a power of) its own norm;
- ACDC / block magnitude: S = 1 (only the mask).

Each is a ``torch.nn.utils.parametrize`` parametrization of the layer's ``weight``: the optimizer sees W (and L), the
forward pass sees W_eff. ``fold`` writes W_eff into the weight and removes the parametrization (the final model is a
plain model with exactly zero pruned blocks). The scales cost one softmax over the blocks and one broadcast multiply
per layer and step; top-k runs only at mask updates.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from common import sparsity as S
from seqattn.blocks import BlockLayers, scale_blocks
from seqattn.fused import MaskCache, softmax_scale


def clip_range(mode: str, n_blocks: int, density: float) -> tuple[float, float] | None:
    """Bounds on A. The paper clips the attention to "[n * density, n / density]"; read literally for A of mean 1
    that range lies above the mean whenever n * density > 1, so by default we read it relative to the mean:
    ``relative`` A in [density, 1/density] (= softmax probabilities in [density/n, 1/(n density)]);
    ``literal`` A in [n density, n / density]; ``none`` no clipping."""
    if mode == "none" or density >= 1.0:
        return None
    if mode == "relative":
        return density, 1.0 / density
    if mode == "literal":
        return n_blocks * density, n_blocks / density
    raise ValueError(mode)


class BlockScale(nn.Module):
    """The parametrization W -> W (.) expand(S (.) M) of one layer (``kind``: attention, power or mask)."""

    def __init__(self, view: S.BlockView, kind: str, *, attention: str = "softmax", temperature: float = 1.0,
                 clip: tuple[float, float] | None = None, alpha: float = 2.0):
        super().__init__()
        self.view, self.kind = view, kind
        self.normalized, self.temperature, self.clip, self.alpha = attention == "softmax", temperature, clip, alpha
        if kind == "attention":
            self.logits = nn.Parameter(torch.zeros(view.grid))  # L = 0: A = 1, W_eff = W at the start
        self.register_buffer("mask", torch.ones(view.grid))
        self.applied = False  # dense phases track the mask without applying it (set from the phase plan)
        self._nmask = MaskCache()  # n * Mask for the fused scale

    def attention(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """A = n * softmax(L / T) (mean 1), or exp(L / T) when unnormalized; clipped if configured; times ``mask``.
        (Written as clamp(softmax, lo/n, hi/n) * n: the same values in fewer operations per step.)"""
        z = self.logits if self.temperature == 1.0 else self.logits / self.temperature
        n = float(self.view.n_blocks) if self.normalized else 1.0
        a = torch.softmax(z.reshape(-1), 0).view_as(z) if self.normalized else torch.exp(z)
        if self.clip is not None:
            a = a.clamp(self.clip[0] / n, self.clip[1] / n)
        return a * n if mask is None else a * (mask * n)

    def scale(self, w: torch.Tensor) -> torch.Tensor | None:
        if self.kind == "attention":
            return self.attention()
        if self.kind == "power":  # ||W_b||^(alpha-1), differentiable; clamped so that an all-zero block has no NaN
            sq = self.view.tiles(w).pow(2).sum(dim=(1, 3))
            return sq.clamp_min(1e-24).pow((self.alpha - 1.0) / 2.0)
        return None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "attention" and self.normalized:  # the fast path of every step (seqattn.fused)
            n = float(self.view.n_blocks)
            lo, hi = (None, None) if self.clip is None else (self.clip[0] / n, self.clip[1] / n)
            return softmax_scale(w, self.logits, self._nmask(self.mask, n, self.applied), self.view, self.temperature,
                                 lo, hi)
        if self.kind == "attention":
            s = self.attention(self.mask if self.applied else None)
        else:
            s = self.scale(w)
            if self.applied:
                s = self.mask if s is None else s * self.mask
        return w if s is None else scale_blocks(self.view, w, s)


class Reparam:
    """The BlockScale parametrizations of every candidate layer of a model, addressed by weight name."""

    def __init__(self, model: nn.Module, layers: BlockLayers, kind: str, **options):
        self.layers, self.kind = layers, kind
        self.scales: dict[str, BlockScale] = {}
        for name, view in layers.views.items():
            module = layers.modules[name]
            opts = dict(options)
            if callable(opts.get("clip")):
                opts["clip"] = opts["clip"](view.n_blocks)
            scale = BlockScale(view, kind, **opts).to(layers.params[name].device)
            if kind == "power":  # V_b = W_b / ||W_b||^((alpha-1)/alpha): W_eff starts at the model's init
                with torch.no_grad():
                    w = layers.params[name]
                    w.div_(view.expand(view.norms(w).clamp_min(1e-12).pow((scale.alpha - 1) / scale.alpha)))
            parametrize.register_parametrization(module, "weight", scale, unsafe=True)
            self.scales[name] = scale

    # ---------------------------------------------------------------------------------------------- scores
    def logits(self) -> list[nn.Parameter]:
        return [s.logits for s in self.scales.values() if self.kind == "attention"]

    @torch.no_grad()
    def attention(self) -> dict[str, torch.Tensor]:
        return {n: s.attention() for n, s in self.scales.items()}

    @torch.no_grad()
    def effective_norms(self) -> dict[str, torch.Tensor]:
        """Frobenius norm of every block of W_eff without the mask (magnitude scores of what the layer computes)."""
        out = {}
        for n, s in self.scales.items():
            w = self.layers.params[n]
            sc = s.scale(w)
            out[n] = s.view.norms(w) * (1.0 if sc is None else sc)
        return out

    # ---------------------------------------------------------------------------------------------- masks
    def masks(self) -> dict[str, torch.Tensor]:
        return {n: s.mask for n, s in self.scales.items()}

    def block_sparsity(self, sync: bool = True):
        """The fraction of all candidate blocks that the masks remove (whether or not the masks are applied): a float,
        or with ``sync=False`` a 0-d float64 tensor on the masks' device (no host sync; the same value)."""
        masks = list(self.masks().values())
        kept = torch.stack([m.sum(dtype=torch.float64) for m in masks]).sum()
        removed = 1.0 - kept / sum(m.numel() for m in masks)
        return float(removed) if sync else removed

    @torch.no_grad()
    def set_masks(self, masks: dict[str, torch.Tensor], applied: bool = True, zero_weights: bool = False,
                  optimizer: torch.optim.Optimizer | None = None) -> None:
        """Install block masks; ``zero_weights`` also sets the pruned blocks of W itself to zero (hard pruning), and
        with ``optimizer`` the pruned weights get no momentum / Adam moments either (the enforcement of
        ``common.sparsity`` on the expanded masks)."""
        for n, m in masks.items():
            self.scales[n].mask.copy_(m)
        if zero_weights or optimizer is not None:
            weights = [self.layers.params[n] for n in masks]
            full = [self.scales[n].view.expand(m).to(w.dtype) for (n, m), w in zip(masks.items(), weights)]
            if zero_weights:
                S.apply_masks(weights, full)
            if optimizer is not None:
                S.mask_optimizer_state(optimizer, weights, full)
        self.apply(applied)

    def apply(self, applied: bool) -> None:
        for s in self.scales.values():
            s.applied = applied

    def state_dict(self) -> dict:
        return {"applied": torch.tensor(any(s.applied for s in self.scales.values()))}

    def load_state_dict(self, state: dict) -> None:
        self.apply(bool(state["applied"]))

    # ---------------------------------------------------------------------------------------------- the end
    @torch.no_grad()
    def fold(self) -> None:
        """Replace every parametrized weight by W_eff (mask applied) and remove the parametrizations."""
        self.apply(True)
        for name in self.scales:
            parametrize.remove_parametrizations(self.layers.modules[name], "weight", leave_parametrized=True)
