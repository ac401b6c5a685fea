"""The per-step scale of an SA++ layer, W_eff = W (.) expand(clamp(softmax(L / T), lo, hi) (.) n Mask):

- ``softmax_scale``: the fast path every training step runs, an autograd function with a hand-written backward (the
  same gradients as autograd in fewer operations per layer and step: the expanded scale is materialized once and
  serves both W_eff and dW; the softmax backward is one kernel);
- ``softmax_scale_reference``: the same value by ordinary torch ops, autograd doing the backward;
- ``MaskCache``: n * Mask (n everywhere while the mask is not applied), recomputed only when the mask changes.

``lo``/``hi`` bound the softmax probabilities (the attention's clip range divided by n; None: no clipping).
"""
from __future__ import annotations

import torch

from common import sparsity as S
from seqattn.blocks import block_sum


class _SoftmaxScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, logits, nmask, view, temperature, lo, hi):
        z = logits.view(-1) if temperature == 1.0 else logits.view(-1) / temperature
        p = torch.softmax(z, 0)
        a = p if lo is None else p.clamp(lo, hi)
        s_full = view.expand(a.view_as(nmask) * nmask)
        ctx.save_for_backward(w, p, a, s_full, nmask)
        ctx.view, ctx.temperature, ctx.clipped = view, temperature, lo is not None
        return w * s_full

    @staticmethod
    def backward(ctx, g):
        w, p, a, s_full, nmask = ctx.saved_tensors
        grad_w = g * s_full if ctx.needs_input_grad[0] else None
        ga = (nmask * block_sum(ctx.view, g * w)).reshape(-1)        # dLoss/da
        if ctx.clipped:
            ga.masked_fill_(a != p, 0.0)                              # clamp passes gradient only inside [lo, hi]
        grad_l = torch._softmax_backward_data(ga, p, 0, p.dtype).view_as(nmask)
        return grad_w, grad_l if ctx.temperature == 1.0 else grad_l / ctx.temperature, None, None, None, None, None


def softmax_scale(w: torch.Tensor, logits: torch.Tensor, nmask: torch.Tensor, view: S.BlockView, temperature: float,
                  lo: float | None, hi: float | None) -> torch.Tensor:
    """W (.) expand(clamp(softmax(L / T), lo, hi) (.) nmask), with the hand-written backward."""
    return _SoftmaxScale.apply(w, logits, nmask, view, temperature, lo, hi)


def softmax_scale_reference(w: torch.Tensor, logits: torch.Tensor, nmask: torch.Tensor, view: S.BlockView,
                            temperature: float, lo: float | None, hi: float | None) -> torch.Tensor:
    """``softmax_scale`` by plain torch ops (autograd's backward): what the fast path must equal."""
    p = torch.softmax(logits.reshape(-1) / temperature, 0).view_as(nmask)
    return w * view.expand_reference((p if lo is None else p.clamp(lo, hi)) * nmask)


class MaskCache:
    """n * Mask of one layer (n everywhere while the mask is not applied), recomputed only when the mask changes:
    keyed on the mask tensor's version counter (bumped by every in-place write) and its storage."""

    def __init__(self):
        self.key, self.value = None, None

    def __call__(self, mask: torch.Tensor, n: float, applied: bool) -> torch.Tensor:
        key = (applied, mask._version, mask.data_ptr())
        if self.key != key:
            self.key, self.value = key, mask * n if applied else torch.full_like(mask, n)
        return self.value
