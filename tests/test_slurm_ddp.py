"""DistributedDataParallel: 2 CPU processes (gloo) train like 1 process on the same global batches.

Once started by torchrun (the RANK / WORLD_SIZE environment), once as a 2-task Slurm job (submitit's job
environment) when a cluster answers; rank 0 alone writes the run store.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from common.store import read_log
from tests.conftest import one_thread_pretrain, run_cli
from tests.test_slurm import cluster, logs  # noqa: F401 - the cluster fixtures

# 1437 training samples in batches of 128: the last batch (29) is not divisible by 2 ranks, on purpose
ARGS = ["--model", "mlp", "--train.epochs", "3", "--device", "cpu", "--progress", "off"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The run computed by one process, one thread."""
    return one_thread_pretrain(ARGS, tmp_path_factory.mktemp("single"))


def assert_matches(run_dir, single):
    result, run = single
    ddp = json.loads((run_dir / "result.json").read_text())
    assert ddp["test_acc"] == pytest.approx(result["test_acc"], abs=1 / 360)  # at most one test image differs
    assert ddp["test_loss"] == pytest.approx(result["test_loss"], rel=1e-4)
    a = torch.load(run_dir / "model.pt", weights_only=True)
    b = torch.load(run.dir / "model.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    train_losses = [r["train_loss"] for r in read_log(run_dir)]  # reduced over both ranks' shards
    assert train_losses == pytest.approx([r["train_loss"] for r in read_log(run.dir)], rel=1e-4)


def test_torchrun_two_cpu_processes_match_one_process(single, tmp_path):
    proc = run_cli("torch.distributed.run", "--nproc-per-node", "2", "-m", "common.pretrain", *ARGS,
                   "--runs-dir", tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "common.pretrain" / single[1].hash
    assert len(read_log(run_dir)) == 3  # one writer: rank 0
    assert_matches(run_dir, single)


def test_two_task_slurm_job_trains_with_ddp(cluster, logs, single, tmp_path):  # noqa: F811
    proc = run_cli("slurm.submit", "--wait", "--tasks", "2", "--time", "5", "common.pretrain", *ARGS,
                   "--runs-dir", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = re.search(r"submitted job (\d+)", proc.stdout).group(1)
    outs = [p.read_text() for p in sorted(logs.glob(f"*/{job}_[01]_log.out"))]
    assert len(outs) == 2 and "task 0/2" in outs[0] and "task 1/2" in outs[1]
    assert_matches(tmp_path / "common.pretrain" / single[1].hash, single)
