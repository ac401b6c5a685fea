"""How long a run is, estimated before it is computed: its work in epochs of plain training of its (dataset, model),
times the A100 GPU-hours of such an epoch, both from the editable table ``figures/epoch_times.toml``
(``[epoch_hours]``, each method's step cost in ``[step_cost]``, training-set sizes in ``[train_samples]``).

``figures.cost`` adds up these estimates into a figure's plan (``make plan-<name>``); ``slurm.resources`` sizes a
job's requeue budget from them. The accounting per script (``epochs_of``): a dense model its epochs; BiP epochs x
~2 (a lower and an upper step per batch); Hydra score + fine-tuning epochs; IMP rounds x epochs per round; OMP / GMP /
retraining their epochs; SA++ / ACDC / block magnitude / PowerProp their epochs x their step cost, plus their
training-curve evaluations (a fixed subset of ``seqattn.prune.CURVE_SAMPLES`` training samples every
``curve_every`` steps, forward only); post-training calibration samples x epochs / training-set size x its step
cost; a rewinding point the dense epochs it replays. The numbers are estimates for an A100; other GPUs differ.
"""
from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass
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
    for name in ("epoch_hours", "step_cost", "train_samples"):
        table = data.get(name)
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
