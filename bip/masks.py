"""One magnitude-pruning round of IMP and OMP, for any training loop: masks in, masks out.

    masks = Masks(prunable(model, ("last",)))       # common.sparsity: the one enforcement of masks
    for sparsity in (0.2, 0.36, 0.488):              # IMP: 20% of the remaining weights per round (OMP: one round)
        masks.set(magnitude_masks(model, sparsity, within=masks.masks), optimizer)
        # (rewinding: load the early weights here, then masks.apply())
        for x, y in batches:                          # retrain under the mask
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            masks.mask_grads()
            optimizer.step()
            masks.apply()

The round ranks the prunable weights (every Conv2d / Linear weight but ``exclude``: "first", "last" or module-name
patterns) by magnitude, over all of them (``scope`` "global", Ma et al.'s IMP) or per layer ("layer"), and keeps all
but exactly round(sparsity * n) (``common.sparsity.topk_mask``, ties="exact"). ``within``: the previous round's masks
(IMP); the weights they prune rank as zero, so they stay pruned and count towards ``sparsity``.
"""
from __future__ import annotations

import torch
from torch import nn

from common import sparsity as S


def magnitude_masks(model: nn.Module, sparsity: float, *, within: dict[str, torch.Tensor] | None = None,
                    scope: str = "global", exclude=("last",)) -> dict[str, torch.Tensor]:
    """``{weight name: bool mask}`` keeping the largest-magnitude weights, ``sparsity`` of them pruned."""
    scores = S.magnitudes(S.prunable(model, exclude))
    if within is not None:
        scores = {n: s * within[n] for n, s in scores.items()}
    return S.topk_masks(scores, sparsity, scope, ties="exact")
