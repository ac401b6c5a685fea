"""BiP's two steps (Algorithm A1) and Hydra's score step on one batch, for any training loop.

    steps = bip_steps(model, 0.9, lower=partial(torch.optim.SGD, lr=0.01, momentum=0.9),
                      upper=partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    for epoch in range(epochs):
        for x, y in batches:
            steps.lower(x, y)      # theta_{t+1} = theta_t - beta grad_theta l(top-k(m_t) (.) theta_t)
            steps.upper(x, y)      # m_{t+1} = m_t - alpha [grad_m l - (1/gamma) grad_z l (.) grad_theta l], new mask
    steps.w.density()              # 1 - sparsity; the model's weights hold mask (.) theta throughout

Hydra (``hydra_steps``, the same arguments): ``upper`` alone (the scores, weights frozen) for the score epochs, then
``lower`` alone (the weights, mask fixed) for the fine-tuning epochs. ``lower`` and ``upper`` make the user's
optimizers from a list of tensors (a class such as ``torch.optim.SGD`` with its settings bound): the lower one gets the
weights theta of the pruned layers and every other parameter of the model, the upper one the scores. Each step takes
an optional learning rate (set on its optimizer first; None: the optimizer's own, e.g. from an LR scheduler). The
loss is ``loss(model, x, y)`` (default: cross-entropy of ``model(x)`` in the caller's precision). The scores, masks
and weights are ``bip.scores.ScoredWeights`` (``steps.w``; its ``state_dict`` checkpoints them).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bip.scores import ScoredWeights
from common import sparsity as S


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


class BiLevelSteps:
    """The two steps of Algorithm A1 on one batch, each one forward and one backward pass, no host sync.

    ``hydra``: the score step is the training step (Hydra has no lower step while it learns the scores), so it
    updates BatchNorm's running statistics; BiP's leaves them to the lower step."""

    def __init__(self, model: nn.Module, w: ScoredWeights, opt_theta: torch.optim.Optimizer,
                 opt_m: torch.optim.Optimizer, inv_gamma: float, loss: Callable = cross_entropy, hydra: bool = False):
        self.model, self.w, self.opt_theta, self.opt_m = model, w, opt_theta, opt_m
        self.inv_gamma, self.loss, self.hydra = inv_gamma, loss, hydra
        self.norms = [m for m in model.modules()
                      if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]

    def lower(self, x, y, lr: float | None = None) -> torch.Tensor:
        """theta_{t+1} = theta_t - beta grad_theta l(top-k(m_t) (.) theta_t)   (and the unpruned params' SGD step)."""
        _set_lr(self.opt_theta, lr)
        loss = self.loss(self.model, x, y)
        self.opt_theta.zero_grad(set_to_none=True)
        for z in self.w.z:
            z.grad = None
        loss.backward()
        self.w.set_theta_grads([z.grad for z in self.w.z])        # grad_theta l = mask (.) grad_z l
        self.opt_theta.step()
        self.w.write_weights()                                     # z = mask (.) theta_{t+1}
        return loss.detach()

    def upper(self, x, y, lr: float | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """m_{t+1} = m_t - alpha [grad_m l - (1/gamma) grad_z l (.) grad_theta l], then the mask top-k(m_{t+1}).
        Returns the loss and grad_z l (for the logged ig_ratio).

        BatchNorm normalizes with the batch's statistics and, unless ``hydra`` (whose score step has no lower step),
        leaves the running statistics to the lower step: in train mode with ``track_running_stats`` off, PyTorch's
        BatchNorm uses the batch's statistics and neither reads nor writes its running buffers.
        """
        _set_lr(self.opt_m, lr)
        for bn in self.norms:
            bn.track_running_stats = self.hydra
        try:
            loss = self.loss(self.model, x, y)
        finally:
            for bn in self.norms:
                bn.track_running_stats = True
        grad_z = torch.autograd.grad(loss, self.w.z)
        self.w.set_score_grads(list(grad_z), self.inv_gamma)
        self.opt_m.step()
        self.w.project()
        return loss.detach(), grad_z


def bip_steps(model: nn.Module, sparsity: float, lower: Callable, upper: Callable, *, gamma: float = 1e4,
              structure: str = "unstructured", scope: str = "global", exclude=("last",), score_init: float = 1.0,
              loss: Callable = cross_entropy) -> BiLevelSteps:
    """BiP's steps on ``model``: scores m_0 = ``score_init`` |theta| of its prunable weights (every Conv2d / Linear
    weight but ``exclude``: "first", "last" or module-name patterns; filter / channel ``structure``: the conv ones),
    the mask top-k(m_0) at ``sparsity`` (``bip.scores``; ``scope`` global or layer when unstructured), and the
    optimizers ``lower(theta + other parameters)`` and ``upper([scores])``. ``gamma``: the lower level's
    regularization, the IG term scaled by 1/gamma (math.inf: no IG term, the plain straight-through gradient)."""
    return _steps(model, sparsity, lower, upper, 1.0 / gamma, False, structure, scope, exclude, score_init, loss)


def hydra_steps(model: nn.Module, sparsity: float, lower: Callable, upper: Callable, *,
                structure: str = "unstructured", scope: str = "global", exclude=("last",), score_init: float = 1.0,
                loss: Callable = cross_entropy) -> BiLevelSteps:
    """Hydra's steps on ``model`` (``bip_steps``' arguments; no IG term): ``upper`` learns the scores with the
    weights frozen, then ``lower`` fine-tunes the weights under the fixed mask."""
    return _steps(model, sparsity, lower, upper, 0.0, True, structure, scope, exclude, score_init, loss)


def _steps(model, sparsity, lower, upper, inv_gamma, hydra, structure, scope, exclude, score_init, loss):
    params = S.prunable(model, exclude)
    if structure != "unstructured":
        params = {n: p for n, p in params.items() if p.dim() == 4}
    if not params:
        raise ValueError(f"no prunable {'conv ' if structure != 'unstructured' else ''}layer is left after exclude "
                         f"{tuple(exclude)}")
    w = ScoredWeights(params, sparsity, structure, scope, score_init)                    # m_0, top-k(m_0)
    others = [p for p in model.parameters() if all(p is not z for z in w.z)]           # biases, BN: trained with theta
    return BiLevelSteps(model, w, lower(w.theta + others), upper([w.score_param]), inv_gamma, loss, hydra)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float | None) -> None:
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
