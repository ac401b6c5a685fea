"""SequentialAttention++ (Yasuda et al., Algorithm 1) and its baselines ACDC, block magnitude, block PowerProp, as one
object any training loop drives by its optimizer step count.

    controller = PhaseController(model, method="sapp", block=4, sparsity=0.9, total_steps=T)
    optimizer = controller.attach(torch.optim.SGD(controller.param_groups(), lr=0.05, momentum=0.9))
    for t in range(T):
        controller.begin_step(t)         # what starts at step t: a phase, a mask update
        ... forward, backward, optimizer.step() ...
    controller.finish()                  # the model computes with W_eff: plain weights, exactly zero pruned blocks

Algorithm 1 (SequentialAttention++), for every block-sparsified layer (a weight with >= ``min_blocks`` BxB blocks):
  1. logits L, one per block; attention A = n_blocks * softmax(L / T); the layer computes W_eff = W (.) A (.) Mask
     (``seqattn.attention``);
  2. phases of the ACDC-derived layout (``seqattn.phases``), the optimizer reset at every boundary:
     dense        Mask tracked (top-k of A at the phase's end, logged) but not applied;
     sparsify     Mask applied; the lowest-attention blocks are removed (W_b = 0, ``zero_pruned``) gradually,
                  the sparsity s(1-e^{-ct})/(1-e^{-c}) at t in [0, 1] over the phase's steps (0 at its first
                  step, s at its last; a mask update every ``mask_every`` steps);
     sparse       Mask frozen;
     and a final sparse (fine-tuning) phase;
  3. the model keeps W_eff: exactly zero pruned blocks.
Baselines on the same layer set, block views and training budget (scores: block magnitude of W_eff):
  acdc       dense warm-up, alternating sparse (top-k block magnitude, weights zeroed) / dense (momentum reset),
             final sparse phase;
  magnitude  dense training, keep the blocks with the largest Frobenius norm, fine-tune (final sparse phase);
  powerprop  dense training with each block multiplied by ||W_b||^(alpha-1), then block magnitude pruning, fine-tune.

Nothing needs doing after an optimizer step: the masks live in the parametrizations, and a mask installed with hard
pruning leaves the pruned weights and their optimizer state at zero, so one call per step, before its forward pass.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from seqattn import phases as P
from seqattn.attention import Reparam, clip_range
from seqattn.blocks import BlockLayers, block_topk

# The block scale of each method: SA++ attention, PowerProp's ||W_b||^(alpha-1), only the mask for ACDC and magnitude
KIND = {"sapp": "attention", "acdc": "mask", "magnitude": "mask", "powerprop": "power"}


class PhaseController:
    """Algorithm 1 over a model, driven by the optimizer step count, storing nothing.

    It owns the reparametrization (step 1; the SA++ logits are extra parameters: build the optimizer from
    ``param_groups()`` and ``attach`` it), the phase plan (step 2: ``plan``, in optimizer steps), the optimizer state
    resets at phase boundaries and the block scores. ``begin_step(t)`` must be called once before every step t, in
    order; ``finish()`` after the last one (step 3).

    The keyword arguments are those of ``python -m seqattn.prune`` (its flags, same names and defaults); the run length
    is ``total_steps`` or ``epochs`` x ``steps_per_epoch``. ``log``, when given, receives each event as
    ``log(defer=..., event=..., step=..., ...)``: ``phase`` (a phase starts; its ``end``), ``track`` (SA++ at a dense
    phase after the first: the fraction of kept blocks the top-k of A still selects), ``prune`` (masks installed; the
    ``target_sparsity`` and the block ``sparsity`` reached). The mask updates of a sparsification phase, one per step,
    come with ``defer=True`` and their ``sparsity`` a 0-d tensor on the masks' device (no host sync per step): a logger
    may hold them and read them later in one sync (``common.store.Run.log`` does), or ``float()`` them at once.
    """

    def __init__(self, model: nn.Module, *, method: str = "sapp", block: int = 4, sparsity: float = 0.9,
                 total_steps: int | None = None, epochs: int | None = None, steps_per_epoch: int | None = None,
                 phases: tuple[float, ...] = P.IMAGENET, sparsify_share: float = 0.5, sparsification: bool = True,
                 c: float = 4.0, mask_every: int = 1, short_dense_steps: int = 0, attention: str = "softmax",
                 temperature: float = 1.0, clip: str = "relative", scope: str = "layer", exclude=("last",),
                 min_blocks: int = 100, zero_pruned: bool = True, reset_optimizer: str = "auto", alpha: float = 2.0,
                 logit_weight_decay: float | None = None, log: Callable[..., None] | None = None):
        if method not in KIND:
            raise ValueError(f"method {method!r}: choose one of {', '.join(KIND)}")
        if reset_optimizer not in ("auto", "phase", "restore", "never"):
            raise ValueError(f"reset_optimizer {reset_optimizer!r}: choose auto, phase, restore or never")
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("give total_steps, or epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        self.model, self.method, self.sparsity, self.scope = model, method, sparsity, scope
        self.zero_pruned = zero_pruned
        self.reset = reset_optimizer if reset_optimizer != "auto" else ("restore" if method == "acdc" else "phase")
        self.logit_weight_decay, self.log, self.optimizer = logit_weight_decay, log, None
        # 1. One scale per block of every candidate layer: W_eff = W (.) S (.) Mask (S = A for SA++).
        layers = BlockLayers(model, block, exclude, min_blocks)
        self.reparam = Reparam(model, layers, KIND[method], attention=attention, temperature=temperature, alpha=alpha,
                               clip=lambda n: clip_range(clip, n, 1.0 - sparsity))
        self.device = next(iter(layers.params.values())).device
        # 2. The phase layout in steps, and the mask updates of its sparsification phases.
        self.plan = P.Plan(P.layout(method, phases, sparsify_share, sparsification), total_steps, sparsity=sparsity,
                           c=c, every=mask_every, short_dense_steps=short_dense_steps)

    # ---------------------------------------------------------------------------------------------- the optimizer
    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups: the model's weights, then the SA++ logits, with ``logit_weight_decay`` as
        their own weight decay when it is set (otherwise the optimizer's weight decay reaches them too)."""
        logits = self.reparam.logits()
        weights = [p for p in self.model.parameters() if all(p is not q for q in logits)]
        own = {} if self.logit_weight_decay is None else {"weight_decay": self.logit_weight_decay}
        return [{"params": weights}] + ([{"params": logits, **own}] if logits else [])

    def attach(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The optimizer made from ``param_groups()``: reset at phase boundaries, its state of pruned weights zeroed."""
        self.optimizer = optimizer
        return optimizer

    def resets_optimizer(self, kind: str) -> bool:
        """Whether the optimizer state is cleared where a phase of ``kind`` starts (not at step 0)."""
        return self.reset == "phase" or (self.reset == "restore" and kind == "dense")

    # ---------------------------------------------------------------------------------------------- 2. the phases
    def begin_step(self, t: int) -> None:
        """What starts at optimizer step ``t`` (call it before the step's forward pass): a phase (the optimizer reset,
        then its kind's handler) and/or a sparsification phase's mask update."""
        if self.optimizer is None:
            raise RuntimeError("attach the optimizer built from param_groups() before the first step")
        phase = self.plan.starts(t)
        if phase is not None:
            previous = self.plan.phase_at(t - 1).kind if t > 0 else None
            if t > 0 and self.resets_optimizer(phase.kind):
                self.optimizer.state.clear()  # paper: resetting the optimizer between phases is crucial
            {"dense": self.dense, "sparsify": self.sparsify, "sparse": self.sparse}[phase.kind](t, previous)
            self._log(event="phase", step=t, phase=phase.kind, end=phase.end)
        target = self.plan.targets.get(t)
        if target is not None:  # sparsify: remove the lowest-attention blocks among those still present
            self.prune(t, target, within=self.reparam.masks())

    def dense(self, t: int, previous: str | None) -> None:
        """dense: Mask tracked but not applied (SA++ logs how many kept blocks the top-k of A still selects)."""
        if previous is not None and self.method == "sapp" and self.log is not None:
            tracked, kept = block_topk(self.scores(), self.sparsity, self.scope), self.reparam.masks()
            same = sum(float((tracked[n] * kept[n]).sum()) for n in kept)
            self._log(event="track", step=t, kept_blocks_still_selected=same / max(1.0, sum(
                float(m.sum()) for m in kept.values())))
        self.reparam.apply(False)

    def sparsify(self, t: int, previous: str | None) -> None:
        """sparsify: Mask applied, from all blocks; the plan's mask updates then remove blocks gradually."""
        self.reparam.set_masks(self.reparam.layers.ones(self.device), applied=True)

    def sparse(self, t: int, previous: str | None) -> None:
        """sparse: Mask frozen after a sparsification phase; otherwise (ACDC, magnitude, powerprop, SA++ without
        sparsification phases) the top-k of the scores is installed at once."""
        if previous != "sparsify":
            self.prune(t, self.sparsity)

    def scores(self) -> dict[str, torch.Tensor]:
        """Block importance: the attention A (SA++) or the Frobenius norm of each block of W_eff (baselines)."""
        return self.reparam.attention() if self.method == "sapp" else self.reparam.effective_norms()

    @torch.no_grad()
    def prune(self, t: int, sparsity: float, within: dict[str, torch.Tensor] | None = None) -> None:
        """Keep the top-(1 - sparsity) scores (among the blocks ``within`` keeps); hard pruning (``zero_pruned``)
        sets W_b = 0; the pruned weights get no momentum / Adam moments either."""
        masks = block_topk(self.scores(), sparsity, self.scope, within=within)
        self.reparam.set_masks(masks, applied=True, zero_weights=self.zero_pruned, optimizer=self.optimizer)
        if self.log is not None:  # a sparsification phase's update at every step: no host sync (deferred record)
            step_level = within is not None
            self._log(event="prune", step=t, target_sparsity=sparsity,
                      sparsity=self.reparam.block_sparsity(sync=not step_level), defer=step_level)

    def _log(self, defer: bool = False, **record) -> None:
        if self.log is not None:
            self.log(defer=defer, **record)

    # ---------------------------------------------------------------------------------------------- state
    def phase(self, t: int) -> str:
        """The kind of the phase step ``t`` trains in (dense, sparsify or sparse)."""
        return self.plan.phase_at(t).kind

    def block_sparsity(self) -> float:
        """The fraction of all candidate blocks the masks remove (whether or not they are applied)."""
        return self.reparam.block_sparsity()

    def applied_sparsity(self) -> float:
        """The block sparsity the model computes with now: 0 while the masks are not applied (dense phases)."""
        return self.block_sparsity() if any(s.applied for s in self.reparam.scales.values()) else 0.0

    def logit_sd(self) -> float | None:
        """SA++: how far the block logits moved from L = 0, the largest of the layers' SDs over their blocks (where it
        stays near 0, softmax(L) and exp(L) differ by little more than a constant); None for the baselines."""
        return max((float(l.detach().float().std()) for l in self.reparam.logits()), default=None)

    def state_dict(self) -> dict:
        """What a resume needs beyond the model (whose state holds W, L and the masks) and the optimizer."""
        return self.reparam.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.reparam.load_state_dict(state)

    # ---------------------------------------------------------------------------------------------- 3. the end
    def finish(self) -> None:
        """Fold the scales and masks into the weights: the model computes with W_eff, plain layers, exactly zero
        pruned blocks."""
        self.reparam.fold()
