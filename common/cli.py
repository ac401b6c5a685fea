"""The execution-only settings every script shares, and the entry point that turns a script into a command."""
from __future__ import annotations

import errno
import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable

from common import config as C
from common.errors import RunFailed, UserError
from common.store import Run, execute, run_for


@dataclass
class Runtime:
    """How a run executes; none of these fields is part of the run's identity (its hash)."""

    device: str = C.opt("auto", "where to compute: auto (cuda if available), cpu, cuda, cuda:N", hash=False)
    data_dir: str = C.opt("data", "folder that holds the datasets", hash=False)
    download: bool = C.opt(False, "download a missing dataset when the dataset has a downloader", hash=False)
    runs_dir: str = C.opt("runs", "root of the run store", hash=False)
    workers: str = C.opt("auto", "DataLoader workers per process for folder datasets (ImageNet, Tiny-ImageNet): auto "
                                 "(the job's CPUs, SLURM_CPUS_PER_TASK or the CPUs this process may use, shared among "
                                 "the node's processes) or a number (0: decode in the training process)", hash=False)
    checkpoint_every_minutes: float = C.opt(30.0, "also checkpoint within an epoch this often (0: at epoch ends "
                                                  "only); a resume continues at that batch, exactly", hash=False)
    checkpoint_every_steps: int = C.opt(0, "also checkpoint within an epoch every this many batches (0: never)",
                                        hash=False)
    deterministic: bool = C.opt(False, "deterministic GPU kernels only (torch.use_deterministic_algorithms, no cuDNN "
                                       "autotuning, fixed cuBLAS workspace): the same bits on every run of the same "
                                       "GPU model and software, at some speed", hash=False)
    progress: str = C.opt("auto", "progress display: auto (a bar on a terminal, lines otherwise), bar, lines, off",
                          choices=("auto", "bar", "lines", "off"), hash=False)
    export: bool = C.opt(False, "once the run is done (or read from the store), write its final model for use without "
                                "this repository to <run>/export/ (see python -m common.export --help)", hash=False)


def runtime_of(cfg) -> dict:
    """The Runtime fields of a config, to hand to a dependency's config."""
    return {name: getattr(cfg, name) for name in Runtime.__dataclass_fields__}


def exit_code(action, where: Callable[[], str | None] | None = None) -> int:
    """Run ``action()``; a user mistake or a failed run ends in one ``error:`` line and a non-zero status.

    Status 2: a user mistake; 3: a failed run; 1: the disk is full (``where()``: the folder to name when the error
    does not say which file it was writing); 130: interrupted.
    """
    try:
        action()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"error: run failed: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        path = os.path.dirname(os.path.abspath(exc.filename)) if exc.filename else (where and where()) or os.getcwd()
        print(f"error: the disk at {path} is full; free some space there (or pass --runs-dir on a disk with room) "
              "and run the command again: a run resumes from its last checkpoint", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: a run resumes from its last checkpoint when started again", file=sys.stderr)
        return 130
    return 0


def is_main_process() -> bool:
    """False in the ranks other than 0 of a torchrun job: they compute along but print and write nothing."""
    ddp = sys.modules.get("common.distributed")
    return ddp is None or ddp.is_main()


def export(module, cfg) -> None:
    """Write the finished run's export (by one process: rank 0 under torchrun)."""
    if not is_main_process():
        return
    from common.export import export_run  # torch.export is loaded only when asked for

    print(f"exported: {export_run(Run(module.SCRIPT, cfg).dir)}", file=sys.stderr)


def main(module_name: str, argv=None) -> int:
    """Parse the command line of script ``module_name``, compute the run (or read it), print its metrics.

    Standard output carries only the result (one JSON line); the run's directory and the progress go to standard
    error, so ``python -m gmp.prune ... | jq`` reads the result alone.
    """
    module = importlib.import_module(module_name)
    run_dir: list[str] = []  # the run's directory once known: the folder an error about a full disk names

    def action():
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: join its process group
            from common import distributed

            distributed.init_from_env()
        cfg = C.parse_args(module.Config, argv, description=(module.__doc__ or "").strip(),
                           presets=getattr(module, "PRESETS", None), prog=f"python -m {module_name}")
        if hasattr(cfg, "device"):
            from common.train import check_device

            check_device(cfg.device)  # before the run's directory is made
        run_dir.append(str(run_for(module, cfg).dir))
        if is_main_process():
            print(f"run: {run_dir[0]}", file=sys.stderr, flush=True)
        result = execute(module, cfg)
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}, sort_keys=True),
              flush=True)
        if cfg.export:
            export(module, cfg)

    return exit_code(action, where=lambda: run_dir[0] if run_dir else None)
