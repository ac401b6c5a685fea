"""SequentialAttention++ block sparsification (Yasuda et al.), and its baselines ACDC, block magnitude, block PowerProp.

    python -m seqattn.prune --method sapp --block 4 --sparsity 0.9      # tiny profile: digits MLP, 30 epochs
    python -m seqattn.prune --method acdc --block 1 --sparsity 0.9      # unstructured ACDC
    python -m seqattn.prune --preset imagenet-resnet50 --block 32 --sparsity 0.9 --data-dir /datasets
    python -m seqattn.prune --preset criteo --method powerprop --block 10 --sparsity 0.99

Algorithm 1 (SequentialAttention++), for every block-sparsified layer (a weight with >= ``min_blocks`` BxB blocks):
  1. logits L, one per block; attention A = n_blocks * softmax(L / T); the layer computes W_eff = W (.) A (.) Mask;
  2. phases of the ACDC-derived layout (``seqattn.phases``), the optimizer reset at every boundary (``Phases``):
     dense        Mask tracked (top-k of A at the phase's end, logged) but not applied;
     sparsify     Mask applied; the lowest-attention blocks are removed (W_b = 0, ``zero_pruned``) gradually,
                  the sparsity s(1-e^{-ct})/(1-e^{-c}) at t in [0, 1] over the phase's steps (0 at its first
                  step, s at its last; a mask update every ``mask_every`` steps);
     sparse       Mask frozen;
     and a final sparse (fine-tuning) phase;
  3. the model keeps W_eff: exactly zero pruned blocks.
Baselines on the same layer set, block views and training budget:
  acdc       dense warm-up, alternating sparse (top-k block magnitude, weights zeroed) / dense (momentum reset),
             final sparse phase;
  magnitude  dense training, keep the blocks with the largest Frobenius norm, fine-tune (final sparse phase);
  powerprop  dense training with each block multiplied by ||W_b||^(alpha-1), then block magnitude pruning, fine-tune.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from common import config as C
from common import prepare
from common import sparsity as S
from common.data import dataset_info, load_dataset
from common.errors import UserError, check_sparsity
from common.metrics import count_params, flops
from common.models import build_model, check_model
from common.pretrain import VAL_SIZE_HELP, Start
from common.store import Run
from common.train import (LRSchedule, Optim, Progress, evaluate, lr_at, make_optimizer, prepare_model,
                          resolve_device, resumable_epochs, train_epoch)
from seqattn import phases as P
from seqattn.attention import Reparam, clip_range
from seqattn.blocks import BlockLayers, block_topk

SCRIPT = "seqattn.prune"
# The training curve (--curve-every) is measured on this many training samples (all of them when fewer), un-augmented,
# drawn once with CURVE_SEED: the same images at every point and in every run.
CURVE_SAMPLES, CURVE_SEED = 10_000, 0
KIND = {"sapp": "attention", "acdc": "mask", "magnitude": "mask", "powerprop": "power"}
# The fields only SequentialAttention++ uses (its attention), and those only its sparsification phases use
SAPP = {"method": ("sapp",)}
SPARSIFY = {"method": ("sapp",), "sparsification": (True,)}


@dataclass
class Config(Start):
    method: str = C.opt("sapp", "sapp (SequentialAttention++), acdc, magnitude or powerprop", choices=tuple(KIND))
    val_size: int = C.opt(0, VAL_SIZE_HELP)
    block: int = C.opt(4, "block size B: BxB tiles of each weight seen as (H*W*Cin) x Cout; 1 = unstructured")
    sparsity: float = C.opt(0.9, "target sparsity s: fraction of blocks removed in each block-sparsified layer")
    scope: str = C.opt("layer", "uniform sparsity per layer (paper default) or one global ranking",
                       choices=("layer", "global"))
    exclude: tuple[str, ...] = C.opt(("last",), "layers never pruned: first, last, or module-name patterns")
    min_blocks: int = C.opt(100, "layers with fewer blocks than this stay dense (paper: 100)")
    epochs: int = C.opt(30, "training epochs (all phases; every method trains from scratch for this long)")
    optim: Optim = C.opt(Optim(), "optimizer")
    lr: LRSchedule = C.opt(LRSchedule(lr=0.05, schedule="cosine"), "LR schedule over the whole run (not reset "
                                                                     "at phase boundaries)")
    phases: tuple[float, ...] = C.opt(P.IMAGENET, "ACDC skeleton: fractions of all steps alternating "
                                                  "dense,sparse,...,dense,sparse (last = final sparse phase)")
    sparsify_share: float = C.opt(0.5, "sapp: share of each ACDC sparse phase that becomes a sparsification phase",
                                  when=SPARSIFY)
    sparsification: bool = C.opt(True, "sapp: gradual sparsification phases (false: masks set at once, ablation)",
                                 when=SAPP)
    c: float = C.opt(4.0, "sapp: steepness c of the exponential sparsification schedule", when=SPARSIFY)
    mask_every: int = C.opt(1, "sapp: steps between mask updates in a sparsification phase (1: every step, the "
                               "exponential schedule followed exactly; the phase's last step always reaches s)",
                            when=SPARSIFY)
    short_dense_steps: int = C.opt(0, "ablation: dense phases after the first last only this many steps (0: off)",
                                   when={"method": ("sapp", "acdc")})  # magnitude / powerprop have one dense phase
    attention: str = C.opt("softmax", "sapp: A = n * softmax(L/T) (mean 1) or unnormalized exp(L/T)",
                           choices=("softmax", "unnormalized"), when=SAPP)
    temperature: float = C.opt(1.0, "sapp: softmax temperature T", when=SAPP)
    clip: str = C.opt("relative", "sapp: attention clipping, relative: A in [d, 1/d] with d = 1 - s; literal: "
                                  "[n d, n/d] as the paper's text reads; none", choices=("relative", "literal", "none"),
                      when=SAPP)
    logit_weight_decay: Optional[float] = C.opt(None, "sapp: weight decay of the logits (None: optim.weight_decay)",
                                                when=SAPP)
    reset_optimizer: str = C.opt("auto", "optimizer state reset: at every phase boundary, when dense training "
                                         "resumes (restore), never; auto: phase for sapp/magnitude/powerprop, "
                                         "restore for acdc", choices=("auto", "phase", "restore", "never"))
    zero_pruned: bool = C.opt(True, "hard pruning: set the pruned blocks of W itself to zero when masks are installed "
                                    "(restored blocks restart from 0, as in ACDC); false: W kept, only W_eff masked")
    alpha: float = C.opt(2.0, "powerprop: exponent alpha (each block scaled by ||W_b||^(alpha-1))",
                         when={"method": ("powerprop",)})
    curve_every: int = C.opt(0, "log the training accuracy every this many steps, measured on a fixed subset of "
                                f"{CURVE_SAMPLES} training samples (0: once per epoch, the epoch's running mean)")


PRESETS = {
    # The paper's Table 1 setup (figures/reference/README.md): ResNet-50 ImageNet, 90 epochs, SGD, cosine, batch size
    # 2048, lr 0.8; the ACDC skeleton of Kuznedelev et al. 2023b. Ours (the paper does not give them): momentum 0.9,
    # weight decay 1e-4 (the logits get it too), a 5-epoch linear warm-up, every layer a candidate (exclude none).
    "imagenet-resnet50": {"dataset": "imagenet", "model": "resnet50", "epochs": 90, "optim.batch_size": 2048,
                          "optim.weight_decay": 1e-4, "lr.lr": 0.8, "lr.schedule": "cosine", "lr.warmup_epochs": 5.0,
                          "phases": P.IMAGENET, "exclude": ()},
    # The paper's Table 2 setup: Criteo, 390 -> 400 -> 400 -> 400 -> 1, only the first dense layer block-sparsified;
    # Adam, lr 2e-2 decaying exponentially to 3e-4, 25 epochs, batch size 32768; 20% dense, 10 sparse-dense, 20%
    # sparse. The paper finds weight decay on the logits helpful but gives no Criteo value; ours: 1e-4 on the logits
    # only (the decay the ImageNet preset's logits get), none on the model's weights.
    "criteo": {"dataset": "criteo", "model": "criteo_mlp", "epochs": 25, "optim.optimizer": "adam",
               "optim.batch_size": 32768, "optim.weight_decay": 0.0, "logit_weight_decay": 1e-4, "lr.lr": 2e-2,
               "lr.schedule": "exponential", "lr.final_lr": 3e-4, "phases": P.CRITEO, "exclude": ("net.[1-9]*",),
               "min_blocks": 100},
}


def validate(cfg: Config) -> None:
    info = dataset_info(cfg.dataset)
    check_model(cfg.model)
    S.check_sparsity(cfg.sparsity, "sparsity")
    P.check_skeleton(cfg.phases)
    for name, value in (("c", cfg.c), ("temperature", cfg.temperature), ("alpha", cfg.alpha)):
        if not value > 0:
            raise UserError(f"--{name} {value} must be > 0")
    if not 0.0 < cfg.sparsify_share <= 1.0:
        raise UserError(f"--sparsify-share {cfg.sparsify_share} must be in (0, 1]")
    if cfg.epochs < 1 or cfg.mask_every < 1 or cfg.min_blocks < 1:
        raise UserError("--epochs, --mask-every and --min-blocks must be at least 1")
    with torch.device("meta"):  # shapes only: no memory, no time
        model = build_model(cfg.model, info.num_classes, info.input_shape)
        layers = BlockLayers(model, cfg.block, cfg.exclude, cfg.min_blocks)  # check_block's checks
    S.check_keeps_some({n: v.n_blocks for n, v in layers.views.items()}, cfg.sparsity, cfg.scope, "sparsity", "blocks")


def loss_of(num_classes: int):
    """Cross-entropy for classifiers; binary cross-entropy with logits for one-logit models (Criteo)."""
    if num_classes > 1:
        return torch.nn.functional.cross_entropy

    def bce(out, y, reduction="mean"):
        return torch.nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), y.float(), reduction=reduction)
    return bce


def named(prefix: str, metrics: dict) -> dict:
    """``evaluate``'s metrics as record fields, e.g. test_loss and test_acc (classifiers) or test_auc (one logit)."""
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def reparametrize(cfg: Config, model, kind: str) -> Reparam:
    layers = BlockLayers(model, cfg.block, cfg.exclude, cfg.min_blocks)
    return Reparam(model, layers, kind, attention=cfg.attention, temperature=cfg.temperature, alpha=cfg.alpha,
                   clip=lambda n: clip_range(cfg.clip, n, 1.0 - cfg.sparsity))


def param_groups(cfg: Config, model, reparam: Reparam) -> list[dict]:
    """The optimizer's parameter groups: the model's weights, then the SA++ logits, with ``logit_weight_decay`` as
    their own weight decay when it is set (otherwise the optimizer's weight decay reaches them too)."""
    logits = reparam.logits()
    weights = [p for p in model.parameters() if all(p is not q for q in logits)]
    own = {} if cfg.logit_weight_decay is None else {"weight_decay": cfg.logit_weight_decay}
    return [{"params": weights}] + ([{"params": logits, **own}] if logits else [])


def resets_optimizer(cfg: Config, kind: str) -> bool:
    """Whether the optimizer state is cleared where a phase of ``kind`` starts (not at step 0)."""
    reset = cfg.reset_optimizer if cfg.reset_optimizer != "auto" else ("restore" if cfg.method == "acdc" else "phase")
    return reset == "phase" or (reset == "restore" and kind == "dense")


class CurveSubset:
    """``n`` training samples (all when the split has fewer) at positions drawn once with ``seed``, un-augmented, in
    batches of the split's size: what ``evaluate`` reads for a curve point."""

    def __init__(self, split, n: int, seed: int):
        self.split, self.batch_size = split, split.batch_size
        self.indices = torch.randperm(split.num_samples, generator=torch.Generator().manual_seed(seed))[:n]
        self.num_samples = len(self.indices)

    def epoch(self, epoch: int):
        for start in range(0, self.num_samples, self.batch_size):
            yield self.split.take(self.indices[start:start + self.batch_size])


class Phases:
    """Step 2 of Algorithm 1: what starts at a step -- a phase (the optimizer reset, then its kind's handler) and/or a
    sparsification phase's mask update. Record rule: a record (curve point, epoch) measures the model after a step
    and carries that step's phase; what starts at the next step runs after the measurement."""

    def __init__(self, cfg: Config, run: Run, plan: P.Plan, reparam: Reparam, optimizer, device, steps: int, curve):
        self.cfg, self.run, self.plan, self.reparam, self.optimizer = cfg, run, plan, reparam, optimizer
        self.device, self.steps, self.curve = device, steps, curve  # curve: (step, phase) -> None, or None

    def begin(self, t: int) -> None:
        phase = self.plan.starts(t)
        if phase is not None:
            previous = self.plan.phase_at(t - 1).kind if t > 0 else None
            if t > 0 and resets_optimizer(self.cfg, phase.kind):
                self.optimizer.state.clear()  # paper: resetting the optimizer between phases is crucial
            {"dense": self.dense, "sparsify": self.sparsify, "sparse": self.sparse}[phase.kind](t, previous)
            self.run.log(event="phase", step=t, phase=phase.kind, end=phase.end)
        target = self.plan.targets.get(t)
        if target is not None:  # sparsify: remove the lowest-attention blocks among those still present
            self.prune(t, target, within=self.reparam.masks())

    def after_step(self, t: int) -> None:
        if self.curve is not None and (t + 1) % self.cfg.curve_every == 0:
            self.curve(t + 1, self.plan.phase_at(t).kind)
        if (t + 1) % self.steps:  # after an epoch's last step: at the next epoch's start, once the epoch is measured
            self.begin(t + 1)

    def dense(self, t: int, previous: str | None) -> None:
        """dense: Mask tracked but not applied (SA++ logs how many kept blocks the top-k of A still selects)."""
        if previous is not None and self.cfg.method == "sapp":
            tracked, kept = block_topk(self.scores(), self.cfg.sparsity, self.cfg.scope), self.reparam.masks()
            same = sum(float((tracked[n] * kept[n]).sum()) for n in kept)
            self.run.log(event="track", step=t, kept_blocks_still_selected=same / max(1.0, sum(
                float(m.sum()) for m in kept.values())))
        self.reparam.apply(False)

    def sparsify(self, t: int, previous: str | None) -> None:
        """sparsify: Mask applied, from all blocks; the plan's mask updates then remove blocks gradually."""
        self.reparam.set_masks(self.reparam.layers.ones(self.device), applied=True)

    def sparse(self, t: int, previous: str | None) -> None:
        """sparse: Mask frozen after a sparsification phase; otherwise (ACDC, magnitude, powerprop, SA++ without
        sparsification phases) the top-k of the scores is installed at once."""
        if previous != "sparsify":
            self.prune(t, self.cfg.sparsity)

    def scores(self) -> dict[str, torch.Tensor]:
        """Block importance: the attention A (SA++) or the Frobenius norm of each block of W_eff (baselines)."""
        return self.reparam.attention() if self.cfg.method == "sapp" else self.reparam.effective_norms()

    @torch.no_grad()
    def prune(self, t: int, sparsity: float, within: dict[str, torch.Tensor] | None = None) -> None:
        """Keep the top-(1 - sparsity) scores (among the blocks ``within`` keeps); hard pruning (``zero_pruned``)
        sets W_b = 0; the pruned weights get no momentum / Adam moments either."""
        masks = block_topk(self.scores(), sparsity, self.cfg.scope, within=within)
        self.reparam.set_masks(masks, applied=True, zero_weights=self.cfg.zero_pruned, optimizer=self.optimizer)
        # a sparsification phase's update at every step: its record reaches the file with the next epoch's (one
        # host sync for them all, no write per step)
        step_level = within is not None
        self.run.log(event="prune", step=t, target_sparsity=sparsity,
                     sparsity=self.reparam.block_sparsity(sync=not step_level), defer=step_level)


def dependencies(cfg: Config) -> list:
    """The runs ``compute`` executes first: Criteo's one read of its text file (``common.prepare``), none otherwise."""
    return prepare.runs_for(cfg)


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    epochs = cfg.epochs * times.step(cfg.method)
    if cfg.curve_every:
        n = times.samples(cfg.dataset) - cfg.val_size
        points = cfg.epochs * math.ceil(n / cfg.optim.batch_size) // cfg.curve_every
        epochs += points * min(CURVE_SAMPLES, n) / n * times.step("eval")
    return epochs


def compute(cfg: Config, run: Run) -> dict:
    device = resolve_device(cfg.device)
    prepare.first(cfg)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=cfg.optim.batch_size, seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    model = prepare_model(build_model(cfg.model, data.info.num_classes, data.info.input_shape), device)
    loss_fn = loss_of(data.info.num_classes)
    # 1. One scale per block of every candidate layer: W_eff = W (.) S (.) Mask (S = A for SA++).
    reparam = reparametrize(cfg, model, KIND[cfg.method])
    optimizer = make_optimizer(param_groups(cfg, model, reparam), cfg.optim, cfg.lr.lr)
    steps = len(data.train)
    total = cfg.epochs * steps
    # 2. The phase layout in steps, each phase started by its handler (Phases).
    plan = P.Plan(P.layout(cfg.method, cfg.phases, cfg.sparsify_share, cfg.sparsification), total,
                  sparsity=cfg.sparsity, c=cfg.c, every=cfg.mask_every, short_dense_steps=cfg.short_dense_steps)
    curve_set = CurveSubset(data.train, CURVE_SAMPLES, CURVE_SEED) if cfg.curve_every else None
    curve = None if curve_set is None else lambda step, phase: run.log(
        event="curve", step=step, phase=phase, **named("train", evaluate(model, curve_set, loss_fn)))
    phases = Phases(cfg, run, plan, reparam, optimizer, device, steps, curve)

    progress = Progress(cfg.progress)
    state = {"model": model, "optimizer": optimizer, "reparam": reparam}
    classifier = data.info.num_classes > 1  # a one-logit model has a loss, no training accuracy
    for epoch in resumable_epochs(run, cfg.epochs, state):
        phases.begin(epoch * steps)
        stats = train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                            lr_of_step=lambda s: lr_at(cfg.lr, s / steps, cfg.epochs), after_step=phases.after_step,
                            loss_fn=loss_fn, progress=progress, desc=f"{cfg.method} {epoch + 1}/{cfg.epochs}")
        test = evaluate(model, data.test, loss_fn)
        phase = plan.phase_at((epoch + 1) * steps - 1).kind  # the record rule (Phases)
        applied = any(s.applied for s in reparam.scales.values())
        run.log(epoch=epoch + 1, step=(epoch + 1) * steps, phase=phase, train_loss=stats["loss"],
                **({"train_acc": stats["acc"]} if classifier else {}), **named("test", test),
                applied_sparsity=reparam.block_sparsity() if applied else 0.0, lr=lr_at(cfg.lr, epoch + 1, cfg.epochs))
        progress.line(f"[{cfg.method}] epoch {epoch + 1}/{cfg.epochs} {phase:8s} loss {stats['loss']:.4f} test "
                      + " ".join(f"{k} {v:.4f}" for k, v in test.items()))

    # 3. The final model computes with W_eff: fold the scales and the mask into the weights.
    block_sparsity = reparam.block_sparsity()
    check_sparsity(block_sparsity, cfg.sparsity, f"its {total} training steps ({cfg.epochs} epoch(s) of {steps}) are "
                   f"too few for the phase layout to prune to it (phases in steps: "
                   + ", ".join(f"{p.kind} {p.start}-{p.end}" for p in plan.phases)
                   + "); raise --epochs or lower --optim.batch-size")
    candidates = reparam.layers.names()
    # SA++: how far the block logits moved from L = 0 (the largest of the layers' SDs over their blocks): where they
    # stay near 0, softmax(L) and exp(L) differ by little more than a constant
    logit_sd = max((float(l.detach().float().std()) for l in reparam.logits()), default=None)
    reparam.fold()
    test = evaluate(model, data.test, loss_fn)
    rep = S.report(model, S.prunable(model, ()))
    run.save_model(model)
    layers = [dict(x, block_sparsified=x["layer"] in candidates) for x in rep["layers"]]
    # sparsity: of the weights of the block-sparsified layers, what was pruned (as gmp / bip report theirs);
    # model_sparsity: of every Conv2d / Linear weight, the excluded layers and those with < min_blocks blocks included
    pruned = 1.0 - sum(x["nonzero"] for x in layers if x["block_sparsified"]) \
        / sum(x["numel"] for x in layers if x["block_sparsified"])
    return {**named("test", test), "block_sparsity": block_sparsity, "candidate_sparsity": pruned,
            "steps_per_epoch": steps, "total_steps": total, "sparsity": pruned, "model_sparsity": rep["sparsity"],
            **({} if logit_sd is None else {"logit_sd": logit_sd}),
            "sparsity_all_params": rep["sparsity_all_params"], **count_params(model),
            **flops(model, data.info.input_shape, device), "layers": layers,
            "phases": [{"kind": p.kind, "start": p.start, "end": p.end} for p in plan.phases]}


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
