"""DistributedDataParallel: 2 CPU processes (gloo) train like 1 process on the same global batches.

Once started by torchrun (the RANK / WORLD_SIZE environment), once as a 2-task Slurm job (submitit's job
environment) when a cluster answers; rank 0 alone writes the run store.
"""
from __future__ import annotations

import json
import re
import time

import pytest
import torch

from common.store import read_log
from tests.conftest import one_thread_pretrain, run_cli, single_thread
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
    train_losses = [r["train_loss"] for r in read_log(run_dir) if "epoch" in r]  # reduced over both ranks' shards
    assert train_losses == pytest.approx([r["train_loss"] for r in read_log(run.dir) if "epoch" in r], rel=1e-4)


def test_torchrun_two_cpu_processes_match_one_process(single, tmp_path):
    proc = run_cli("torch.distributed.run", "--nproc-per-node", "2", "-m", "common.pretrain", *ARGS,
                   "--runs-dir", tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "common.pretrain" / single[1].hash
    assert len(read_log(run_dir)) == 3  # one writer: rank 0
    assert_matches(run_dir, single)


def largest_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts' floating-point tensors."""
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def test_with_batchnorm_two_processes_are_close_to_one_not_equal(tmp_path):
    """Each rank's BatchNorm normalizes with its own shard's batch statistics (DDP without SyncBatchNorm): the digits
    CNN after 3 epochs is within the stated 0.1 per weight and 3 test images of one process, and not equal to it."""
    args = ["--model", "cnn", "--train.epochs", "3", "--device", "cpu", "--progress", "off"]
    result, run = one_thread_pretrain(args, tmp_path / "single")
    proc = run_cli("torch.distributed.run", "--nproc-per-node", "2", "-m", "common.pretrain", *args,
                   "--runs-dir", tmp_path / "ddp", env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "ddp" / "common.pretrain" / run.hash
    ddp = json.loads((run_dir / "result.json").read_text())
    assert ddp["test_acc"] == pytest.approx(result["test_acc"], abs=3 / 360)
    a = torch.load(run_dir / "model.pt", weights_only=True)
    b = torch.load(run.dir / "model.pt", weights_only=True)
    gap = largest_difference(a, b)
    assert 0 < gap <= 0.1


def test_with_sync_bn_two_processes_match_one_process_with_batchnorm(tmp_path):
    """--sync-bn (the same run hash): BatchNorm normalizes with the global batch's statistics, so the digits CNN after
    an epoch of 12 steps is as close to one process as one process is to itself on 2 threads instead of 1 (another
    summation order), or within 1e-5. Float rounding grows over the steps of this small BatchNorm network, and the CPU
    kernels' summation orders differ between machines: this run with --sync-bn has been within 1e-5 of one process on
    one machine and 3.4e-4 from it on another, where one process on 2 threads was 3.4e-4 from itself on 1 thread and
    DDP without --sync-bn (each rank's own batch statistics) 1.5e-2."""
    args = ["--model", "cnn", "--train.epochs", "1", "--device", "cpu", "--progress", "off"]
    result, run = one_thread_pretrain(args, tmp_path / "single")
    _, run_2 = one_thread_pretrain(args, tmp_path / "single-2-threads", threads=2)
    proc = run_cli("torch.distributed.run", "--nproc-per-node", "2", "-m", "common.pretrain", *args, "--sync-bn",
                   "--runs-dir", tmp_path / "ddp", env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "ddp" / "common.pretrain" / run.hash
    ddp = json.loads((run_dir / "result.json").read_text())
    assert ddp["test_acc"] == pytest.approx(result["test_acc"], abs=1 / 360)
    assert ddp["test_loss"] == pytest.approx(result["test_loss"], rel=1e-5)
    a, b, b_2 = (torch.load(d / "model.pt", weights_only=True) for d in (run_dir, run.dir, run_2.dir))
    rounding = largest_difference(b, b_2)
    assert rounding < 1e-3  # the summation orders' noise stays far below what unsynchronized BatchNorm gives
    assert largest_difference(a, b) <= max(1e-5, rounding)


def test_two_task_slurm_job_trains_with_ddp(cluster, logs, single, tmp_path):  # noqa: F811
    proc = run_cli("slurm.submit", "--wait", "--tasks", "2", "--time", "5", "common.pretrain", *ARGS,
                   "--runs-dir", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = re.search(r"submitted job (\d+)", proc.stdout).group(1)
    outs = [p.read_text() for p in sorted(logs.glob(f"*/{job}_[01]_log.out"))]
    assert len(outs) == 2 and "task 0/2" in outs[0] and "task 1/2" in outs[1]
    assert_matches(tmp_path / "common.pretrain" / single[1].hash, single)


LOCKED = """
import sys
from common import config as C, distributed, pretrain, store
store.LOCK_WAIT = False  # as in a Slurm job
distributed.init_from_env()
try:
    store.execute(pretrain, C.parse_args(pretrain.Config, sys.argv[1:]))
except store.RunLocked as exc:
    print(f"rank {distributed.rank()}: RunLocked: {exc}", flush=True)
    raise SystemExit(5)
"""


def test_ddp_ranks_all_stop_at_once_when_the_run_is_locked_by_another_process(tmp_path):
    from common import config as C
    from common import pretrain
    from common.store import Run

    args = [*ARGS, "--runs-dir", str(tmp_path / "runs")]
    run = Run(pretrain.SCRIPT, C.parse_args(pretrain.Config, args))
    run.dir.mkdir(parents=True)
    (run.dir / "lock").write_text(json.dumps({"host": "other-node", "pid": 4242, "token": "feed"}) + "\n")
    (tmp_path / "locked.py").write_text(LOCKED)
    t0 = time.time()
    proc = run_cli("torch.distributed.run", "--nproc-per-node", "2", tmp_path / "locked.py", *args,
                   env={"OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode != 0 and time.time() - t0 < 60, proc.stderr[-2000:]
    assert "rank 0: RunLocked" in proc.stdout and "rank 1: RunLocked" in proc.stdout, proc.stdout + proc.stderr
    assert "host other-node pid 4242" in proc.stdout and not run.done


def test_torchrun_resumes_a_checkpoint_one_process_took_within_an_epoch(single, tmp_path, monkeypatch):
    """Killed within epoch 2 (one process), resumed by 2 ranks: each starts at that batch of its own shard, rank 0
    carries the epoch's sums so far, and the run still matches the uninterrupted one."""
    from common import config as C
    from common import pretrain, store

    class Killed(Exception):
        pass

    saves = []
    save = store.Run.save_checkpoint

    def killing(self, state):
        save(self, state)
        saves.append(state.get("step"))
        if len(saves) == 4:  # epoch 1: after batches 5 and 10, its end; epoch 2: after batch 5
            raise Killed

    monkeypatch.setattr(store.Run, "save_checkpoint", killing)
    cfg = C.parse_args(pretrain.Config, [*ARGS, "--checkpoint-every-steps", "5", "--checkpoint-epoch-minutes", "0",
                                         "--runs-dir", str(tmp_path)])
    with single_thread():
        with pytest.raises(Killed):
            store.execute(pretrain, cfg)
    assert saves == [5, 10, None, 5]
    proc = run_cli("torch.distributed.run", "--nproc-per-node", "2", "-m", "common.pretrain", *ARGS,
                   "--runs-dir", tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "common.pretrain" / single[1].hash
    assert [r for r in read_log(run_dir) if r.get("event") == "resume"][0]["from_step"] == 5
    assert_matches(run_dir, single)
