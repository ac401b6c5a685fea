"""How long a run is, estimated before it is computed: its work in epochs of plain training of its (dataset, model),
times the A100 GPU-hours of such an epoch, both from the editable table ``figures/epoch_times.toml``
(``[epoch_hours]``, each method's step cost in ``[step_cost]``, training-set sizes in ``[train_samples]``).

``figures.cost`` adds up these estimates into a figure's plan (``make plan-<name>``); ``slurm.resources`` sizes a
job's requeue budget from them. The accounting per script (``epochs_of``): a dense model its epochs; BiP epochs x
~2 (a lower and an upper step per batch); Hydra score + fine-tuning epochs; IMP rounds x epochs per round; OMP / GMP /
retraining their epochs; SA++ / ACDC / block magnitude / PowerProp their epochs x their step cost, plus their
training-curve evaluations (a fixed subset of ``seqattn.prune.CURVE_SAMPLES`` training samples every
``curve_every`` steps, forward only); post-training calibration samples x epochs / training-set size x its step
cost; a rewinding point the dense epochs it replays. The numbers are estimates for an A100 (other GPUs differ),
derived in the table's header: images per epoch x training FLOPs per image / an assumed A100 rate, each
assumption cited there; within 0.5x-2x for CIFAR and Tiny-ImageNet, 0.5x-1.5x for ImageNet (bound by JPEG
decoding on the job's CPUs).

What a run puts on disk (``disk_of``), from the same table: its checkpoint (``[checkpoint_copies]``: copies of the
model's fp32 parameters -- weights, optimizer moments, masks, scores), present while it computes (and the previous
one beside it), and what it keeps once done (``[kept_copies]``: model.pt, masks.pt; a dense run's snapshots one copy
each on top); the parameters are counted on a model built on the meta device (no memory, no weights). How often it
writes its checkpoint (``checkpoint_writes``): at an epoch's end once ``--checkpoint-epoch-minutes`` have passed
since the last, and within an epoch every ``--checkpoint-every-minutes``.
"""
from __future__ import annotations

import functools
import importlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError

TABLE = Path(__file__).resolve().parents[1] / "figures" / "epoch_times.toml"


@dataclass(frozen=True)
class Times:
    """The table: A100-hours per epoch of each "dataset/model", step cost of each method, training-set sizes."""
    epoch_hours: dict
    step_cost: dict
    train_samples: dict
    path: Path = TABLE
    checkpoint_copies: dict = field(default_factory=dict)
    kept_copies: dict = field(default_factory=dict)

    def hours(self, dataset: str, model: str) -> float:
        key = f"{dataset}/{model}"
        if key not in self.epoch_hours:
            raise UserError(f"{self.path} has no epoch time for '{key}'; add a line \"{key}\" = <A100 GPU-hours per "
                            f"epoch> to its [epoch_hours]")
        return self.epoch_hours[key]

    def step(self, method: str) -> float:
        if method not in self.step_cost:
            raise UserError(f"{self.path} has no step cost for '{method}'; add a line {method} = <cost of its "
                            f"epoch in plain-training epochs> to its [step_cost]")
        return self.step_cost[method]

    def copies(self, table: str, script: str) -> float:
        """A script's entry in ``[checkpoint_copies]`` or ``[kept_copies]``."""
        values = getattr(self, table)
        if script not in values:
            raise UserError(f"{self.path} has no [{table}] entry for '{script}'; add a line \"{script}\" = <copies "
                            f"of the model's parameters> to it")
        return values[script]

    def samples(self, dataset: str) -> int:
        if dataset not in self.train_samples:
            raise UserError(f"{self.path} has no training-set size for '{dataset}'; add a line {dataset} = <samples> "
                            f"to its [train_samples]")
        return self.train_samples[dataset]


def load_times(path: Path | str = TABLE) -> Times:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; it holds the epoch times the plan charges (see common/cost.py)") \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML ({exc}); fix that line") from None
    tables = {}
    for name in ("epoch_hours", "step_cost", "train_samples", "checkpoint_copies", "kept_copies"):
        table = data.get(name, {} if name.endswith("_copies") else None)  # the disk tables: asked for when used
        if not isinstance(table, dict):
            raise UserError(f"{path} has no [{name}] table; see common/cost.py for what it holds")
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UserError(f"{path}: [{name}] {key} = {value!r} must be a number >= 0")
        tables[name] = table
    return Times(**tables, path=path)


def epochs_of(script: str, cfg, times: Times) -> float:
    """The run's own work (its dependencies apart) in epochs of plain training of its dataset and model: what the
    script's ``planned_epochs(cfg, times)`` says (every script declares it, like its ``dependencies``)."""
    planned = getattr(importlib.import_module(script), "planned_epochs", None)
    if planned is None:
        raise UserError(f"no cost accounting for script {script}; give it a planned_epochs(cfg, times) function")
    return planned(cfg, times)


def a100_hours(script: str, cfg, times: Times) -> float:
    """The run's own work (its dependencies apart) in A100 GPU-hours (none without epochs: a model-less run, e.g.
    ``common.prepare``, needs no epoch time)."""
    epochs = epochs_of(script, cfg, times)
    return epochs * times.hours(cfg.dataset, cfg.model) if epochs else 0.0


@functools.lru_cache(maxsize=None)
def parameters(dataset: str, model: str) -> int:
    """The parameters and buffers of ``model`` built for ``dataset``, counted on the meta device (nothing allocated)."""
    import torch

    from common.data import dataset_info
    from common.models import build_model

    info = dataset_info(dataset)
    with torch.device("meta"):
        net = build_model(model, info.num_classes, info.input_shape)
    return sum(t.numel() for t in (*net.parameters(), *net.buffers()))


def disk_of(script: str, cfg, times: Times) -> tuple[float, float]:
    """(bytes of the run's checkpoint, bytes it keeps once done), from ``[checkpoint_copies]`` and
    ``[kept_copies]`` of the table (a dense run's snapshots one copy each on top); none for a model-less run (e.g.
    ``common.prepare``, whose cache the dataset's own size bounds)."""
    if getattr(cfg, "model", None) is None:
        return 0.0, 0.0
    copy = 4.0 * parameters(cfg.dataset, cfg.model)
    kept = times.copies("kept_copies", script)
    snapshots = getattr(importlib.import_module(script), "snapshot_epochs", None)
    if snapshots is not None:
        kept += len(snapshots(cfg))
    return times.copies("checkpoint_copies", script) * copy, kept * copy


def checkpoint_writes(hours: float, epochs: float, cfg) -> float:
    """How many checkpoints a run of ``hours`` over ``epochs`` epochs writes: at an epoch's end once the run's
    ``checkpoint_epoch_minutes`` have passed since the last checkpoint, and every ``checkpoint_every_minutes``
    within an epoch (a run's first checkpoint at the earliest)."""
    if epochs <= 0 or hours <= 0:
        return 0.0
    epoch_min = 60.0 * hours / epochs
    gate = float(getattr(cfg, "checkpoint_epoch_minutes", 0.0) or 0.0)
    within = float(getattr(cfg, "checkpoint_every_minutes", 0.0) or 0.0)
    ends = math.floor(epochs / math.ceil(gate / epoch_min)) if gate > epoch_min else epochs
    return ends + (epochs * (math.ceil(epoch_min / within) - 1) if within > 0 else 0.0)
