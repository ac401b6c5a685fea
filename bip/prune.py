"""BiP: model pruning as bi-level optimization (Zhang et al., NeurIPS 2022, Algorithm A1), and the Hydra baseline.

    python -m bip.prune --target-sparsity 0.9                    # BiP, digits MLP, global unstructured
    python -m bip.prune --model cnn --structure filter --exclude first --target-sparsity 0.5
    python -m bip.prune --ig none                                # ablation: upper step = plain straight-through
    python -m bip.prune --method hydra                           # scores only (weights frozen), then fine-tuning
    python -m bip.prune --preset cifar10-resnet18 --data-dir /datasets

    min_{m in S} l(m (.) theta*(m))   s.t.   theta*(m) = argmin_theta l(m (.) theta) + gamma/2 ||theta||^2

Algorithm A1, from the pretrained dense theta and scores m_0 = c|theta| (bip/scores.py), every iteration t on a batch:
  lower:  theta_{t+1} = theta_t - beta * grad_theta l(top-k(m_t) (.) theta_t)           (K steps, default 1)
  upper:  m_{t+1} = m_t - alpha * [grad_m l - (1/gamma) grad_z l (.) grad_theta l] at z = top-k(m_t) (.) theta_{t+1}
  project: the binary mask top-k(m_{t+1}) and z for the next lower step.
Each step is one forward and one backward pass; the two levels have their own optimizers and LR schedules.
BatchNorm: both forwards normalize with the batch's statistics (train mode), but only the lower step -- the training
step -- updates the running statistics, once per iteration; the upper step evaluates a gradient at theta_{t+1} and
leaves them as they are.
Hydra: upper steps only (grad_m l, weights frozen) for ``epochs``, then ``finetune_epochs`` of lower steps with the
mask fixed; having no lower step, its score step is its training step and updates the running statistics.
The final model is evaluated with its binary mask, after the last epoch (no model selection; the test set is
evaluated once, at the end); a final sparsity more than 0.5 point off the one the top-k aims at (the target; to whole
filters / channels when structured) is a failed run, e.g. with scores tied at the threshold, which are all pruned.
Each epoch logs the fraction of mask entries that differ from the magnitude mask and ig_ratio =
||(1/gamma) grad_z (.) grad_theta|| / ||grad_m l|| on the epoch's last batch (how much the IG term weighs against the
straight-through gradient; computed with the configured gamma even under --ig none).
One process, one GPU: the two levels' steps are not data-parallel, so a job of several processes (torchrun, a Slurm
job of several tasks) is refused before anything is computed. The bi-level loop checkpoints within an epoch like the
other scripts' training (``common.train.epoch_batches``: every --checkpoint-every-minutes, or at a Slurm job's stop
signal) and a resume continues at that batch exactly.
The two steps are ``bip.bilevel.BiLevelSteps`` (``bip_steps`` / ``hydra_steps`` build them from a model and the
optimizers' settings, as in any training loop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch

from bip.config import Base, Level, data_of, forward_loss, method_start, prunable_of, validate_base
from bip.bilevel import bip_steps, hydra_steps
from bip.scores import STRUCTURES, check_keeps_some
from common import config as C
from common import distributed
from common.errors import Diverged, UserError, check_sparsity
from common.metrics import final_report
from common.pretrain import dense_runs, load_dense
from common.store import Run
from common.train import Progress, epoch_batches, lr_at, make_optimizer, resolve_device, resumable_epochs

SCRIPT = "bip.prune"
# Why this script runs in one process on one GPU: it refuses more (validate), and slurm.resources gives its jobs one task
ONE_PROCESS = "the two levels' steps are not data-parallel"


@dataclass
class Config(Base):
    method: str = C.opt("bip", "bip (bi-level) or hydra (scores only, then fine-tuning)", choices=("bip", "hydra"))
    structure: str = C.opt("unstructured", "what a mask entry covers: a weight, a filter or an input channel",
                           choices=STRUCTURES)
    scope: str = C.opt("global", "unstructured top-k over all layers together or per layer (filter/channel: always "
                                 "per layer)", choices=("global", "layer"), when={"structure": ("unstructured",)})
    epochs: int = C.opt(10, "BiP epochs (one lower step per batch); hydra: score epochs")
    lower_steps: int = C.opt(1, "K: lower-level steps per upper-level step", when={"method": ("bip",)})
    batch_size: int = C.opt(128, "batch size of both levels")
    lower: Level = C.opt(Level(lr=0.01, schedule="cosine"), "lower level: SGD on the weights (paper: lr 0.01)")
    upper: Level = C.opt(Level(lr=0.1, schedule="cosine", weight_decay=0.0),
                         "upper level: SGD on the mask scores (paper: lr 0.1)")
    ig: str = C.opt("paper", "implicit-gradient term: paper (closed form) or none", choices=("paper", "none"),
                    when={"method": ("bip",)})
    gamma: float = C.opt(1e4, "lower-level regularization gamma; the IG term is scaled by 1/gamma "
                              "(the configs' lr2 = 1/gamma = 1e-4)", when={"method": ("bip",)})
    score_init: float = C.opt(1.0, "scores start as this constant times |theta| (first mask = magnitude mask)")
    finetune_epochs: int = C.opt(10, "epochs of weight training with the mask fixed", when={"method": ("hydra",)})


PRESETS = {
    # The paper's CIFAR setups (the BiP paper, Appendix A; figures/reference/README.md): dense 200 epochs (SGD 0.1
    # cosine, wd 1e-4), BiP 100 epochs, bs 128, lower lr 0.01 / upper lr 0.1 (paper text), 1/gamma = 1e-4, wd 1e-4,
    # every conv and linear layer pruned. Ours (the paper does not give them): momentum 0.9 on the upper level (the
    # scores) too and no weight decay there, cosine decay of both levels, Hydra's 100 fine-tuning epochs, the held-out
    # validation split (val_size 1000).
    f"{ds}-{m}": {"dataset": ds, "model": m, "pretrain.epochs": 200, "pretrain.lr": 0.1,
                  "pretrain.weight_decay": 1e-4, "epochs": 100, "finetune_epochs": 100, "val_size": 1000}
    for ds, m in [("cifar10", "resnet18"), ("cifar10", "resnet20"), ("cifar10", "resnet56"), ("cifar10", "vgg16_bn"),
                  ("cifar100", "resnet18"), ("cifar100", "resnet20")]
}
PRESETS["tinyimagenet-resnet18"] = dict(PRESETS["cifar10-resnet18"], dataset="tinyimagenet")
# ImageNet ResNet-50: the paper gives no recipe beyond its lower / upper learning rates. Ours: the dense model's
# 90-epoch step recipe (bs 256, lr 0.1, /10 at 30/60/80), 60 BiP epochs (and 60 + 60 for Hydra) at bs 256, upper-level
# momentum 0.9, val_size 10000.
PRESETS["imagenet-resnet50"] = {"dataset": "imagenet", "model": "resnet50", "pretrain.epochs": 90,
                                "pretrain.lr": 0.1, "pretrain.weight_decay": 1e-4, "pretrain.batch_size": 256,
                                "pretrain.schedule": "multistep", "pretrain.milestones": (30.0, 60.0, 80.0),
                                "epochs": 60, "finetune_epochs": 60, "batch_size": 256, "val_size": 10000}


def validate(cfg: Config) -> None:
    validate_base(cfg)
    if not cfg.gamma > 0:
        raise UserError(f"--gamma {cfg.gamma} must be positive (the lower level's regularization; the IG term "
                        f"is -(1/gamma) grad_z (.) grad_theta); use e.g. 1e4, or --ig none to drop the term")
    if cfg.epochs < 1 or cfg.lower_steps < 1 or cfg.finetune_epochs < 0 or cfg.batch_size < 1:
        raise UserError("--epochs, --lower-steps and --batch-size must be at least 1 (--finetune-epochs >= 0)")
    structured = cfg.structure != "unstructured"
    prunable_of(cfg)  # every --exclude pattern matches and some layer is left to prune
    if structured and not _has_conv(cfg):
        raise UserError(f"--structure {cfg.structure} prunes conv filters/channels, but model {cfg.model} has no "
                        f"prunable conv layer; use --structure unstructured or a conv model (e.g. --model cnn)")
    params = prunable_of(cfg, conv_only=structured)
    check_keeps_some(params, cfg.structure, cfg.scope, cfg.target_sparsity, "target-sparsity")
    distributed.require_one_process(SCRIPT, ONE_PROCESS)


def _has_conv(cfg: Config) -> bool:
    try:
        return bool(prunable_of(cfg, conv_only=True))
    except UserError:
        return False


def dependencies(cfg: Config) -> list:
    """The runs the store executes before ``compute`` (``slurm.submit`` queues them ahead of it): the dense model."""
    return dense_runs(cfg)


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    if cfg.method == "bip":  # one lower step per batch, an upper step every lower_steps of them
        return cfg.epochs * (1 + (times.step("bip") - 1) / cfg.lower_steps)
    return (cfg.epochs + cfg.finetune_epochs) * times.step("hydra")


def compute(cfg: Config, run: Run) -> dict:
    device = resolve_device(cfg.device)
    model, dense = load_dense(cfg, run, device)                                  # pretrained theta
    data = data_of(cfg, device, cfg.batch_size)
    steps = len(data.train)
    # scores m_0 = c|theta| and the mask top-k(m_0), the two levels' optimizers; --ig none: no IG term (1/gamma = 0)
    lower = partial(make_optimizer, optim=cfg.lower, lr=cfg.lower.lr)
    upper = partial(make_optimizer, optim=cfg.upper, lr=cfg.upper.lr)
    options = dict(structure=cfg.structure, scope=cfg.scope, exclude=cfg.exclude, score_init=cfg.score_init,
                   loss=lambda m, x, y: forward_loss(m, x, y, device)[0])
    if cfg.method == "bip":
        step = bip_steps(model, cfg.target_sparsity, lower, upper,
                         gamma=cfg.gamma if cfg.ig == "paper" else math.inf, **options)
    else:
        step = hydra_steps(model, cfg.target_sparsity, lower, upper, **options)
    w, opt_theta, opt_m = step.w, step.opt_theta, step.opt_m
    first_masks = [m.clone() for m in w.masks]                                  # the magnitude mask
    total = cfg.epochs + (cfg.finetune_epochs if cfg.method == "hydra" else 0)
    progress = Progress(cfg.progress)

    state = {"model": model, "scores": w, "opt_theta": opt_theta, "opt_m": opt_m}
    t_start = None
    last_grad_z = None  # the latest upper step's grad_z if it fell on an epoch's last batch: for the logged ig_ratio
    loop = resumable_epochs(run, total, state)
    for epoch in loop:
        t_start = method_start(run) if t_start is None else t_start
        phase = "finetune" if epoch >= cfg.epochs else cfg.method
        model.train()
        sums = {"loss": torch.zeros((), device=device)}  # checkpointed within the epoch, restored on a resume
        for i, (x, y) in epoch_batches(model, data.train, epoch, sums, loop=loop):
            t = epoch + i / steps
            if phase == "finetune":
                sums["loss"] += step.lower(x, y, lr_at(cfg.lower, t - cfg.epochs, cfg.finetune_epochs)) * y.shape[0]
                continue
            if phase == "bip":                                                   # A1: lower level, K steps
                sums["loss"] += step.lower(x, y, lr_at(cfg.lower, t, cfg.epochs)) * y.shape[0]
            if phase == "hydra" or (epoch * steps + i + 1) % cfg.lower_steps == 0:  # A1: upper level at theta_{t+1}
                upper_loss, grad_z = step.upper(x, y, lr_at(cfg.upper, t, cfg.epochs))
                last_grad_z = grad_z if i == steps - 1 else None
                if phase == "hydra":
                    sums["loss"] += upper_loss * y.shape[0]
        train_loss = float(sums["loss"]) / data.train.num_samples
        if not torch.isfinite(torch.tensor(train_loss)):
            raise Diverged(f"training loss became {train_loss} in epoch {epoch + 1}; lower the learning rates")
        changed = sum(float((m != m0).sum()) for m, m0 in zip(w.masks, first_masks)) / sum(m.numel() for m in w.masks)
        ig_ratio = w.ig_ratio(last_grad_z, 1.0 / cfg.gamma) if phase != "finetune" and last_grad_z is not None else None
        run.log(epoch=epoch + 1, phase=phase, train_loss=train_loss, sparsity=1.0 - w.density(),
                mask_changed=changed, ig_ratio=ig_ratio)
        progress.line(f"[{cfg.method}] epoch {epoch + 1}/{total} {phase:8s} loss {train_loss:.4f} "
                      f"sparsity {1.0 - w.density():.4f} mask changed {changed:.4f} (vs magnitude mask)")

    method_time = run.elapsed() - method_start(run)
    check_sparsity(1.0 - w.density(), w.aimed_sparsity(),
                   "scores tied at the top-k threshold are all pruned" +
                   (" (--score-init 0 starts every score at 0; use a positive one)" if cfg.score_init == 0 else ""))
    run.save_model(model)
    torch.save(w.mask_dict(), run.dir / "masks.pt")
    ig = [r["ig_ratio"] for r in run.logs if r.get("ig_ratio") is not None]
    # the measured sparsity of the masked weights is weight_sparsity; sparsity is the masks' (the top-k's)
    return {**final_report(model, data, dict(zip(w.names, w.z)), val=True, sparsity_key="weight_sparsity"),
            "dense_test_acc": dense["test_acc"], "method_time": method_time, "mask_changed": changed,
            "ig_ratio": sum(ig) / len(ig) if ig else None, "steps_per_epoch": steps, "sparsity": 1.0 - w.density()}


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
