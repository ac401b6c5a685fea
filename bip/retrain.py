"""A BiP (or Hydra) mask retrained from a rewinding point: the paper's Fig. 9 ("is rewinding needed after BiP?").

    python -m bip.retrain --target-sparsity 0.672 --rewind-epoch 15      # every bip.prune flag, plus the retraining

The mask is the one ``bip.prune`` finds with the same flags (its run is reused from the store); the weights are reset
to the dense training's epoch ``rewind_epoch`` (``bip.rewind``; none: keep BiP's own weights, i.e. fine-tuning), then
trained for ``retrain_epochs`` with the mask fixed.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch

from bip import prune
from bip.config import Level, check_rewind, data_of, method_start, prunable_of
from bip.rewind import load_rewind, rewind_config
from common import config as C
from common import sparsity as S
from common.errors import UserError
from common.metrics import final_report
from common.models import build_model
from common.store import Run
from common.train import (Progress, lr_at, make_optimizer, prepare_model, resolve_device, resumable_epochs,
                          train_epoch)

SCRIPT = "bip.retrain"


@dataclass
class Config(prune.Config):
    rewind_epoch: Optional[int] = C.opt(None, "reset the weights to the dense training's epoch k before retraining "
                                              "(0: initialization); none: keep the pruned model's weights")
    retrain_epochs: int = C.opt(10, "epochs of retraining with the mask fixed")
    retrain: Level = C.opt(Level(lr=0.01, schedule="cosine"), "optimizer and LR schedule of the retraining")


PRESETS = {name: dict(p, retrain_epochs=p["epochs"], **{"retrain.lr": 0.1}) for name, p in prune.PRESETS.items()}


def prune_config(cfg: Config) -> prune.Config:
    return prune.Config(**{f.name: getattr(cfg, f.name) for f in fields(prune.Config)})


def validate(cfg: Config) -> None:
    prune.validate(prune_config(cfg))
    check_rewind(cfg)
    if cfg.retrain_epochs < 1:
        raise UserError(f"--retrain-epochs {cfg.retrain_epochs} must be at least 1")


def dependencies(cfg: Config) -> list:
    """The runs the store executes before ``compute`` (``slurm.submit`` queues them ahead): BiP mask, rewinding
    point."""
    return [(prune.SCRIPT, prune_config(cfg))] + \
        ([("bip.rewind", rewind_config(cfg, cfg.rewind_epoch))] if cfg.rewind_epoch is not None else [])


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    return cfg.retrain_epochs * times.step("retrain")


def compute(cfg: Config, run: Run) -> dict:
    device = resolve_device(cfg.device)
    pruned = run.dependency(prune.SCRIPT, prune_config(cfg))                    # the BiP mask (from the store)
    weights = load_rewind(cfg, run, cfg.rewind_epoch) if cfg.rewind_epoch is not None else \
        torch.load(pruned.dir / "model.pt", map_location="cpu", weights_only=True)
    found = torch.load(pruned.dir / "masks.pt", map_location="cpu", weights_only=True)
    data = data_of(cfg, device, cfg.batch_size)
    model = build_model(cfg.model, data.info.num_classes, data.info.input_shape)
    model.load_state_dict(weights)
    model = prepare_model(model, device)
    params = prunable_of(cfg, model, conv_only=cfg.structure != "unstructured")
    masks = S.Masks(params)
    masks.set({n: m.to(device) for n, m in found.items()})
    optimizer = make_optimizer(model.parameters(), cfg.retrain, cfg.retrain.lr)
    steps = len(data.train)
    progress = Progress(cfg.progress)
    t_start = None
    loop = resumable_epochs(run, cfg.retrain_epochs, {"model": model, "optimizer": optimizer, "masks": masks})
    for epoch in loop:
        t_start = method_start(run) if t_start is None else t_start
        stats = train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                            lr_of_step=lambda s: lr_at(cfg.retrain, s / steps, cfg.retrain_epochs),
                            before_step=lambda s: masks.mask_grads(), after_step=lambda s: masks.apply(),
                            progress=progress, desc=f"retrain {epoch + 1}/{cfg.retrain_epochs}", loop=loop)
        run.log(epoch=epoch + 1, train_loss=stats["loss"], sparsity=1.0 - masks.density())
        progress.line(f"[retrain] epoch {epoch + 1}/{cfg.retrain_epochs} loss {stats['loss']:.4f}")
    run.save_model(model)
    bip = pruned.result()
    return {**final_report(model, data, val=True, costs=False), "sparsity": 1.0 - masks.density(),
            "dense_test_acc": bip["dense_test_acc"], "pruned_test_acc": bip["test_acc"],
            "method_time": run.elapsed() - method_start(run)}


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
