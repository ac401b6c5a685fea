"""Each script's declared ``dependencies(cfg)`` (what Slurm submissions queue ahead of it) are exactly the runs its
``compute`` executes: computed from scratch in an empty store, a run leaves behind itself and the runs its
declarations name, transitively, and nothing else."""
from __future__ import annotations

import pytest

from common import config as C
from common.store import Run, execute
from slurm.submit import dependencies
from tests.conftest import single_thread

GMP = ["--model", "mlp", "--exclude", "last", "--pretrain.epochs", "2", "--epochs", "3", "--stabilize-epochs", "1",
       "--prune-epochs", "1"]
BIP = ["--pretrain.epochs", "2", "--epochs", "1"]
CASES = {
    "gmp.prune": GMP,
    "bip.retrain": [*BIP, "--target-sparsity", "0.8", "--rewind-epoch", "1",
                    "--retrain-epochs", "1"],
    "bip.magnitude": [*BIP, "--method", "imp", "--target-sparsity", "0.36", "--rewind-epoch", "1"],
    "seqattn.oneshot": ["--model", "mlp", "--score", "magnitude", "--block", "4", "--sparsities", "0.5",
                        "--pretrain.epochs", "2", "--finetune.epochs", "1"],
    "posttrain.prune": ["--model", "mlp", "--pretrain.epochs", "2", "--samples", "32", "--phase1-epochs", "1",
                        "--phase2-epochs", "1"],
}


def closure(script, cfg) -> set[tuple[str, str]]:
    out = {(script, Run(script, cfg).hash)}
    for dep in dependencies(script, cfg):
        out |= closure(*dep)
    return out


@pytest.mark.parametrize("script", CASES)
def test_declared_dependencies_are_what_compute_executes(script, tmp_path):
    import importlib

    module = importlib.import_module(script)
    cfg = C.parse_args(module.Config, [*CASES[script], "--progress", "off", "--runs-dir", str(tmp_path)],
                       presets=getattr(module, "PRESETS", None))
    with single_thread():
        execute(module, cfg)
    made = {(p.parent.parent.name, p.parent.name) for p in tmp_path.glob("*/*/result.json")}
    assert made == closure(script, cfg)
    assert len(made) > 1  # it has dependencies at all
