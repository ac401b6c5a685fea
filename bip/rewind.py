"""The dense model's weights at epoch k of its training: the rewinding point of IMP, OMP and retrained BiP masks.

    python -m bip.rewind --model mlp --epoch 3

The dense run (``common.pretrain``, its dependency: computed first if needed) keeps the weights of the epochs its
dependents rewind to (``common.pretrain.snapshot_epochs``); this script copies that snapshot (or the final
``model.pt``). Only for a dense run that lacks it (finished before that epoch was asked for) does it replay the same
recipe -- same seed, initialization, held-out validation split, data order and LR schedule over the full length --
and stop after ``epoch`` epochs: exact on CPU (a test checks it against the snapshot bit for bit), but on a GPU
(autotuned cuDNN kernels, atomics, bf16) a replay is only close to the dense run, unless both ran with
``--deterministic``.
Epoch 0 is the initialization (the lottery-ticket reset).
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

import torch

from common import config as C
from common import pretrain
from common.data import dataset_info
from common.errors import UserError
from common.models import check_model
from common.store import Run, atomic_write
from common.train import resolve_device

SCRIPT = "bip.rewind"


@dataclass
class Config(pretrain.DenseStart):
    epoch: int = C.opt(0, "stop after this many epochs (0: the initialization)")


def validate(cfg: Config) -> None:
    dataset_info(cfg)
    check_model(cfg.model)
    if pretrain.given_start(cfg):
        raise UserError(f"{pretrain.given_start(cfg)}: a start from given weights has no dense training to rewind")
    if not 0 <= cfg.epoch <= cfg.pretrain.epochs:
        raise UserError(f"--epoch {cfg.epoch} is outside the dense training (0..{cfg.pretrain.epochs} epochs)")


def _dense_config(cfg: Config) -> pretrain.Config:
    return pretrain.dense_config(cfg, keep=(cfg.epoch,))


def dependencies(cfg: Config) -> list:
    """The runs the store executes before ``compute`` (``slurm.submit`` queues them ahead): the dense run it reads."""
    return [("common.pretrain", _dense_config(cfg))]


def _source(cfg: Config, dense_dir):
    """The dense run's file of epoch ``cfg.epoch``: a snapshot, or its final model."""
    return dense_dir / "model.pt" if cfg.epoch == cfg.pretrain.epochs else pretrain.snapshot_path(dense_dir, cfg.epoch)


def copies(cfg: Config) -> bool:
    """Whether the run will only copy the dense run's weights (its Slurm job then asks for no GPU, one CPU and minutes:
    ``slurm.resources``): the dense run is done and keeps them, or is still to be computed and will keep them
    whichever config computes it (its last epoch, or one every dense run keeps); otherwise it replays the training."""
    dense = Run(pretrain.SCRIPT, _dense_config(cfg))
    if dense.done:
        return _source(cfg, dense.dir).exists()
    return cfg.epoch in (cfg.pretrain.epochs, *pretrain.snapshot_epochs(pretrain.dense_config(cfg, keep=())))


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    return cfg.epoch * times.step("dense")


def compute(cfg: Config, run: Run) -> dict:
    dense_dir = run.dependency(pretrain.SCRIPT, _dense_config(cfg)).dir
    source = _source(cfg, dense_dir)
    if source.exists():
        atomic_write(run.dir / "model.pt", lambda tmp: shutil.copyfile(source, tmp))
        run.log(event="rewind", source=str(source.relative_to(dense_dir)))
        return {"epoch": cfg.epoch}
    print(f"warning: {dense_dir} keeps no weights of epoch {cfg.epoch} (finished before they were asked for); "
          f"replaying its training to that epoch, exact on CPU only", file=sys.stderr, flush=True)
    run.log(event="rewind", source="replay")
    return _replay(cfg, run)


def _replay(cfg: Config, run: Run) -> dict:
    dense_cfg = _dense_config(cfg)  # the dense run's own training, cut after cfg.epoch epochs
    data, model, optimizer = pretrain.setup(dense_cfg, resolve_device(cfg.device))
    for _ in pretrain.train_epochs(dense_cfg, data, model, optimizer, range(cfg.epoch)):
        pass
    run.save_model(model)
    return {"epoch": cfg.epoch}


def rewind_config(cfg, epoch: int) -> Config:
    """The snapshot a method config (a ``DenseStart``) rewinds to."""
    return Config(**{name: getattr(cfg, name) for name in pretrain.DenseStart.__dataclass_fields__}, epoch=epoch)


def load_rewind(cfg, run: Run, epoch: int) -> dict[str, torch.Tensor]:
    """State dict of the dense model after ``epoch`` epochs: the finished rewind run that ``run``'s script declares
    (``rewind_config(cfg, epoch)``), read through ``run.dependency``."""
    rewound = run.dependency(SCRIPT, rewind_config(cfg, epoch))
    return torch.load(rewound.dir / "model.pt", map_location="cpu", weights_only=True)


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
