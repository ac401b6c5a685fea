"""The block-sparsified layers of a model: which weights are candidates, their BxB block grids, block masks.

A weight is seen through ``common.sparsity.BlockView`` as a (H*W*Cin) x Cout matrix (Linear: in x out) cut into BxB
tiles. A layer takes part only when its grid has at least ``min_blocks`` tiles (the paper leaves layers with fewer
than 100 blocks dense). One value per block (a score, a 0/1 mask, an attention weight) is a tensor of the grid's shape;
``BlockView.expand`` broadcasts it to the weight's shape, ``block_sum`` is its adjoint.
"""
from __future__ import annotations

import torch
from torch import nn

from common import sparsity as S
from common.errors import UserError


def scale_blocks(view: S.BlockView, w: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """w (.) expand(values): one contiguous multiply."""
    return w * view.expand(values)


def block_sum(view: S.BlockView, t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` (a weight-shaped tensor) over every block: shape ``view.grid`` (the adjoint of ``expand``).
    Exact tilings first sum the B output rows of each block (contiguous), then the B inputs (a small mat-vec)."""
    if not view.exact:
        return view.tiles(t).sum(dim=(1, 3))
    b, (gr, gc) = view.block, view.grid
    ones = t.new_ones(b)
    if t.dim() == 2:
        return (t.view(gc, b, -1).sum(dim=1).view(gc, gr, b) @ ones).t()
    cout, cin, h, k = t.shape
    per = t.view(gc, b, cin, h, k).sum(dim=1).view(gc, cin // b, b, h * k).transpose(2, 3) @ ones  # (gc, cin/B, hk)
    return per.view(gc, cin // b, h, k).permute(2, 3, 1, 0).reshape(gr, gc)


class BlockLayers:
    """The candidate weights ``{name: parameter}`` of a model and one ``BlockView`` each, for block size ``block``."""

    def __init__(self, model: nn.Module, block: int, exclude=("last",), min_blocks: int = 100):
        check_block(model, block, exclude, min_blocks)
        self.block = block
        self.views, self.params, self.modules = {}, {}, {}
        modules = dict(model.named_modules())
        for name, p in S.prunable(model, exclude).items():
            view = S.BlockView(p.shape, block)
            if view.n_blocks >= min_blocks:
                self.views[name], self.params[name] = view, p
                self.modules[name] = modules[name.rsplit(".", 1)[0]]

    def names(self) -> list[str]:
        return list(self.views)

    def ones(self, device) -> dict[str, torch.Tensor]:
        return {n: torch.ones(v.grid, device=device) for n, v in self.views.items()}


def check_block(model: nn.Module, block: int, exclude, min_blocks: int) -> None:
    """A block size must be positive and leave at least one candidate layer with ``min_blocks`` blocks."""
    if block < 1:
        raise UserError(f"--block {block} must be a positive block size (1 = unstructured), e.g. --block 8")
    params = S.pruned_layers(model, exclude)
    views = [S.BlockView(p.shape, block) for p in params.values()]
    if all(block > min(v.rows, v.cols) for v in views):
        largest = max(min(v.rows, v.cols) for v in views)
        raise UserError(f"--block {block} is larger than every prunable layer (the largest fits {largest}x{largest} "
                        f"blocks); choose --block {largest} or less")
    if all(v.n_blocks < min_blocks for v in views):
        most = max(v.n_blocks for v in views)
        raise UserError(f"with --block {block} no prunable layer has --min-blocks {min_blocks} blocks (the largest "
                        f"has {most}); lower --block or --min-blocks")


def block_topk(scores: dict[str, torch.Tensor], sparsity: float, scope: str,
               within: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """0/1 block masks keeping the highest scores (per layer or global). With ``within``, blocks already removed
    (mask 0) stay removed: they rank below every live block (backward elimination)."""
    if within is not None:
        scores = {n: s.masked_fill(within[n] == 0, float("-inf")) for n, s in scores.items()}
    return {n: m.float() for n, m in S.topk_masks(scores, sparsity, scope, ties="exact").items()}
