"""The config every script of the BiP folder shares (``Base``, ``Level``), its checks, and the helpers built on it:
its prunable weights, its data with the validation split, accuracies, the loss of a batch, the method's start time.

Times: every script reports ``method_time``, the seconds spent after its dependencies (the dense model, a rewinding
snapshot, a BiP mask) were available, so that the dense training shared by all methods is not charged to whichever
run happened to train it first. IMP's points carry the cumulative ``method_time`` of their rounds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from common import config as C
from common import sparsity as S
from common.data import dataset_info, load_dataset
from common.errors import UserError
from common.metrics import final_report
from common.models import build_model, check_model
from common.pretrain import DenseStart, given_start
from common.train import LRSchedule, autocast


@dataclass
class Base(DenseStart):
    """A BiP-folder config: the dense start, the target sparsity, the layers kept dense, a validation split."""

    target_sparsity: float = C.opt(0.5904, "fraction of the prunable weights removed, in [0, 1) "
                                           "(the paper's grid: 1 - 0.8^n)")
    exclude: tuple[str, ...] = C.opt((), "layers never pruned: first, last, or module-name patterns "
                                         "(default none: the paper prunes every conv and linear layer)")
    val_size: int = C.opt(100, "training samples held out as a validation split (reported, never trained on); "
                               "the test set is only ever evaluated, never used to choose anything")


@dataclass
class Level(LRSchedule):
    """An optimizer and its learning-rate schedule (one level of the bi-level problem, or a retraining stage)."""

    optimizer: str = C.opt("sgd", "optimizer", choices=("sgd", "adam"))
    momentum: float = C.opt(0.9, "SGD momentum")
    nesterov: bool = C.opt(False, "Nesterov momentum (SGD)")
    weight_decay: float = C.opt(1e-4, "L2 weight decay")


def validate_base(cfg: Base) -> None:
    dataset_info(cfg)
    check_model(cfg.model)
    S.check_sparsity(cfg.target_sparsity, "target-sparsity")
    if cfg.val_size < 0:
        raise UserError(f"--val-size {cfg.val_size} must be >= 0")


def check_rewind(cfg) -> None:
    """``cfg.rewind_epoch`` names an epoch of the dense training (none: no rewinding), which a start from the user's
    own weights has not."""
    rewind_epoch, pretrain = cfg.rewind_epoch, cfg.pretrain
    if rewind_epoch is not None and given_start(cfg):
        raise UserError(f"--rewind-epoch {rewind_epoch} rewinds to the dense training's weights of that epoch, and "
                        f"{given_start(cfg)} has no training to rewind to; use --rewind-epoch none (fine-tuning)")
    if rewind_epoch is not None and not 0 <= rewind_epoch <= pretrain.epochs:
        raise UserError(f"--rewind-epoch {rewind_epoch} is outside the dense training (0..{pretrain.epochs} epochs); "
                        f"pick an epoch in that range, or none to keep the current weights (fine-tuning)")


def prunable_of(cfg: Base, model=None, conv_only: bool = False) -> dict:
    """The prunable weights of ``cfg``'s model (built on the fly, untrained, when ``model`` is None)."""
    if model is None:
        info = dataset_info(cfg)
        model = build_model(cfg.model, info.num_classes, info.input_shape)
    params = S.pruned_layers(model, cfg.exclude)
    if conv_only:
        params = {n: p for n, p in params.items() if p.dim() == 4}
    if not params:
        raise UserError(f"model {cfg.model} has no prunable conv layer left after --exclude {','.join(cfg.exclude)}; "
                        f"exclude fewer layers or use --structure unstructured")
    return params


def data_of(cfg: Base, device: torch.device, batch_size: int):
    return load_dataset(cfg, root=cfg.data_dir, download=cfg.download, device=device, batch_size=batch_size,
                        seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)


def accuracies(model, data) -> dict:
    """test_acc, test_loss and val_acc (with a validation split) of ``model``: an IMP round's record."""
    return final_report(model, data, val=True, costs=False)


def forward_loss(model, x, y, device):
    """Cross-entropy of one batch (bf16 autocast and channels_last on CUDA, exact fp32 on CPU)."""
    if device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device):
        out = model(x)
        return torch.nn.functional.cross_entropy(out, y), out


def method_start(run) -> float:
    """Mark (once per run, kept across resumes) the moment the method itself starts; returns that elapsed time."""
    for record in run.logs:
        if record.get("event") == "start":
            return record["time"]
    run.log(event="start")
    return run.logs[-1]["time"]
