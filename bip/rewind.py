"""The dense model's weights at epoch k of its training: the rewinding point of IMP, OMP and retrained BiP masks.

    python -m bip.rewind --model mlp --epoch 3

The dense run (``common.pretrain``, computed first if needed) keeps the weights of the epochs its dependents rewind
to (``common.pretrain.snapshot_epochs``); this script copies that snapshot (or the final ``model.pt``). Only for a
dense run that lacks it (finished before that epoch was asked for) does it replay the same recipe -- same seed,
initialization, held-out validation split, data order and LR schedule over the full length -- and stop after
``epoch`` epochs: exact on CPU (a test checks it against the snapshot bit for bit), but on a GPU (autotuned cuDNN
kernels, atomics, bf16) a replay is only close to the dense run, unless both ran with ``--deterministic``.
Epoch 0 is the initialization (the lottery-ticket reset).
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

import torch

from common import config as C
from common.cli import Runtime
from common.data import DATASETS, dataset_info, load_dataset
from common.errors import UserError
from common.models import MODELS, build_model, check_model
from common.store import Run, atomic_write, execute
from common.train import Recipe, lr_at, make_optimizer, prepare_model, resolve_device, train_epoch

SCRIPT = "bip.rewind"


@dataclass
class Config(Runtime):
    dataset: str = C.opt("digits", "dataset", choices=DATASETS)
    model: str = C.opt("mlp", "model", choices=MODELS)
    seed: int = C.opt(0, "random seed of the dense training")
    pretrain: Recipe = C.opt(Recipe(epochs=30, lr=0.05), "recipe of the dense training being replayed")
    epoch: int = C.opt(0, "stop after this many epochs (0: the initialization)")
    val_size: int = C.opt(0, "training samples the dense training held out (its --val-size)")


def validate(cfg: Config) -> None:
    dataset_info(cfg.dataset)
    check_model(cfg.model)
    if not 0 <= cfg.epoch <= cfg.pretrain.epochs:
        raise UserError(f"--epoch {cfg.epoch} is outside the dense training (0..{cfg.pretrain.epochs} epochs)")


def _dense_config(cfg: Config):
    from common.pretrain import dense_config

    return dense_config(cfg, keep=(cfg.epoch,))


def dependencies(cfg: Config) -> list:
    """The runs ``compute`` executes first (``slurm.submit`` queues them ahead): the dense run it reads."""
    return [("common.pretrain", _dense_config(cfg))]


def compute(cfg: Config, run: Run) -> dict:
    from common import pretrain

    dense_cfg = _dense_config(cfg)
    execute(pretrain, dense_cfg)
    dense_dir = Run(pretrain.SCRIPT, dense_cfg).dir
    source = dense_dir / "model.pt" if cfg.epoch == cfg.pretrain.epochs else pretrain.snapshot_path(dense_dir, cfg.epoch)
    if source.exists():
        atomic_write(run.dir / "model.pt", lambda tmp: shutil.copyfile(source, tmp))
        run.log(event="rewind", source=str(source.relative_to(dense_dir)))
        return {"epoch": cfg.epoch}
    print(f"warning: {dense_dir} keeps no weights of epoch {cfg.epoch} (finished before they were asked for); "
          f"replaying its training to that epoch, exact on CPU only", file=sys.stderr, flush=True)
    run.log(event="rewind", source="replay")
    return _replay(cfg, run)


def _replay(cfg: Config, run: Run) -> dict:
    # The same sequence of operations as common.pretrain.compute, cut after cfg.epoch epochs.
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    recipe = cfg.pretrain
    data = load_dataset(cfg.dataset, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=recipe.batch_size, seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    model = prepare_model(build_model(cfg.model, data.info.num_classes, data.info.input_shape), device)
    optimizer = make_optimizer(model.parameters(), recipe, recipe.lr)
    steps = len(data.train)
    for epoch in range(cfg.epoch):
        train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                    lr_of_step=lambda s: lr_at(recipe, s / steps, recipe.epochs))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, run.dir / "model.pt")
    return {"epoch": cfg.epoch}


def rewind_config(cfg, epoch: int) -> Config:
    """The snapshot a method config (dataset/model/seed/pretrain/val_size) rewinds to."""
    from common.cli import runtime_of

    return Config(dataset=cfg.dataset, model=cfg.model, seed=cfg.seed, pretrain=cfg.pretrain, epoch=epoch,
                  val_size=cfg.val_size, **runtime_of(cfg))


def load_rewind(cfg, epoch: int) -> dict[str, torch.Tensor]:
    """State dict of the dense model after ``epoch`` epochs (computed once, then read from the store)."""
    rcfg = rewind_config(cfg, epoch)
    execute(sys.modules[__name__], rcfg)
    return torch.load(Run(SCRIPT, rcfg).dir / "model.pt", map_location="cpu", weights_only=True)


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
