"""Gradual magnitude pruning (Zhu & Gupta 2017) in three stages, and its one-shot baseline.

    python -m gmp.prune --target-sparsity 0.9                 # GMP on the digits CNN (tiny profile)
    python -m gmp.prune --method oneshot --target-sparsity 0.9
    python -m gmp.prune --preset imagenet-resnet50            # the SparseML-style ResNet-50 recipe

GMP, starting from a trained dense model (Neural Magic's description of the stages):
  1. stabilization  (``stabilize_epochs``): train dense with a fresh optimizer at the pruning learning rate;
  2. pruning        (``prune_epochs``):     every ``update_every`` the masks are recomputed by magnitude so that the
                    sparsity follows the cubic schedule s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3;
  3. fine-tuning    (the remaining epochs): masks frozen at s_f, the LR decays, optionally without weight decay.
One-shot baseline: the dense model is pruned to s_f by magnitude at step 0, then trained for the same epochs with the
same learning rates; only the sparsity schedule differs.
The schedule and the masks are ``gmp.schedule.GradualPruner``, stepped once per optimizer step as in any training loop.
Pruned weights stay exactly zero: gradients are masked before each step, weights after it. A run whose final measured
sparsity misses s_f by more than 0.5 point is recorded as failed (``common.errors.check_sparsity``), never as done.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from common import config as C
from common import sparsity as S
from common.data import dataset_info, load_dataset
from common.errors import UserError, check_sparsity
from common.metrics import final_report
from common.models import MODEL_HELP, build_model, check_model
from common.pretrain import DenseStart, dense_runs, load_dense
from common.store import Run
from common.train import (LRSchedule, Optim, Progress, evaluate, lr_at, make_optimizer, resolve_device,
                          resumable_epochs, train_epoch)
from gmp.schedule import GradualPruner, PruningSteps

SCRIPT = "gmp.prune"


@dataclass
class Config(DenseStart):
    method: str = C.opt("gmp", "gmp (cubic gradual schedule) or oneshot (prune to the target at step 0)",
                        choices=("gmp", "oneshot"))
    model: str = C.opt("cnn", MODEL_HELP)
    target_sparsity: float = C.opt(0.9, "final sparsity s_f over the prunable weights, in [0, 1)")
    initial_sparsity: float = C.opt(0.05, "sparsity s_i of the first update of the pruning stage",
                                    when={"method": ("gmp",)})
    scope: str = C.opt("layer", "magnitude ranking per layer (uniform sparsity) or global", choices=("layer", "global"))
    exclude: tuple[str, ...] = C.opt(("first", "last"), "layers never pruned: first, last, or module-name patterns")
    epochs: int = C.opt(20, "total epochs of the pruning run (all three stages)")
    stabilize_epochs: int = C.opt(1, "stage 1 length in epochs")
    prune_epochs: int = C.opt(9, "stage 2 length in epochs; fine-tuning gets the rest")
    update_every: float = C.opt(1.0, "mask update frequency in the pruning stage, in update_unit",
                                when={"method": ("gmp",)})
    update_unit: str = C.opt("epochs", "unit of update_every (epochs allows fractions such as 0.4)",
                             choices=("epochs", "steps"), when={"method": ("gmp",)})
    optim: Optim = C.opt(Optim(), "optimizer of the pruning run")
    stabilize_lr: LRSchedule = C.opt(LRSchedule(lr=0.01, schedule="constant"), "LR schedule of stage 1")
    prune_lr: LRSchedule = C.opt(LRSchedule(lr=0.01, schedule="constant"), "LR schedule of stage 2")
    finetune_lr: LRSchedule = C.opt(LRSchedule(lr=0.01, schedule="multistep", milestones=(4.0, 7.0)),
                                    "LR schedule of stage 3 (default: /10 twice, like the blog's ImageNet run)")
    finetune_weight_decay: Optional[float] = C.opt(None, "weight decay during fine-tuning (None: keep optim's)")


PRESETS = {
    # SparseML's ResNet-50 ImageNet GMP recipe (Neural Magic's GMP blog; figures/reference/README.md): 90 epochs,
    # cubic 0.05 -> s_f over epochs 0-40 with an update every 0.4 epoch, lr 0.0028 (their bs 256 value, ours to keep)
    # with steps at 43 and 60, per-layer ranking (the scope default, as SparseML's GMPruningModifier), first conv and
    # classifier dense. Ours (the recipe does not give them): the dense model's 90-epoch step recipe, weight decay 1e-4
    # and SGD momentum 0.9 (Optim's default) of the pruning run.
    "imagenet-resnet50": {
        "dataset": "imagenet", "model": "resnet50", "pretrain.epochs": 90, "pretrain.lr": 0.1,
        "pretrain.weight_decay": 1e-4, "pretrain.batch_size": 256, "pretrain.schedule": "multistep",
        "pretrain.milestones": (30.0, 60.0, 80.0), "target_sparsity": 0.88, "initial_sparsity": 0.05,
        "exclude": ("first", "last"), "epochs": 90, "stabilize_epochs": 0, "prune_epochs": 40,
        "update_every": 0.4, "optim.batch_size": 256, "optim.weight_decay": 1e-4,
        "stabilize_lr.lr": 0.0028, "prune_lr.lr": 0.0028, "prune_lr.schedule": "constant",
        "finetune_lr.lr": 0.0028, "finetune_lr.schedule": "multistep", "finetune_lr.milestones": (3.0, 20.0),
    },
    # CIFAR-10 ResNet-20/56 (our choice; the blog gives no CIFAR recipe): 200-epoch dense model, then 100 epochs:
    # 2 stabilization, 48 pruning (update every epoch), 50 fine-tuning with cosine decay from 0.05.
    "cifar10-resnet20": {
        "dataset": "cifar10", "model": "resnet20", "pretrain.epochs": 200, "pretrain.lr": 0.1,
        "pretrain.weight_decay": 1e-4, "target_sparsity": 0.9, "exclude": ("first", "last"), "epochs": 100,
        "stabilize_epochs": 2, "prune_epochs": 48, "optim.weight_decay": 1e-4, "stabilize_lr.lr": 0.05,
        "prune_lr.lr": 0.05, "finetune_lr.lr": 0.05, "finetune_lr.schedule": "cosine", "finetune_lr.milestones": (),
    },
}
PRESETS["cifar10-resnet56"] = dict(PRESETS["cifar10-resnet20"], model="resnet56")


def validate(cfg: Config) -> None:
    info = dataset_info(cfg)  # unknown names fail here, before anything is computed
    check_model(cfg.model)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = build_model(cfg.model, info.num_classes, info.input_shape)
    params = S.pruned_layers(model, cfg.exclude)  # every pattern matches, some layer is left to prune
    S.check_sparsity(cfg.target_sparsity, "target-sparsity")
    S.check_keeps_some({n: p.numel() for n, p in params.items()}, cfg.target_sparsity, cfg.scope, "target-sparsity")
    S.check_sparsity(cfg.initial_sparsity, "initial-sparsity")
    if cfg.initial_sparsity > cfg.target_sparsity:
        raise UserError(f"--initial-sparsity {cfg.initial_sparsity} exceeds --target-sparsity {cfg.target_sparsity}")
    if min(cfg.epochs, cfg.stabilize_epochs, cfg.prune_epochs) < 0 or cfg.epochs < 1:
        raise UserError("epochs and stage lengths must be non-negative (and --epochs at least 1)")
    if cfg.stabilize_epochs + cfg.prune_epochs > cfg.epochs:
        raise UserError(f"stages exceed the total: stabilize {cfg.stabilize_epochs} + prune {cfg.prune_epochs} "
                        f"epochs > --epochs {cfg.epochs}; shorten a stage or raise --epochs")
    if cfg.method == "gmp" and cfg.prune_epochs < 1:
        raise UserError("--prune-epochs must be at least 1 for gmp (use --method oneshot to prune at once)")
    if not cfg.update_every > 0:
        raise UserError(f"--update-every {cfg.update_every} must be positive (masks are updated every N steps/epochs)")


def pruning_steps(cfg: Config, steps_per_epoch: int) -> PruningSteps:
    """t0, dt and n of the cubic schedule, in optimizer steps."""
    per = steps_per_epoch if cfg.update_unit == "epochs" else 1
    dt = max(1, round(cfg.update_every * per))
    stage = cfg.prune_epochs * steps_per_epoch
    if dt > stage:
        raise UserError(f"--update-every gives {dt} steps between updates, longer than the pruning stage "
                        f"({stage} steps); lower it or lengthen --prune-epochs")
    return PruningSteps(t0=cfg.stabilize_epochs * steps_per_epoch, dt=dt, n=stage // dt)


def stage_at(cfg: Config, t_epochs: float) -> tuple[str, LRSchedule, float, float]:
    """(stage name, its LR schedule, epochs into the stage, stage length) at fractional epoch ``t_epochs``."""
    bounds = [("stabilize", cfg.stabilize_lr, cfg.stabilize_epochs),
              ("prune", cfg.prune_lr, cfg.prune_epochs),
              ("finetune", cfg.finetune_lr, cfg.epochs - cfg.stabilize_epochs - cfg.prune_epochs)]
    start = 0.0
    for name, sched, length in bounds:
        if t_epochs < start + length or name == "finetune":
            return name, sched, t_epochs - start, length
        start += length
    raise AssertionError("unreachable")


def lr_of(cfg: Config, t_epochs: float) -> float:
    _, sched, into, length = stage_at(cfg, t_epochs)
    return lr_at(sched, into, length)


def dependencies(cfg: Config) -> list:
    """The runs the store executes before ``compute`` (``slurm.submit`` queues them ahead of it): the dense model."""
    return dense_runs(cfg)


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    return cfg.epochs * times.step(cfg.method)


def compute(cfg: Config, run: Run) -> dict:
    device = resolve_device(cfg.device)
    # The trained dense model theta (its own run in the store, trained once and shared by every pruning run).
    model, dense = load_dense(cfg, run, device)
    data = load_dataset(cfg, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=cfg.optim.batch_size, seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    steps = len(data.train)
    optimizer = make_optimizer(model.parameters(), cfg.optim, cfg.stabilize_lr.lr)  # a fresh optimizer (stage 1)

    def log_update(**record) -> None:  # each mask update, with the learning rate of its step
        run.log(**record, lr=lr_of(cfg, record["step"] / steps))

    # Masks over the prunable weights, recomputed by magnitude where the cubic schedule says (one-shot: a single
    # update, to s_f at step 0); the masks of step 0 are set here.
    plan = pruning_steps(cfg, steps) if cfg.method == "gmp" else PruningSteps(t0=0, dt=1, n=0)
    pruner = GradualPruner(model, optimizer, final_sparsity=cfg.target_sparsity, initial_sparsity=cfg.initial_sparsity,
                           start_step=plan.t0, end_step=plan.t0 + plan.n * plan.dt, every=plan.dt, scope=cfg.scope,
                           exclude=cfg.exclude, log=log_update)

    progress = Progress(cfg.progress)
    state = {"model": model, "optimizer": optimizer, "masks": pruner}
    loop = resumable_epochs(run, cfg.epochs, state)
    for epoch in loop:
        stage = stage_at(cfg, epoch)[0]
        wd = cfg.finetune_weight_decay if stage == "finetune" and cfg.finetune_weight_decay is not None \
            else cfg.optim.weight_decay
        for group in optimizer.param_groups:
            group["weight_decay"] = wd
        stats = train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                            lr_of_step=lambda s: lr_of(cfg, s / steps), before_step=lambda s: pruner.mask_grads(),
                            after_step=pruner.step, progress=progress, desc=f"{cfg.method} {epoch + 1}/{cfg.epochs}",
                            loop=loop)
        test = evaluate(model, data.test)
        run.log(epoch=epoch + 1, step=(epoch + 1) * steps, stage=stage, train_loss=stats["loss"],
                train_acc=stats["acc"], test_acc=test["acc"], sparsity=pruner.sparsity(),
                lr=lr_of(cfg, epoch), weight_decay=wd)
        progress.line(f"[{cfg.method}] epoch {epoch + 1}/{cfg.epochs} {stage:9s} loss {stats['loss']:.4f} "
                      f"test {test['acc']:.4f} sparsity {pruner.sparsity():.4f}")

    report = final_report(model, data, pruner.params)
    last_update = pruner.last_update
    check_sparsity(report["sparsity"], cfg.target_sparsity,
                   f"the schedule's last mask update (step {last_update}) is past the run's end (step "
                   f"{cfg.epochs * steps}); lengthen --epochs or shorten --prune-epochs / --update-every"
                   if last_update > cfg.epochs * steps else "the final masks do not have the target sparsity")
    run.save_model(model)
    return {**report, "dense_test_acc": dense["test_acc"], "steps_per_epoch": steps}


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
