"""Read a dataset once, before the runs that need it: ``python -m common.prepare --dataset criteo``.

Criteo's first read parses its text file (~17 GB at peak) and caches the tensors beside it (``common.criteo``); the
paper profile's 24 Criteo runs would otherwise each parse it, at the same time. A run of a dataset in ``PREPARED``
declares this run in its ``dependencies`` (``runs_for``), so the store executes it first, a Slurm submission queues one
"prepare data" job (no GPU: ``slurm/resources.toml``) ahead of them, and the local pool runs it first. Its identity is
the dataset alone; a run that finds no cache (the data moved) parses the file itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from common import config as C
from common.cli import Runtime, runtime_of
from common.store import Run

SCRIPT = "common.prepare"
PREPARED = ("criteo",)  # the datasets whose first read is worth a job of its own


@dataclass
class Config(Runtime):
    dataset: str = C.opt("criteo", "the dataset to read once (and cache)", choices=PREPARED)


def planned_epochs(cfg: Config, times) -> float:
    """No training: nothing to charge (``make plan-<name>``, the Slurm requeue budget)."""
    return 0.0


def compute(cfg: Config, run: Run) -> dict:
    from common.data import load_dataset

    data = load_dataset(cfg.dataset, root=cfg.data_dir, download=cfg.download)
    return {"train_samples": data.train.num_samples, "test_samples": data.test.num_samples}


def runs_for(cfg) -> list:
    """The prepare run that a run of ``cfg`` declares (the store executes it first): one for a dataset in
    ``PREPARED``, none otherwise."""
    dataset = getattr(cfg, "dataset", None)
    return [(SCRIPT, Config(dataset=dataset, **runtime_of(cfg)))] if dataset in PREPARED else []


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
