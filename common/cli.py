"""The execution-only settings every script shares, and the entry point that turns a script into a command."""
from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass

from common import config as C
from common import distributed
from common.data import data_root
from common.errors import exit_code
from common.export import BLOCK_HELP, FORMAT_HELP, check_block, export_run
from common.sparse import FORMATS
from common.store import Run, execute, run_for, stored_notice
from common.train import check_device


@dataclass
class Runtime:
    """How a run executes; none of these fields is part of the run's identity (its hash)."""

    device: str = C.opt("auto", "where to compute: auto (cuda if available), cpu, cuda, cuda:N", hash=False)
    data_dir: str = C.opt("data", "folder that holds the datasets", hash=False)
    download: bool = C.opt(False, "download a missing dataset when the dataset has a downloader", hash=False)
    runs_dir: str = C.opt("runs", "root of the run store", hash=False)
    workers: str = C.opt("auto", "DataLoader workers per process for folder datasets (ImageNet, Tiny-ImageNet): auto "
                                 "(the CPUs this process may run on, at most SLURM_CPUS_PER_TASK, shared among the "
                                 "node's torchrun processes, less one) or a number (0: decode in the training process)",
                         hash=False)
    checkpoint_every_minutes: float = C.opt(30.0, "also checkpoint within an epoch this often (0: at epoch ends "
                                                  "only); a resume continues at that batch, exactly", hash=False)
    checkpoint_every_steps: int = C.opt(0, "also checkpoint within an epoch every this many batches (0: never)",
                                        hash=False)
    checkpoint_epoch_minutes: float = C.opt(10.0, "checkpoint at an epoch's end only when this many minutes have "
                                                  "passed since the last checkpoint (0: at every epoch end)",
                                            hash=False)
    keep_checkpoint: bool = C.opt(False, "keep the run's checkpoint.pt once it is done (by default it is deleted: "
                                         "the result, model and log stay)", hash=False)
    deterministic: bool = C.opt(False, "deterministic GPU kernels only (torch.use_deterministic_algorithms, no cuDNN "
                                       "autotuning, fixed cuBLAS workspace): the same bits on every run of the same "
                                       "GPU model and software, at some speed", hash=False)
    sync_bn: bool = C.opt(False, "changes only runs of several processes (DDP): BatchNorm normalizes with the "
                                 "statistics of the global batch, over every rank (SyncBatchNorm), as one process "
                                 "does, instead of each rank's shard; one process is unchanged", hash=False)
    progress: str = C.opt("auto", "progress display: auto (a bar on a terminal, lines otherwise), bar, lines, off",
                          choices=("auto", "bar", "lines", "off"), hash=False)
    export: bool = C.opt(False, "once the run is done (or read from the store), write its final model for use without "
                                "this repository to <run>/export/ (see python -m common.export --help)", hash=False)
    export_format: str = C.opt("dense", "with --export (a sparse one implies it): " + FORMAT_HELP,
                               choices=FORMATS, hash=False)
    export_block: int = C.opt(0, "with --export-format bsr: " + BLOCK_HELP, hash=False)


def runtime_of(cfg) -> dict:
    """The Runtime fields of a config, to hand to a dependency's config."""
    return {name: getattr(cfg, name) for name in Runtime.__dataclass_fields__}


def export(module, cfg) -> None:
    """Write the finished run's export (by one process: rank 0 under torchrun)."""
    if not distributed.is_main():
        return
    out = export_run(Run(module.SCRIPT, cfg).dir, cfg.export_format, cfg.export_block,
                     note=lambda line: print(line, file=sys.stderr))
    print(f"exported: {out}", file=sys.stderr)


def main(module_name: str, argv=None) -> int:
    """Parse the command line of script ``module_name``, compute the run (or read it), print its metrics.

    Standard output carries only the result (one JSON line); the run's directory and the progress go to standard
    error, so ``python -m gmp.prune ... | jq`` reads the result alone.
    """
    module = importlib.import_module(module_name)
    run_dir: list[str] = []  # the run's directory once known: the folder an error about a full disk names

    def action():
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: join its process group
            distributed.init_from_env()
        cfg = C.parse_args(module.Config, argv, description=(module.__doc__ or "").strip(),
                           presets=getattr(module, "PRESETS", None), prog=f"python -m {module_name}",
                           script=module.SCRIPT)
        if hasattr(cfg, "device"):
            check_device(cfg.device)  # before the run's directory is made
        if hasattr(cfg, "data_dir"):
            data_root(cfg.data_dir)
        check_block(cfg.export_format, cfg.export_block, "--export-block")
        if getattr(module, "validate", None):
            module.validate(cfg)  # the script's own checks, before its run directory is named (execute checks again)
        run = run_for(module, cfg)
        run_dir.append(str(run.dir))
        if distributed.is_main():  # the other ranks of a torchrun job compute along but print nothing
            print(f"run: {run_dir[0]}", file=sys.stderr, flush=True)
        stored = run.done
        result = execute(module, cfg)
        if stored and distributed.is_main():
            print("\n".join(stored_notice(run, result)), file=sys.stderr, flush=True)
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}, sort_keys=True),
              flush=True)
        if cfg.export or cfg.export_format != "dense":
            export(module, cfg)

    return exit_code(action, where=lambda: run_dir[0] if run_dir else None)
