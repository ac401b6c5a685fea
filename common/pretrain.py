"""Train a dense model: the starting point of every pruning method (python -m common.pretrain --help).

The trained weights are stored in the run directory as ``model.pt``; pruning scripts name this run's config as their
dependency (``dense_config``) and load it with ``load_dense``, so a dense model is trained once and shared.
The weights of a few earlier epochs are kept too (``snapshots/epoch<k>.pt``, :func:`snapshot_epochs`): the rewinding
points ``bip.rewind`` reads, taken from this very training (a replay of it is exact on CPU only).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from common import config as C
from common.cli import Runtime, runtime_of
from common.data import DATASETS, dataset_info, load_dataset
from common.errors import UserError
from common.models import MODELS, build_model
from common.store import Run, atomic_write, execute, save_state_dict
from common.train import (Progress, Recipe, evaluate, lr_at, make_optimizer, prepare_model, resolve_device,
                          resumable_epochs, train_epoch)

SCRIPT = "common.pretrain"


# The help of ``val_size`` in a config that starts from a dense model (``DenseStart``, seqattn.prune).
VAL_SIZE_HELP = ("training samples held out, never trained on (here nor by the dense model): the same carve-out as a "
                 "BiP run with this --val-size, so both train on the same images")


@dataclass
class Start(Runtime):
    """What every run trains: a dataset, a model, a seed (initialization and data order)."""

    dataset: str = C.opt("digits", "dataset", choices=DATASETS)
    model: str = C.opt("mlp", "model", choices=MODELS)
    seed: int = C.opt(0, "random seed (initialization and data order)")


@dataclass
class DenseStart(Start):
    """A config that starts from the dense model of ``common.pretrain`` (``dense_config``): its dataset, model, seed,
    recipe ``pretrain`` and the training samples both hold out (``val_size``)."""

    pretrain: Recipe = C.opt(Recipe(epochs=30, lr=0.05), "recipe of the dense model this run starts from")
    val_size: int = C.opt(0, VAL_SIZE_HELP)


@dataclass
class Config(Start):
    model: str = C.opt("cnn", "model", choices=MODELS)
    train: Recipe = C.opt(Recipe(epochs=30, lr=0.05), "the training recipe")
    val_size: int = C.opt(0, "training samples held out, never trained on (the validation split of the pruning "
                             "runs that start from this model: common.data.carve_val, the same positions for all)")
    snapshot_epochs: tuple[int, ...] = C.opt((), "keep the weights after these epochs too, besides those always kept "
                                                 "(common.pretrain.snapshot_epochs)", hash=False)


PRESETS = {
    # CIFAR-10/100 dense training of the BiP paper's configs (200 epochs, SGD 0.1 cosine, wd 1e-4, bs 128).
    "cifar-resnet": {"dataset": "cifar10", "model": "resnet20", "train.epochs": 200, "train.lr": 0.1,
                     "train.weight_decay": 1e-4, "train.batch_size": 128},
    # ImageNet ResNet-50, the standard 90-epoch step recipe (bs 256, lr 0.1, /10 at 30/60/80).
    "imagenet-resnet50": {"dataset": "imagenet", "model": "resnet50", "train.epochs": 90, "train.lr": 0.1,
                          "train.weight_decay": 1e-4, "train.batch_size": 256, "train.schedule": "multistep",
                          "train.milestones": (30.0, 60.0, 80.0)},
}


# The epochs whose weights every dense run keeps besides its last (for rewinding: bip.rewind): the initialization,
# the first epochs and the fractions of the training the BiP figures rewind to (rounded as figures.bip.fig_bip_rewind
# rounds them); --snapshot-epochs, and a dependent's rewind epoch (dense_config), add more. Execution-only: which
# snapshots a run keeps is not part of its identity, so a dense run finished before a new rewinding point was asked
# for lacks that one (bip.rewind then replays the training).
SNAPSHOT_EPOCHS = (0, 1, 2)
SNAPSHOT_FRACTIONS = (0.05, 0.1, 0.5, 0.75)


def snapshot_epochs(cfg: Config) -> list[int]:
    """The epochs < ``cfg.train.epochs`` whose weights the run keeps as ``snapshots/epoch<k>.pt`` (the last epoch's
    are ``model.pt``)."""
    n = cfg.train.epochs
    keep = {*SNAPSHOT_EPOCHS, *(int(round(f * n)) for f in SNAPSHOT_FRACTIONS), *cfg.snapshot_epochs}
    return sorted(k for k in keep if 0 <= k < n)


def validate(cfg: Config) -> None:
    beyond = [k for k in cfg.snapshot_epochs if not 0 <= k <= cfg.train.epochs]
    if beyond:
        raise UserError(f"--snapshot-epochs {','.join(map(str, beyond))} is outside the run, which trains "
                        f"{cfg.train.epochs} epochs (--train.epochs); give epochs in 0..{cfg.train.epochs}")


def snapshot_path(run_dir, epoch: int):
    """Where a dense run keeps its weights after ``epoch`` epochs (``model.pt`` for the last)."""
    return Path(run_dir) / "snapshots" / f"epoch{epoch}.pt"


def _save_weights(model, path) -> None:
    atomic_write(path, lambda tmp: save_state_dict(tmp, model))


def setup(cfg: Config, device: torch.device):
    """(data, model, optimizer) of ``cfg``'s training before its first epoch: seeded, the validation split held out."""
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=cfg.train.batch_size, seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    model = prepare_model(build_model(cfg.model, data.info.num_classes, data.info.input_shape), device)
    return data, model, make_optimizer(model.parameters(), cfg.train, cfg.train.lr)


def train_epochs(cfg: Config, data, model, optimizer, epochs, progress: Progress | None = None):
    """Train the given ``epochs`` of ``cfg``'s recipe (the LR schedule over its full length); yields each epoch's
    index and training stats after it. ``compute`` and ``bip.rewind``'s replay both train through it."""
    steps = len(data.train)
    for epoch in epochs:
        yield epoch, train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                                 lr_of_step=lambda s: lr_at(cfg.train, s / steps, cfg.train.epochs),
                                 progress=progress, desc=f"pretrain {epoch + 1}/{cfg.train.epochs}")


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    return cfg.train.epochs * times.step("dense")


def compute(cfg: Config, run: Run) -> dict:
    data, model, optimizer = setup(cfg, resolve_device(cfg.device))
    progress = Progress(cfg.progress)
    keep = snapshot_epochs(cfg)
    if 0 in keep:  # the initialization (also on a resume: the state is restored by the loop, below)
        _save_weights(model, snapshot_path(run.dir, 0))
    epochs = resumable_epochs(run, cfg.train.epochs, {"model": model, "optimizer": optimizer})
    for epoch, stats in train_epochs(cfg, data, model, optimizer, epochs, progress):
        if epoch + 1 in keep:  # before the epoch's checkpoint: a resume recomputes the epoch and writes it again
            _save_weights(model, snapshot_path(run.dir, epoch + 1))
        test = evaluate(model, data.test)
        run.log(epoch=epoch + 1, train_loss=stats["loss"], train_acc=stats["acc"], test_acc=test["acc"],
                lr=lr_at(cfg.train, epoch + 1, cfg.train.epochs))
        progress.line(f"[pretrain] epoch {epoch + 1}/{cfg.train.epochs} loss {stats['loss']:.4f} "
                      f"train {stats['acc']:.4f} test {test['acc']:.4f}")
    test = evaluate(model, data.test)
    run.save_model(model)
    return {"test_acc": test["acc"], "test_loss": test["loss"], "train_samples": data.train.num_samples}


# ------------------------------------------------------------------------------------------------ for dependents
def dense_config(cfg, recipe: Recipe | None = None, keep: tuple[int, ...] | None = None) -> Config:
    """The pretraining config a pruning config depends on: same dataset/model/seed, its ``pretrain`` recipe, and its
    validation split (``val_size``, 0 for a script without one) held out, so the dense model never saw it either.
    ``keep``: epochs whose weights the dependent will rewind to (default: its ``rewind_epoch``, if any), kept as
    snapshots if this call computes the dense run (execution-only: the same run either way)."""
    if keep is None:
        keep = () if getattr(cfg, "rewind_epoch", None) is None else (cfg.rewind_epoch,)
    return Config(dataset=cfg.dataset, model=cfg.model, seed=cfg.seed,
                  train=recipe if recipe is not None else cfg.pretrain, val_size=getattr(cfg, "val_size", 0),
                  **{**runtime_of(cfg), "snapshot_epochs": tuple(keep)})


def load_dense(cfg, device: torch.device, recipe: Recipe | None = None):
    """(model with the trained dense weights on ``device``, the dense run's result), training it first if needed."""
    dense_cfg = dense_config(cfg, recipe)
    result = execute(sys.modules[__name__], dense_cfg)
    info = dataset_info(cfg.dataset)
    model = build_model(cfg.model, info.num_classes, info.input_shape)
    model.load_state_dict(torch.load(Run(SCRIPT, dense_cfg).dir / "model.pt", map_location="cpu", weights_only=True))
    return prepare_model(model, device), result


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
