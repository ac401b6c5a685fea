"""Shared test helpers: run a script as a user would (a subprocess) and read what it printed."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """``python -m <args>`` from the repository root, with the repository importable."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line a failed command printed (and nothing that looks like a traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def refused_in_a_job_of(world: int, script: str, argv, monkeypatch, capsys) -> str:
    """Run ``script`` in this process as if it were one of ``world`` processes (WORLD_SIZE, no process group); it must
    exit with 2 and one ``error: ...`` line, which is returned."""
    from common import cli, distributed

    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setattr(distributed, "init_from_env", lambda: False)  # the process group itself is not needed here
    assert cli.main(script, list(argv)) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@contextlib.contextmanager
def single_thread():
    """torch on one thread inside the block (as a 1-CPU job computes), the previous count restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny forward passes gain nothing from more threads, and spinning OpenMP workers
    make the tests many times slower when the 2 cores are shared with other jobs."""
    with single_thread():
        yield


def one_thread_pretrain(args, runs_dir):
    """A ``common.pretrain`` run computed in this process with one thread (as a 1-CPU job computes it):
    (its result, its ``Run``)."""
    from common import config as C
    from common import pretrain
    from common.store import Run, execute

    cfg = C.parse_args(pretrain.Config, [*args, "--runs-dir", str(runs_dir)])
    with single_thread():
        return execute(pretrain, cfg), Run(pretrain.SCRIPT, cfg)


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


def pytest_collection_modifyitems(items):
    """The Slurm tests mostly wait on the cluster (requeue after a time limit takes minutes): under ``pytest -n 2``
    they start first, so the other worker computes the rest of the suite meanwhile."""
    items.sort(key=lambda item: 0 if item.module.__name__.startswith("test_slurm") else 1)
