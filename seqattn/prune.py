"""SequentialAttention++ block sparsification (Yasuda et al.), and its baselines ACDC, block magnitude, block PowerProp.

    python -m seqattn.prune --method sapp --block 4 --sparsity 0.9      # tiny profile: digits MLP, 30 epochs
    python -m seqattn.prune --method acdc --block 1 --sparsity 0.9      # unstructured ACDC
    python -m seqattn.prune --preset imagenet-resnet50 --block 32 --sparsity 0.9 --data-dir /datasets
    python -m seqattn.prune --preset criteo --method powerprop --block 10 --sparsity 0.99

The algorithm (Algorithm 1 and the baselines' phases) is ``seqattn.controller.PhaseController``, a store-free object
driven by the optimizer step count; this script builds it from its ``Config`` (``controller``), trains the model from
scratch with it, logs its events to the run, and measures the model after every epoch (and every ``--curve-every``
steps on a fixed training subset) and at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from common import config as C
from common import prepare
from common import sparsity as S
from common.data import Split, dataset_info, load_dataset
from common.errors import UserError, check_sparsity
from common.metrics import final_report
from common.models import build_model, check_model
from common.pretrain import VAL_SIZE_HELP, GivenStart, start_model
from common.store import Run
from common.train import (LRSchedule, Optim, Progress, evaluate, lr_at, make_optimizer, prepare_model,
                          resolve_device, resumable_epochs, train_epoch)
from seqattn import phases as P
from seqattn.blocks import BlockLayers
from seqattn.controller import KIND, PhaseController

SCRIPT = "seqattn.prune"
# The training curve (--curve-every) is measured on this many training samples (all of them when fewer), un-augmented,
# drawn once with CURVE_SEED: the same images at every point and in every run.
CURVE_SAMPLES, CURVE_SEED = 10_000, 0
# The fields only SequentialAttention++ uses (its attention), and those only its sparsification phases use
SAPP = {"method": ("sapp",)}
SPARSIFY = {"method": ("sapp",), "sparsification": (True,)}


@dataclass
class Config(GivenStart):
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
    info = dataset_info(cfg)
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


def controller(cfg: Config, model, steps_per_epoch: int, log=None) -> PhaseController:
    """The phase controller of ``cfg`` over ``model`` (its fields passed as they are), ``log`` receiving its events."""
    return PhaseController(
        model, method=cfg.method, block=cfg.block, sparsity=cfg.sparsity, epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch, phases=cfg.phases, sparsify_share=cfg.sparsify_share,
        sparsification=cfg.sparsification, c=cfg.c, mask_every=cfg.mask_every, short_dense_steps=cfg.short_dense_steps,
        attention=cfg.attention, temperature=cfg.temperature, clip=cfg.clip, scope=cfg.scope, exclude=cfg.exclude,
        min_blocks=cfg.min_blocks, zero_pruned=cfg.zero_pruned, reset_optimizer=cfg.reset_optimizer, alpha=cfg.alpha,
        logit_weight_decay=cfg.logit_weight_decay, log=log)


class CurveSubset(Split):
    """``n`` training samples (all when the split has fewer) at positions drawn once with ``seed``, un-augmented, in
    batches of the split's size: what ``evaluate`` reads for a curve point (with several ranks, each its rows)."""

    def __init__(self, split, n: int, seed: int):
        self.split, self.batch_size = split, split.batch_size
        self.indices = torch.randperm(split.num_samples, generator=torch.Generator().manual_seed(seed))[:n]
        self.num_samples = len(self.indices)
        self.held = None  # ((start, rank, world), its batches): decoded at the first point, read at every other one

    def epoch(self, epoch: int, start: int = 0, rank: int = 0, world: int = 1):
        if self.held is None or self.held[0] != (start, rank, world):
            self.held = (start, rank, world), [self.split.take(self.indices[rows.start:rows.stop:rows.step])
                                               for rows in self.shards(start, rank, world)]
        return iter(self.held[1])


def dependencies(cfg: Config) -> list:
    """The runs the store executes before ``compute``: Criteo's one read of its text file (``common.prepare``), none
    otherwise."""
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
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=cfg.optim.batch_size, seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    model = prepare_model(start_model(cfg, data.info), device)  # initialized, or the given weights
    loss_fn = loss_of(data.info.num_classes)
    steps = len(data.train)
    total = cfg.epochs * steps
    # Algorithm 1's block scales (W_eff = W (.) S (.) Mask, S = A for SA++) and phases, its events logged to the run
    ctl = controller(cfg, model, steps, run.log)
    optimizer = ctl.attach(make_optimizer(ctl.param_groups(), cfg.optim, cfg.lr.lr))
    curve_set = CurveSubset(data.train, CURVE_SAMPLES, CURVE_SEED) if cfg.curve_every else None

    def after_step(t: int) -> None:
        """Record rule: a record (curve point, epoch) measures the model after a step and carries that step's phase;
        what starts at the next step runs after the measurement (after an epoch's last step: once the epoch is
        measured, at the next epoch's start)."""
        if curve_set is not None and (t + 1) % cfg.curve_every == 0:
            run.log(event="curve", step=t + 1, phase=ctl.phase(t),
                    **named("train", evaluate(model, curve_set, loss_fn)))
        if (t + 1) % steps:
            ctl.begin_step(t + 1)

    progress = Progress(cfg.progress)
    state = {"model": model, "optimizer": optimizer, "reparam": ctl}
    classifier = data.info.num_classes > 1  # a one-logit model has a loss, no training accuracy
    loop = resumable_epochs(run, cfg.epochs, state)
    for epoch in loop:
        ctl.begin_step(epoch * steps)
        stats = train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                            lr_of_step=lambda s: lr_at(cfg.lr, s / steps, cfg.epochs), after_step=after_step,
                            loss_fn=loss_fn, progress=progress, desc=f"{cfg.method} {epoch + 1}/{cfg.epochs}",
                            loop=loop)
        test = evaluate(model, data.test, loss_fn)
        phase = ctl.phase((epoch + 1) * steps - 1)  # the record rule (after_step)
        run.log(epoch=epoch + 1, step=(epoch + 1) * steps, phase=phase, train_loss=stats["loss"],
                **({"train_acc": stats["acc"]} if classifier else {}), **named("test", test),
                applied_sparsity=ctl.applied_sparsity(), lr=lr_at(cfg.lr, epoch + 1, cfg.epochs))
        progress.line(f"[{cfg.method}] epoch {epoch + 1}/{cfg.epochs} {phase:8s} loss {stats['loss']:.4f} test "
                      + " ".join(f"{k} {v:.4f}" for k, v in test.items()))

    block_sparsity = ctl.block_sparsity()
    check_sparsity(block_sparsity, cfg.sparsity, f"its {total} training steps ({cfg.epochs} epoch(s) of {steps}) are "
                   f"too few for the phase layout to prune to it (phases in steps: "
                   + ", ".join(f"{p.kind} {p.start}-{p.end}" for p in ctl.plan.phases)
                   + "); raise --epochs or lower --optim.batch-size")
    candidates = ctl.reparam.layers.names()
    logit_sd = ctl.logit_sd()
    ctl.finish()  # the final model computes with W_eff: the scales and the mask folded into the weights
    run.save_model(model)
    # model_sparsity: of every Conv2d / Linear weight, the excluded layers and those with < min_blocks blocks included;
    # sparsity: of the weights of the block-sparsified layers, what was pruned (as gmp / bip report theirs)
    report = final_report(model, data, S.prunable(model, ()), loss_fn=loss_fn, sparsity_key="model_sparsity")
    layers = report["layers"] = [dict(x, block_sparsified=x["layer"] in candidates) for x in report["layers"]]
    pruned = 1.0 - sum(x["nonzero"] for x in layers if x["block_sparsified"]) \
        / sum(x["numel"] for x in layers if x["block_sparsified"])
    return {**report, "block_sparsity": block_sparsity, "candidate_sparsity": pruned, "steps_per_epoch": steps,
            "total_steps": total, "sparsity": pruned, **({} if logit_sd is None else {"logit_sd": logit_sd}),
            "phases": [{"kind": p.kind, "start": p.start, "end": p.end} for p in ctl.plan.phases]}


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
