"""Compute a figure's missing runs outside the drawing process.

``local``: a pool of worker processes, as many as there are cores (at most one per run), each limited to its share
of the cores' threads so that the pool does not oversubscribe the CPU; the runs the given ones declare (their
``dependencies``, which ``execute`` executes before a run's ``compute``) are scheduled as runs of their own, each
started once what it needs is done, the longest critical path first.
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


def launch(rows, cluster: str, dry_run: bool = False) -> list[str] | None:
    """Compute ``rows`` on ``cluster``; returns the failures, or None when the runs were only submitted (``dry_run``:
    only the sbatch scripts printed)."""
    if cluster == "slurm":
        return submit_to_slurm(rows, dry_run)
    if cluster != "local":
        raise UserError(f"unknown cluster '{cluster}'; choose none, local or slurm")
    return list(run_pool(rows).values())


def schedule(rows):
    """The missing runs of ``rows`` and of what they execute first, as (key, script, cfg, needs, priority): ``needs``
    the keys of its missing dependencies, ``priority`` its critical path -- its estimated cost plus the longest
    chain of missing runs that wait on it (costs from ``common.cost``; 1 epoch where the table has no entry)."""
    from common.cost import a100_hours, load_times
    from common.store import Run
    from figures.cost import critical_paths, needs_of, with_dependencies

    times = load_times()
    todo = {}
    for script, cfg in with_dependencies(rows):  # dependencies before their dependents
        run = Run(script, cfg)
        if run.done:
            continue
        needs = needs_of(script, cfg) & todo.keys()
        try:
            cost = a100_hours(script, cfg, times)
        except UserError:
            cost = 1.0
        todo[(script, run.hash)] = [script, cfg, needs, cost]
    priority = critical_paths({k: v[3] for k, v in todo.items()}, {k: v[2] for k, v in todo.items()})
    return [(key, script, cfg, needs, priority[key]) for key, (script, cfg, needs, _) in todo.items()]


def run_pool(rows) -> dict:
    """A pool of worker processes, one per core: a run starts once every run it needs is done, the ready run with
    the longest critical path first (so the long chains, e.g. IMP's rounds, start early and no core waits on a lock
    another holds); a failed run's dependents are not started. Returns the failures, {(script, hash): one line}."""
    plan = schedule(rows)
    if not plan:
        return {}
    cores = os.cpu_count() or 1
    workers = max(1, min(cores, len(plan)))
    waiting = {key: (script, cfg, set(needs), prio) for key, script, cfg, needs, prio in plan}
    failures, done = {}, 0
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(max(1, cores // workers),)) as pool:
        running = {}
        while waiting or running:
            ready = sorted((k for k, (_, _, needs, _) in waiting.items() if not needs),
                           key=lambda k: -waiting[k][3])
            for key in ready[:workers - len(running)]:
                script, cfg, _, _ = waiting.pop(key)
                running[pool.submit(_execute, script, cfg)] = key
            if not running:  # everything left waits on a failed run
                for key in waiting:
                    failures[key] = f"{key[0]} {key[1]}: not started, a run it needs failed"
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                key = running.pop(fut)
                run_hash, failure = fut.result()
                done += 1
                print(f"  [{done}/{len(plan)}] {run_hash} {'FAILED: ' + failure if failure else 'done'}", flush=True)
                if failure:
                    failures[key] = failure
                    continue
                for _, _, needs, _ in waiting.values():
                    needs.discard(key)
    return failures


def submit_to_slurm(rows, dry_run: bool = False) -> None:
    """Submit ``rows`` and the runs they depend on as Slurm job arrays in dependency order; the figure is drawn by
    the next ``make`` once the jobs are done. ``dry_run``: print the sbatch scripts instead, submitting nothing."""
    from slurm import resources
    from slurm.submit import asks, print_dry_run, require_sbatch, submit_runs

    if not dry_run:
        require_sbatch()
    batches, folder, already = submit_runs(rows, resources.Choice(), "figure", dry_run)
    if already:
        print(f"  {len(already)} run(s) already queued or running (jobs {', '.join(sorted(set(already.values())))}); "
              "not submitted again", flush=True)
    if not batches or dry_run:
        return print_dry_run(batches) if batches else None
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
