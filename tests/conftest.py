"""Shared test helpers: run a script as a user would (a subprocess, or in this process for a refusal) and read what
it printed."""
from __future__ import annotations

import contextlib
import importlib
import io
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


def run_main(script, *args, env=None) -> subprocess.CompletedProcess:
    """``python -m <script> <args>`` computed in this process, from the repository root as :func:`run_cli` runs it
    (``env``: variables set for the call): its exit code and what it printed, as a ``CompletedProcess``, without the
    seconds a new interpreter spends importing torch. For a command whose result, files or message are the point,
    not the process. It computes on one thread; what it may set for the whole process is restored
    (:func:`process_state`)."""
    from common import cli

    module = importlib.import_module(script)
    if hasattr(module, "__path__") and not hasattr(module, "main"):  # a package run by its __main__ (figures)
        module = importlib.import_module(f"{script}.__main__")
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with process_state(), contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        try:  # a script's command is common.cli.main; another module's (common.export) is its own main
            code = cli.main(script, argv) if getattr(module, "SCRIPT", None) == script else module.main(argv)
        except SystemExit as exc:  # argparse's exit, its error line or --help already printed
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)  # as the interpreter prints a message it exits with
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess([sys.executable, "-m", script, *argv], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def process_state():
    """Inside: torch on one thread. Afterwards, what a run may set for the whole process is as it was before: torch's
    threads, deterministic mode (``--deterministic``) and backend flags (a CUDA device), ``--sync-bn``, the global
    RNG and the environment (``CUBLAS_WORKSPACE_CONFIG``, torchrun's variables)."""
    import torch

    from common import distributed

    flags = [(torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "deterministic"),
             (torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]
    values = [getattr(owner, name) for owner, name in flags]
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    sync_bn, rng, env = bool(distributed._sync_bn), torch.get_rng_state(), dict(os.environ)
    try:
        with single_thread():
            yield
    finally:
        for (owner, name), value in zip(flags, values):
            setattr(owner, name, value)
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
                != deterministic:  # compared first: setting it imports torch's compiler stack (seconds)
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        distributed.set_sync_batchnorm(sync_bn)
        torch.set_rng_state(rng)
        for name in set(os.environ) - set(env):
            del os.environ[name]
        os.environ.update(env)


def refused_in_a_job_of(world: int, script: str, argv, monkeypatch) -> str:
    """Run ``script`` in this process as if it were one of ``world`` processes (WORLD_SIZE, no process group); it must
    exit with 2 and one ``error: ...`` line, which is returned."""
    from common import distributed

    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setattr(distributed, "init_from_env", lambda: False)  # the process group itself is not needed here
    proc = run_main(script, *argv)
    assert proc.returncode == 2, proc.stderr
    return one_error_line(proc)


@contextlib.contextmanager
def torch_threads(count: int):
    """torch on ``count`` threads inside the block, the previous count restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def single_thread():
    """torch on one thread inside the block (as a 1-CPU job computes)."""
    return torch_threads(1)


@pytest.fixture
def one_thread():
    """Tiny forward passes gain nothing from more threads, and spinning OpenMP workers
    make the tests many times slower when the 2 cores are shared with other jobs."""
    with single_thread():
        yield


@pytest.fixture
def png_only(monkeypatch):
    """Figures drawn as PNG alone: a test that draws many figures from a store draws each once, not once per format
    (the PDFs are drawn and checked by tests/test_figures.py)."""
    from figures import plot

    monkeypatch.setattr(plot, "IMAGE_FORMATS", (".png",))


def one_thread_pretrain(args, runs_dir, threads: int = 1):
    """A ``common.pretrain`` run computed in this process with one thread (as a 1-CPU job computes it), or with
    ``threads``: (its result, its ``Run``)."""
    from common import config as C
    from common import pretrain
    from common.store import Run, execute

    cfg = C.parse_args(pretrain.Config, [*args, "--runs-dir", str(runs_dir)])
    with torch_threads(threads):
        return execute(pretrain, cfg), Run(pretrain.SCRIPT, cfg)


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


# The files that take longest (measured on a 2-core machine), longest first: under ``pytest -n N --dist loadfile`` a
# worker takes the next file when it finishes one, so starting with the long ones lets the workers finish together.
# The Slurm tests come first: they mostly wait on the cluster (a requeue after a time limit takes minutes), and the
# other workers compute the rest of the suite meanwhile. A file not listed runs after these, in the usual order.
# (``--no-loadscope-reorder``, in the Makefile: xdist would otherwise hand out the files with most tests first.)
LONGEST_FIRST = ("test_slurm_requeue", "test_slurm", "test_slurm_ddp", "test_compare", "test_bip_figures",
                 "test_export", "test_store", "test_bip", "test_gmp", "test_readme_examples", "test_gpu_check",
                 "test_longruns", "test_figures", "test_sparse_export", "test_notebooks", "test_plan")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))
