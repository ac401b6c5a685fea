"""Compute a figure's missing runs outside the drawing process.

``local``: a pool of worker processes, as many as there are cores (at most one per run), each limited to its share
of the cores' threads so that the pool does not oversubscribe the CPU.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os

from common.errors import Diverged, UserError


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _execute(script: str, cfg) -> tuple[str, str | None]:
    from common.store import Run, execute

    try:
        execute(script, cfg)
        return Run(script, cfg).hash, None
    except (Diverged, UserError) as exc:
        return Run(script, cfg).hash, f"{script} {Run(script, cfg).dir}: {exc}"


def launch(rows, cluster: str) -> list[str] | None:
    """Compute ``rows`` on ``cluster``; returns the failures, or None when the runs were only submitted."""
    if cluster != "local":
        raise UserError(f"unknown cluster '{cluster}'; choose none or local")
    cores = os.cpu_count() or 1
    workers = max(1, min(cores, len(rows)))
    failures = []
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(max(1, cores // workers),)) as pool:
        futures = [pool.submit(_execute, script, cfg) for script, cfg in rows]
        for i, fut in enumerate(cf.as_completed(futures), 1):
            run_hash, failure = fut.result()
            print(f"  [{i}/{len(rows)}] {run_hash} {'FAILED: ' + failure if failure else 'done'}", flush=True)
            if failure:
                failures.append(failure)
    return failures
