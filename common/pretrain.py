"""Train a dense model: the starting point of every pruning method (python -m common.pretrain --help).

The trained weights are stored in the run directory as ``model.pt``; pruning scripts name this run's config as their
dependency (``dense_config``) and load it with ``load_dense``, so a dense model is trained once and shared.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from common import config as C
from common.cli import Runtime, runtime_of
from common.data import DATASETS, dataset_info, load_dataset
from common.models import MODELS, build_model
from common.store import Run, execute
from common.train import (Progress, Recipe, evaluate, lr_at, make_optimizer, prepare_model, resolve_device,
                          resumable_epochs, train_epoch)

SCRIPT = "common.pretrain"


@dataclass
class Config(Runtime):
    dataset: str = C.opt("digits", "dataset", choices=DATASETS)
    model: str = C.opt("cnn", "model", choices=MODELS)
    seed: int = C.opt(0, "random seed (initialization and data order)")
    train: Recipe = C.opt(Recipe(epochs=30, lr=0.05), "the training recipe")
    val_size: int = C.opt(0, "training samples held out, never trained on (the validation split of the pruning "
                             "runs that start from this model: common.data.carve_val, the same positions for all)")


PRESETS = {
    # CIFAR-10/100 dense training of the BiP paper's configs (200 epochs, SGD 0.1 cosine, wd 1e-4, bs 128).
    "cifar-resnet": {"dataset": "cifar10", "model": "resnet20", "train.epochs": 200, "train.lr": 0.1,
                     "train.weight_decay": 1e-4, "train.batch_size": 128},
    # ImageNet ResNet-50, the standard 90-epoch step recipe (bs 256, lr 0.1, /10 at 30/60/80).
    "imagenet-resnet50": {"dataset": "imagenet", "model": "resnet50", "train.epochs": 90, "train.lr": 0.1,
                          "train.weight_decay": 1e-4, "train.batch_size": 256, "train.schedule": "multistep",
                          "train.milestones": (30.0, 60.0, 80.0)},
}


def compute(cfg: Config, run: Run) -> dict:
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=cfg.train.batch_size, seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    model = prepare_model(build_model(cfg.model, data.info.num_classes, data.info.input_shape), device)
    optimizer = make_optimizer(model.parameters(), cfg.train, cfg.train.lr)
    steps = len(data.train)
    progress = Progress(cfg.progress)
    state = {"model": model, "optimizer": optimizer}
    for epoch in resumable_epochs(run, cfg.train.epochs, state):
        stats = train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                            lr_of_step=lambda s: lr_at(cfg.train, s / steps, cfg.train.epochs), progress=progress,
                            desc=f"pretrain {epoch + 1}/{cfg.train.epochs}")
        test = evaluate(model, data.test)
        run.log(epoch=epoch + 1, train_loss=stats["loss"], train_acc=stats["acc"], test_acc=test["acc"],
                lr=lr_at(cfg.train, epoch + 1, cfg.train.epochs))
        progress.line(f"[pretrain] epoch {epoch + 1}/{cfg.train.epochs} loss {stats['loss']:.4f} "
                      f"train {stats['acc']:.4f} test {test['acc']:.4f}")
    test = evaluate(model, data.test)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, run.dir / "model.pt")
    return {"test_acc": test["acc"], "test_loss": test["loss"], "train_samples": data.train.num_samples}


# ------------------------------------------------------------------------------------------------ for dependents
def dense_config(cfg, recipe: Recipe | None = None) -> Config:
    """The pretraining config a pruning config depends on: same dataset/model/seed, its ``pretrain`` recipe, and its
    validation split (``val_size``, 0 for a script without one) held out, so the dense model never saw it either."""
    return Config(dataset=cfg.dataset, model=cfg.model, seed=cfg.seed,
                  train=recipe if recipe is not None else cfg.pretrain, val_size=getattr(cfg, "val_size", 0),
                  **runtime_of(cfg))


def load_dense(cfg, device: torch.device, recipe: Recipe | None = None):
    """(model with the trained dense weights on ``device``, the dense run's result), training it first if needed."""
    import sys

    dense_cfg = dense_config(cfg, recipe)
    result = execute(sys.modules[__name__], dense_cfg)
    info = dataset_info(cfg.dataset)
    model = build_model(cfg.model, info.num_classes, info.input_shape)
    model.load_state_dict(torch.load(Run(SCRIPT, dense_cfg).dir / "model.pt", map_location="cpu", weights_only=True))
    return prepare_model(model, device), result


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
