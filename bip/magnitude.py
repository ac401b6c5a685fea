"""The magnitude baselines of the BiP paper: IMP (iterative) and OMP (one-shot), with weight rewinding.

    python -m bip.magnitude --method imp --target-sparsity 0.893      # 10 rounds of 20%, every round a point
    python -m bip.magnitude --method omp --target-sparsity 0.893      # one prune, one round of retraining
    python -m bip.magnitude --method imp --rewind-epoch none           # no rewinding: fine-tune between rounds

IMP (Frankle & Carbin 2019; Ma et al. 2021's global variant), from the trained dense model:
  for round r = 1, ..., n:  prune ``rate`` of the remaining weights by global magnitude (sparsity 1 - (1-rate)^r,
                            the last round pruning to the target itself); rewind the surviving weights (and every
                            other parameter) to the dense training's epoch k (k = 0: the lottery-ticket reset; none:
                            keep the current weights); retrain ``epochs`` with the mask fixed; report the round.
  n is the first round whose sparsity reaches the target, where a target that leaves at least 99.5% of what round n
  leaves counts as reached (``ROUND_SLACK``): a grid point written with fewer digits (0.893 for 1 - 0.8^10 = 0.89263,
  or 1 - 0.8^n rounded up at the 6th decimal) takes n rounds, its last one pruning at most 0.5% of the remaining
  weights more than ``rate``, instead of an extra round that prunes a handful of weights.
OMP: one round, pruning the dense model straight to the target.
A round's masks are ``bip.masks.magnitude_masks`` (masks in, masks out, as in any training loop).
The final sparsity must be the target's (within 0.5 point), or the run is recorded as failed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from bip.config import Base, Level, accuracies, check_rewind, data_of, method_start, prunable_of, validate_base
from bip.masks import magnitude_masks
from bip.rewind import load_rewind, rewind_config
from common import config as C
from common import sparsity as S
from common.errors import UserError, check_sparsity
from common.metrics import final_report
from common.pretrain import dense_runs, load_dense
from common.store import Run
from common.train import Progress, lr_at, make_optimizer, resolve_device, resumable_epochs, train_epoch

SCRIPT = "bip.magnitude"


@dataclass
class Config(Base):
    method: str = C.opt("imp", "imp (iterative rounds) or omp (one shot)", choices=("imp", "omp"))
    rate: float = C.opt(0.2, "IMP: fraction of the remaining weights pruned per round", when={"method": ("imp",)})
    max_rounds: int = C.opt(30, "IMP: most rounds allowed to reach the target sparsity", when={"method": ("imp",)})
    scope: str = C.opt("global", "magnitude ranking over all layers together or per layer", choices=("global", "layer"))
    epochs: int = C.opt(10, "retraining epochs per round")
    batch_size: int = C.opt(128, "batch size")
    train: Level = C.opt(Level(lr=0.01, schedule="cosine"), "optimizer and LR schedule of each round's retraining")
    rewind_epoch: Optional[int] = C.opt(None, "rewind to the dense training's weights of this epoch after each prune "
                                              "(0: initialization); none: keep the weights (fine-tuning)")


PRESETS = {
    # Ma et al. (2021) as cited by the BiP paper: global IMP, 20%/round, 160 epochs/round, lr 0.1 with /10 at 80 and
    # 120, bs 64; rewinding to an early epoch (ours: epoch 2 of the 200-epoch dense run).
    f"{ds}-{m}": {"dataset": ds, "model": m, "pretrain.epochs": 200, "pretrain.lr": 0.1, "pretrain.weight_decay": 1e-4,
                  "epochs": 160, "batch_size": 64, "train.lr": 0.1, "train.schedule": "multistep",
                  "train.milestones": (80.0, 120.0), "rewind_epoch": 2, "val_size": 1000}
    for ds, m in [("cifar10", "resnet18"), ("cifar10", "resnet20"), ("cifar10", "resnet56"), ("cifar10", "vgg16_bn"),
                  ("cifar100", "resnet18"), ("cifar100", "resnet20")]
}
PRESETS["tinyimagenet-resnet18"] = dict(PRESETS["cifar10-resnet18"], dataset="tinyimagenet")
# ImageNet ResNet-50 (ours: the paper gives no IMP recipe for it): 60-epoch rounds, bs 256, lr 0.1 cosine, momentum
# 0.9, rewind to epoch 2, val_size 10000; the dense model's 90-epoch step recipe.
PRESETS["imagenet-resnet50"] = {"dataset": "imagenet", "model": "resnet50", "pretrain.epochs": 90, "pretrain.lr": 0.1,
                                "pretrain.weight_decay": 1e-4, "pretrain.batch_size": 256,
                                "pretrain.schedule": "multistep", "pretrain.milestones": (30.0, 60.0, 80.0),
                                "epochs": 60, "batch_size": 256, "train.lr": 0.1, "rewind_epoch": 2,
                                "val_size": 10000}


# Round n reaches a target whose remaining fraction is at least (1 - rate)^n / (1 + ROUND_SLACK).
ROUND_SLACK = 0.005


def round_sparsities(cfg: Config) -> list[float]:
    """Target sparsity after each round: 1 - (1 - rate)^r, the last one the target itself (OMP: one round)."""
    if cfg.method == "omp":
        return [cfg.target_sparsity]
    remaining = (1.0 - cfg.target_sparsity) * (1.0 + ROUND_SLACK)
    needed = max(1, math.ceil(math.log(remaining) / math.log(1.0 - cfg.rate)))
    if needed > cfg.max_rounds:
        raise UserError(f"IMP at {cfg.rate:g} per round needs {needed} rounds to reach --target-sparsity "
                        f"{cfg.target_sparsity}, more than --max-rounds {cfg.max_rounds}; raise --max-rounds or --rate")
    return [1.0 - (1.0 - cfg.rate) ** r for r in range(1, needed)] + [cfg.target_sparsity]


def validate(cfg: Config) -> None:
    validate_base(cfg)
    if not 0 < cfg.rate < 1:
        raise UserError(f"--rate {cfg.rate} must be in (0, 1): the fraction of remaining weights pruned per round")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    check_rewind(cfg)
    round_sparsities(cfg)
    params = prunable_of(cfg)  # refuses --exclude patterns that match no layer before any training
    S.check_keeps_some({n: p.numel() for n, p in params.items()}, cfg.target_sparsity, cfg.scope, "target-sparsity")


def dependencies(cfg: Config) -> list:
    """The runs the store executes before ``compute`` (``slurm.submit`` queues them ahead): dense model, rewinding
    point."""
    return dense_runs(cfg) + \
        ([("bip.rewind", rewind_config(cfg, cfg.rewind_epoch))] if cfg.rewind_epoch is not None else [])


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    return len(round_sparsities(cfg)) * cfg.epochs * times.step(cfg.method)


def compute(cfg: Config, run: Run) -> dict:
    device = resolve_device(cfg.device)
    model, dense = load_dense(cfg, run, device)
    rewind = load_rewind(cfg, run, cfg.rewind_epoch) if cfg.rewind_epoch is not None else None
    data = data_of(cfg, device, cfg.batch_size)
    steps = len(data.train)
    params = prunable_of(cfg, model)
    masks = S.Masks(params)
    targets = round_sparsities(cfg)
    optimizer = make_optimizer(model.parameters(), cfg.train, cfg.train.lr)
    progress = Progress(cfg.progress)
    state = {"model": model, "optimizer": optimizer, "masks": masks}
    t_start = None
    loop = resumable_epochs(run, len(targets) * cfg.epochs, state)
    for epoch in loop:
        t_start = method_start(run) if t_start is None else t_start
        r, e = divmod(epoch, cfg.epochs)
        if e == 0:  # a new round: prune by magnitude, rewind, fresh optimizer
            masks.set(magnitude_masks(model, targets[r], within=masks.masks, scope=cfg.scope, exclude=cfg.exclude))
            if rewind is not None:
                model.load_state_dict({k: v.to(device) for k, v in rewind.items()})
                masks.apply()
            optimizer = state["optimizer"] = make_optimizer(model.parameters(), cfg.train, cfg.train.lr)
        stats = train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                            lr_of_step=lambda s: lr_at(cfg.train, s / steps - r * cfg.epochs, cfg.epochs),
                            before_step=lambda s: masks.mask_grads(), after_step=lambda s: masks.apply(),
                            progress=progress, desc=f"{cfg.method} round {r + 1} {e + 1}/{cfg.epochs}", loop=loop)
        if e + 1 < cfg.epochs:
            continue
        acc = accuracies(model, data)
        run.log(event="round", round=r + 1, target_sparsity=targets[r], sparsity=1.0 - masks.density(),
                train_loss=stats["loss"], method_time=run.elapsed() - t_start, **acc)
        progress.line(f"[{cfg.method}] round {r + 1}/{len(targets)} sparsity {1.0 - masks.density():.4f} "
                      f"test {acc['test_acc']:.4f}")

    check_sparsity(1.0 - masks.density(), cfg.target_sparsity)
    points = [{k: rec[k] for k in ("round", "target_sparsity", "sparsity", "test_acc", "val_acc", "method_time")
               if k in rec} for rec in run.logs if rec.get("event") == "round"]
    run.save_model(model)
    final = final_report(model, data, params, val=True, sparsity_key="weight_sparsity")
    del final["sparsity_all_params"]  # not among this script's results
    return {**final, "sparsity": 1.0 - masks.density(), "method_time": run.elapsed() - method_start(run),
            "final_test_acc": final["test_acc"], "dense_test_acc": dense["test_acc"], "rounds": len(targets),
            "steps_per_epoch": steps, "points": points}


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
