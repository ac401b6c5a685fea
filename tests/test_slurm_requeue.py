"""A run cut by its time limit or preempted on the real Slurm cluster (see tests/test_slurm.py for the cluster):
it checkpoints, requeues itself and resumes to the uninterrupted result. These tests wait minutes on the cluster, so
they are a file of their own: under ``pytest -n 3`` they run beside the other Slurm tests, not after them."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import pretrain
from common.store import Run, read_log
from tests.conftest import ROOT
from tests.test_slurm import cluster, local_result, logs, same_model  # noqa: F401 - the cluster fixtures


def submit_between_time_limit_checks() -> None:
    """slurmctld checks time limits (and sends the --signal warnings) every 30 s from its start; a job that starts
    within a second of a check can miss its warning, so wait until we are mid-way between two checks."""
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    boot = re.search(r"BOOT_TIME\s*=\s*(\S+)", conf)
    if boot:
        phase = (time.time() - time.mktime(time.strptime(boot.group(1), "%Y-%m-%dT%H:%M:%S"))) % 30
        if not 8 <= phase <= 22:
            time.sleep((15 - phase) % 30)


def epochs_done(run_dir: Path) -> int:
    """The last epoch the run's log.jsonl records (0 before its first, or before the run has a folder)."""
    return max((r["epoch"] for r in read_log(run_dir) if "epoch" in r), default=0)


def submit(args, runs: Path, *options, stdout, stderr) -> subprocess.Popen:
    """``python -m slurm.submit --wait <options> common.pretrain <args>`` in the background."""
    return subprocess.Popen([sys.executable, "-m", "slurm.submit", "--wait", *options, "common.pretrain", *args,
                             "--runs-dir", str(runs)], cwd=ROOT, stdout=stdout, stderr=stderr, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


def epochs_lasting(seconds: float, args: list[str], runs: Path, *, at_least: int) -> int:
    """How many epochs of the run ``args`` one thread computes in about ``seconds`` on this machine today (at least
    ``at_least``), from a 20-epoch run of it timed here: its start-up and data loading count as epochs, so the runs
    it sizes come out a little shorter than ``seconds``."""
    probe, _ = local_result([*args, "--train.epochs", "20"], runs)
    return max(at_least, math.ceil(seconds * 20 / probe["run_time"]))


def test_run_longer_than_its_time_limit_is_requeued_and_resumes_to_the_same_result(cluster, logs, tmp_path):
    # 1-minute limit with the warning 55 s before it: slurmctld delivers USR2 on its next 30-s check, 5-35 s into
    # each job (we submit mid-way between two checks: 8-22 s, which leaves the first leg at most ~19 s of computing
    # after its start-up); the run is sized to ~45 s of one core's computing here (at least 300 epochs; machines this
    # test runs on have computed 300 epochs in 18-50 s), so it is cut at least once. A requeued job waits for its old
    # credential to expire before it starts again (local_cluster.py: cred_expire=10 s), so a leg lasts ~30 s (one
    # time-limit check to the next), of which it computes 5-15 s.
    # The wait follows the run's measured progress, not the clock: it goes on while the legs add epochs to the run's
    # log (on a loaded machine a leg's start-up eats its few seconds and it adds fewer), and fails when `stall` legs
    # in a row add none. The budget of requeues is not what stops it: it leaves room for runs of
    # epochs / (requeues + 1) epochs per leg.
    base = ["--model", "mlp", "--train.batch-size", "16", "--progress", "off"]
    epochs = epochs_lasting(45, base, tmp_path / "probe-runs", at_least=300)
    args = [*base, "--train.epochs", str(epochs)]
    requeues, leg_s, stall = 60, 75, 4
    # the reference first, not while the legs compute: it would slow their few seconds each. A USR2 that comes
    # during a leg's start-up is held (slurm.jobstart) and requeues the job once its handlers are set
    result, local = local_result(args, tmp_path / "local-runs")
    remote = tmp_path / "slurm-runs" / "common.pretrain" / local.hash
    said, errors = tmp_path / "submit.out", tmp_path / "submit.err"
    submit_between_time_limit_checks()
    with open(said, "w") as out, open(errors, "w") as err:
        proc = submit(args, tmp_path / "slurm-runs", "--time", "1", "--signal-delay-s", "55", "--max-requeues",
                      str(requeues), stdout=out, stderr=err)
    job, done = None, 0

    def legs() -> list[str]:
        found = list(logs.glob(f"*/{job}_0_log.out")) if job else []
        return re.findall(r"requeue (\d+):", found[0].read_text()) if found else []

    try:
        progressed = time.time()
        while proc.poll() is None:
            time.sleep(5)
            job = job or next(iter(re.findall(r"submitted job (\d+)", said.read_text())), None)
            if (now := epochs_done(remote)) > done:
                done, progressed = now, time.time()
            if time.time() - progressed > stall * leg_s:
                pytest.fail(f"the run stopped progressing: epoch {done} of {epochs} after {len(legs())} legs, none "
                            f"added in the last {stall * leg_s} s ({stall} legs)\n"
                            f"{said.read_text()}{errors.read_text()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            job = job or next(iter(re.findall(r"submitted job (\d+)", said.read_text())), None)
            if job:
                subprocess.run(["scancel", job], check=False)
    assert proc.returncode == 0, said.read_text() + errors.read_text()
    job = re.search(r"submitted job (\d+)", said.read_text()).group(1)
    log = next(logs.glob(f"*/{job}_0_log.out")).read_text()
    assert len(legs()) >= 2 and legs()[:2] == ["0", "1"], log  # cut by the time limit, requeued, started again
    assert [r["epoch"] for r in read_log(remote) if "epoch" in r] == list(range(1, epochs + 1))  # none lost/repeated
    assert any(r.get("event") == "resume" for r in read_log(remote))
    slurm_result = json.loads((remote / "result.json").read_text())
    assert slurm_result["test_acc"] == result["test_acc"]
    assert slurm_result["test_loss"] == pytest.approx(result["test_loss"], rel=1e-6)
    assert same_model(Run(pretrain.SCRIPT, local.cfg, tmp_path / "slurm-runs"), local)


def test_a_sigterm_checkpoints_at_the_next_step_requeues_and_the_run_resumes_exactly(cluster, logs, tmp_path):
    """A preemption without USR2 (Slurm sends SIGTERM unless preempt_send_user_signal is set): the job checkpoints
    after the step under way, requeues itself, counted, and the run resumes there to the uninterrupted result."""
    args = ["--model", "mlp", "--train.epochs", "100", "--train.batch-size", "16", "--progress", "off"]
    proc = submit(args, tmp_path / "slurm-runs", "--time", "10", "--max-requeues", "2", stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    try:
        job = re.search(r"submitted job (\d+)", first).group(1)
        remote = tmp_path / "slurm-runs" / "common.pretrain"
        deadline = time.time() + 240
        while time.time() < deadline and not any("epoch" in r for d in remote.glob("*") for r in read_log(d)):
            time.sleep(0.5)
        subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=60)
        result, local = local_result(args, tmp_path / "local-runs")  # while the requeued job computes
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    remote = remote / local.hash
    assert proc.returncode == 0, first + out + err
    log = next(logs.glob(f"*/{job}_0_log.out")).read_text()
    assert "SIGTERM: checkpointing at the next step boundary, then requeuing" in log, log
    assert re.findall(r"requeue (\d+):", log)[:2] == ["0", "1"], log  # requeued by itself, and counted
    resumes = [r for r in read_log(remote) if r.get("event") == "resume"]
    assert len(resumes) == 1, resumes  # from the stop's checkpoint: the run's only one (no epoch end is 10 min late)
    assert [r["epoch"] for r in read_log(remote) if "epoch" in r] == list(range(1, 101))
    assert json.loads((remote / "result.json").read_text())["test_acc"] == result["test_acc"]
    assert same_model(Run(pretrain.SCRIPT, local.cfg, tmp_path / "slurm-runs"), local)
    assert not list(remote.glob("checkpoint*"))  # done: no checkpoint left
