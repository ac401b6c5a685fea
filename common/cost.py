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

import math
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


def _seqattn_epochs(cfg, times: Times) -> float:
    from seqattn.prune import CURVE_SAMPLES

    epochs = cfg.epochs * times.step(cfg.method)
    if cfg.curve_every:
        n = times.samples(cfg.dataset) - cfg.val_size
        points = cfg.epochs * math.ceil(n / cfg.optim.batch_size) // cfg.curve_every
        epochs += points * min(CURVE_SAMPLES, n) / n * times.step("eval")
    return epochs


def epochs_of(script: str, cfg, times: Times) -> float:
    """The run's own work (its dependencies apart) in epochs of plain training of its dataset and model."""
    if script == "common.pretrain":
        return cfg.train.epochs * times.step("dense")
    if script == "bip.rewind":
        return cfg.epoch * times.step("dense")
    if script == "bip.prune":
        if cfg.method == "bip":  # one lower step per batch, an upper step every lower_steps of them
            return cfg.epochs * (1 + (times.step("bip") - 1) / cfg.lower_steps)
        return (cfg.epochs + cfg.finetune_epochs) * times.step("hydra")
    if script == "bip.retrain":
        return cfg.retrain_epochs * times.step("retrain")
    if script == "bip.magnitude":
        from bip.magnitude import round_sparsities

        return len(round_sparsities(cfg)) * cfg.epochs * times.step(cfg.method)
    if script == "gmp.prune":
        return cfg.epochs * times.step(cfg.method)
    if script == "seqattn.prune":
        return _seqattn_epochs(cfg, times)
    if script == "seqattn.oneshot":  # attention: its own dense training with the reparameterization
        dense = cfg.pretrain.epochs * times.step("sapp") if cfg.score == "attention" else 0.0
        return dense + cfg.finetune.epochs * len(cfg.sparsities) * times.step("oneshot")
    if script == "posttrain.prune":
        if cfg.method == "l1":
            return cfg.retrain.epochs * times.step("l1")
        n = times.samples(cfg.dataset) - cfg.val_size
        return cfg.samples * (cfg.phase1_epochs + cfg.phase2_epochs) / n * times.step("calibration")
    raise UserError(f"no cost accounting for script {script}; add it to common.cost.epochs_of")


def a100_hours(script: str, cfg, times: Times) -> float:
    """The run's own work (its dependencies apart) in A100 GPU-hours."""
    return epochs_of(script, cfg, times) * times.hours(cfg.dataset, cfg.model)
