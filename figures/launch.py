"""Compute a figure's missing runs outside the drawing process.

``local``: a pool of worker processes, as many as there are cores (at most one per run), each limited to its share
of the cores' threads so that the pool does not oversubscribe the CPU.
``slurm``: job arrays (``slurm.submit``) in dependency order -- the dense models and other runs that others need
first, their dependents pending on them (``--dependency=afterok``) -- at most ``max_parallel`` jobs of an array at
once, resources from the resource file and ``PRUNING_SLURM_*`` variables; it prints the job ids and the log folder
and returns without waiting.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os

from common.errors import RunFailed, UserError


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _execute(script: str, cfg) -> tuple[str, str | None]:
    from common.store import Run, execute

    try:
        execute(script, cfg)
        return Run(script, cfg).hash, None
    except (RunFailed, UserError) as exc:
        return Run(script, cfg).hash, f"{script} {Run(script, cfg).dir}: {exc}"


def launch(rows, cluster: str) -> list[str] | None:
    """Compute ``rows`` on ``cluster``; returns the failures, or None when the runs were only submitted."""
    if cluster == "slurm":
        return submit_to_slurm(rows)
    if cluster != "local":
        raise UserError(f"unknown cluster '{cluster}'; choose none, local or slurm")
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


def submit_to_slurm(rows) -> None:
    """Submit ``rows`` and the runs they depend on as Slurm job arrays in dependency order; the figure is drawn by
    the next ``make`` once the jobs are done."""
    from slurm import resources
    from slurm.submit import asks, require_sbatch, submit_runs

    require_sbatch()
    batches, folder, already = submit_runs(rows, resources.Choice(), "figure")
    if already:
        print(f"  {len(already)} run(s) already queued or running (jobs {', '.join(sorted(set(already.values())))}); "
              "not submitted again", flush=True)
    if not batches:
        return None
    for batch in batches:
        first = str(batch.jobs[0].job_id).split("_")[0]
        what = f"job array {first}" if len(batch.jobs) > 1 else f"job {first}"
        waits = (f"; pending until job(s) {', '.join(batch.after)} succeeded (--dependency=afterok)"
                 if batch.after else "")
        low, high = min(batch.requeues), max(batch.requeues)
        print(f"  submitted {len(batch.jobs)} run(s) as Slurm {what} (at most {batch.res.max_parallel} at once; "
              f"{asks(batch.res)}, {low if low == high else f'{low}-{high}'} requeues{waits})", flush=True)
    print(f"  logs: {folder}", flush=True)
    ids = " ".join(sorted({str(b.jobs[0].job_id).split("_")[0] for b in batches}))
    print(f"  follow with: squeue -j {ids.replace(' ', ',')}; run the same make target again once they are done "
          "to draw", flush=True)
    return None
