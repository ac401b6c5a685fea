"""What figures cost before they are computed: ``python -m figures plan NAME [NAME ...] | all --profile paper``.

Builds configs only (no dataset is read, no model built or trained). The work of a figure is its runs together with
every run they execute first (their scripts' ``dependencies``: dense models, rewinding points, BiP masks), each
counted once by its run-store identity, as the store computes it once: a dense model shared by many runs, or a run
shared between figures (``plan all``'s total), is charged once. Each run is

  done     its directory has ``result.json``;
  queued   a Slurm job id is recorded in it (``common.store.JOB_FILE``; the id is not checked against the queue), or
           it holds a ``lock`` (being computed, or left by a process that died) or a ``checkpoint.pt`` (started, will
           resume) but no result;
  missing  none of these.

Its cost is ``common.cost``'s estimate of its length (epochs of plain training of its (dataset, model) times
the A100 GPU-hours of such an epoch, from the editable table ``figures/epoch_times.toml``), the same estimate
that sizes a Slurm job's requeue budget (``slurm.resources``).
"""
from __future__ import annotations

import importlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from common.cost import TABLE, Times, a100_hours, epochs_of, load_times
from common.store import JOB_FILE, Run

STATES = ("done", "queued", "missing")


# ------------------------------------------------------------------------------------------------ work of a run
def with_dependencies(rows) -> list[tuple[str, object]]:
    """``rows`` and every run they execute first (transitively), each (script, run-store hash) once, in order."""
    out, seen = [], set()

    def visit(script, cfg):
        key = (script, Run(script, cfg).hash)
        if key in seen:
            return
        seen.add(key)
        declared = getattr(importlib.import_module(script), "dependencies", None)
        for dep in (declared(cfg) if declared is not None else []):
            visit(*dep)
        out.append((script, cfg))

    for script, cfg in rows:
        visit(script, cfg)
    return out


def state_of(script: str, cfg) -> tuple[str, str]:
    """(done | queued | missing, why) from the run's directory."""
    run = Run(script, cfg)
    if run.done:
        return "done", ""
    job = run.dir / JOB_FILE
    if job.exists():
        return "queued", f"job {job.read_text().strip()}"
    for name, why in (("lock", "lock"), ("checkpoint.pt", "checkpoint")):
        if (run.dir / name).exists():
            return "queued", why
    return "missing", ""


@dataclass
class Item:
    script: str
    hash: str
    dir: Path
    setup: str  # "dataset / model"
    epochs: float
    hours: float
    state: str
    why: str


def items(rows, times: Times) -> list[Item]:
    """Every run of ``rows`` and of their dependencies, once each, with its cost and state."""
    out = []
    for script, cfg in with_dependencies(rows):
        epochs = epochs_of(script, cfg, times)
        state, why = state_of(script, cfg)
        run = Run(script, cfg)
        out.append(Item(script, run.hash, run.dir, f"{cfg.dataset} / {getattr(cfg, 'model', 'data')}", epochs,
                        a100_hours(script, cfg, times), state, why))
    return out


# ------------------------------------------------------------------------------------------------ reports
def summary(work: list[Item]) -> list[dict]:
    """One row per setup (dataset / model), then the total: runs by state, epochs, A100-hours, hours left."""
    groups = defaultdict(list)
    for it in work:
        groups[it.setup].append(it)
    rows = []
    for setup, its in sorted(groups.items(), key=lambda kv: -sum(i.hours for i in kv[1])) + [("total", work)]:
        rows.append({"setup": setup, "runs": len(its), **{s: sum(i.state == s for i in its) for s in STATES},
                     "epochs": sum(i.epochs for i in its), "hours": sum(i.hours for i in its),
                     "left": sum(i.hours for i in its if i.state != "done")})
    return rows


def format_summary(rows: list[dict]) -> str:
    head = f"  {'dataset / model':26s} {'runs':>6s} {'done':>6s} {'queued':>6s} {'missing':>7s} {'epochs':>9s} " \
           f"{'A100-h':>9s} {'left':>9s}"
    lines = [head]
    for r in rows:
        lines.append(f"  {r['setup']:26s} {r['runs']:6d} {r['done']:6d} {r['queued']:6d} {r['missing']:7d} "
                     f"{r['epochs']:9.1f} {r['hours']:9.1f} {r['left']:9.1f}")
    return "\n".join(lines)


def format_items(work: list[Item]) -> str:
    return "\n".join(f"  {i.state:7s} {i.why:12s} {i.script:16s} {i.dir}  {i.setup:24s} {i.epochs:8.2f} ep "
                     f"{i.hours:9.2f} h" for i in work)


def plan(names, profile: str, runtime: dict, times_path: Path | str = TABLE, list_runs: bool = False,
         echo=print) -> dict:
    """Print each figure's work and, for several, the total with shared runs once; returns {name: hours, ...,
    "total": hours}."""
    from figures.pipeline import planned_runs

    times = load_times(times_path)
    out, seen, union, per_figure = {}, set(), [], []
    for name in names:
        work = items(planned_runs(name, profile, runtime), times)
        rows = summary(work)
        new = [i for i in work if (i.script, i.hash) not in seen]
        seen.update((i.script, i.hash) for i in work)
        union += new
        total = rows[-1]
        echo(f"{name} [{profile}]: {total['runs']} runs with their dependencies ({total['done']} done, "
             f"{total['queued']} queued, {total['missing']} missing), {total['hours']:.1f} A100 GPU-hours, "
             f"{total['left']:.1f} left")
        echo(format_summary(rows))
        if list_runs:
            echo(format_items(work))
        out[name] = total["hours"]
        per_figure.append((name, total["runs"], total["hours"], len(new), sum(i.hours for i in new)))
    if len(names) > 1:
        total = summary(union)[-1]
        echo(f"\nall {len(names)} figures [{profile}], each run once (shared runs charged to the first figure "
             f"listed that needs them):")
        echo(f"  {'figure':28s} {'runs':>6s} {'A100-h':>9s} {'new runs':>8s} {'new A100-h':>10s}")
        for name, runs, hours, n_new, h_new in per_figure:
            echo(f"  {name:28s} {runs:6d} {hours:9.1f} {n_new:8d} {h_new:10.1f}")
        echo(f"  {'total':28s} {total['runs']:6d} {'':9s} {total['runs']:8d} {total['hours']:10.1f}  "
             f"({total['done']} done, {total['queued']} queued, {total['missing']} missing; "
             f"{total['left']:.1f} A100 GPU-hours left)")
        echo(format_summary(summary(union)))
        out["total"] = total["hours"]
    else:
        out["total"] = out[names[0]]
    return out
