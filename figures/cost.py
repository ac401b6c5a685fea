"""What figures cost before they are computed: ``python -m figures plan NAME [NAME ...] | all --profile paper``.

Builds configs only (no dataset is read, no model trained; each model is built once on the meta device, without
memory, to count its parameters). The work of a figure is its runs together with
every run they execute first (their scripts' ``dependencies``: dense models, rewinding points, BiP masks), each
counted once by its run-store identity, as the store computes it once: a dense model shared by many runs, or a run
shared between figures (``plan all``'s total), is charged once. Each run is

  done     its directory has ``result.json``;
  queued   a Slurm job id is recorded in it (``common.store.JOB_FILE``; the id is not checked against the queue), or
           it holds a ``lock`` (being computed, or left by a process that died) or a ``checkpoint.pt`` (started, will
           resume) but no result;
  missing  none of these.

Its cost is ``common.cost``'s estimate of its length (epochs of plain training of its (dataset, model) times
the A100 GPU-hours of such an epoch, from the editable table ``figures/epoch_times.toml``, whose header derives each
and its range), the same estimate that sizes a Slurm job's requeue budget (``slurm.resources``), and its disk
(``common.cost.disk_of``: what it keeps once done, its checkpoint while it computes, and the checkpoints it writes).
The critical path is the longest chain of runs left that wait on each other (``critical_paths``, which also orders
the local pool: ``figures.launch``), in GPU-days, printed with its runs (``critical_chain``; e.g. a dense model, its
rewinding point, the IMP rounds from it): with one GPU per run no number of GPUs computes the figures faster, and
k GPUs per run shorten it k-fold at most.
"""
from __future__ import annotations

import importlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from common.cost import TABLE, Times, a100_hours, checkpoint_writes, disk_of, epochs_of, load_times
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


def needs_of(script: str, cfg) -> set[tuple[str, str]]:
    """(script, run-store hash) of each run ``script`` executes first on ``cfg`` (its ``dependencies``)."""
    declared = getattr(importlib.import_module(script), "dependencies", None)
    return {(dep[0], Run(*dep).hash) for dep in (declared(cfg) if declared is not None else [])}


def _waiting(needs: dict) -> dict:
    """{key: the keys that wait for it}, from ``needs`` {key: the keys it waits for}."""
    waiting = defaultdict(list)
    for key, keys in needs.items():
        for need in keys:
            waiting[need].append(key)
    return waiting


def critical_paths(costs: dict, needs: dict) -> dict:
    """{key: its cost plus the longest chain of the runs that wait on it}, for runs ``costs`` {key: cost} listed
    after the runs they need, ``needs`` {key: the keys it waits for}; the largest is the critical path."""
    waiting, paths = _waiting(needs), {}
    for key in reversed(list(costs)):
        paths[key] = costs[key] + max((paths[k] for k in waiting[key] if k in paths), default=0.0)
    return paths


def critical_chain(costs: dict, needs: dict) -> list:
    """The keys of the critical path, first to last: from the run with the longest ``critical_paths`` on, each
    time the run waiting on it whose own longest chain is the longest (none for no runs)."""
    paths, waiting = critical_paths(costs, needs), _waiting(needs)
    if not paths:
        return []
    chain = [max(paths, key=paths.get)]
    while nexts := [k for k in waiting[chain[-1]] if k in paths]:
        chain.append(max(nexts, key=paths.get))
    return chain


def state_of(script: str, cfg) -> tuple[str, str]:
    """(done | queued | missing, why) from the run's directory."""
    run = Run(script, cfg)
    if run.done:
        return "done", ""
    job = run.dir / JOB_FILE
    if job.exists():
        return "queued", f"job {job.read_text().strip()}"
    if (run.dir / "lock").exists():
        return "queued", "lock"
    if run.has_checkpoint():
        return "queued", "checkpoint"
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
    needs: set = field(default_factory=set)  # (script, hash) of the runs it executes first
    checkpoint: float = 0.0  # bytes of its checkpoint
    kept: float = 0.0  # bytes it keeps once done
    writes: float = 0.0  # checkpoints it writes


def items(rows, times: Times) -> list[Item]:
    """Every run of ``rows`` and of their dependencies, once each, with its cost, disk and state."""
    out = []
    for script, cfg in with_dependencies(rows):
        epochs = epochs_of(script, cfg, times)
        state, why = state_of(script, cfg)
        run = Run(script, cfg)
        hours = a100_hours(script, cfg, times)
        checkpoint, kept = disk_of(script, cfg, times)
        out.append(Item(script, run.hash, run.dir, f"{cfg.dataset} / {getattr(cfg, 'model', 'data')}", epochs, hours,
                        state, why, needs_of(script, cfg), checkpoint, kept, checkpoint_writes(hours, epochs, cfg)))
    return out


def critical_path(work: list[Item]) -> float:
    """A100-hours of the longest chain of runs left (not done) that wait on each other."""
    return sum(i.hours for i in critical_runs(work))


def critical_runs(work: list[Item]) -> list[Item]:
    """The runs of that chain, first to last: e.g. a dense model, its rewinding point, the IMP rounds from it."""
    left = {(i.script, i.hash): i for i in work if i.state != "done"}
    return [left[k] for k in critical_chain({k: i.hours for k, i in left.items()},
                                            {k: i.needs for k, i in left.items()})]


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB") else f"{n:.1f} {unit}"
        n /= 1000.0


def format_disk(work: list[Item]) -> str:
    """The disk the runs need and what their checkpoints write, and the critical path of those left, in words."""
    largest = max((i.checkpoint for i in work), default=0.0)
    files = sum(i.writes for i in work)
    return (f"  disk: {_size(sum(i.kept for i in work))} kept once done (models, masks, snapshots), plus while a run "
            f"computes its checkpoint and the previous one (largest {_size(largest)}, x2), deleted when it finishes "
            f"(--keep-checkpoint keeps it); checkpoint writes {_size(sum(i.checkpoint * i.writes for i in work))} in "
            f"{files:,.0f} files\n" + format_critical_path(work))


def format_critical_path(work: list[Item]) -> str:
    """The critical path in GPU-days and its runs, one line each: no number of GPUs computes the runs sooner than
    that chain, where each of its runs computes on one GPU (a run on k GPUs shortens its link by k at most)."""
    chain = critical_runs(work)
    runs = f"{len(chain)} run" + "s" * (len(chain) != 1)
    head = (f"  critical path: {sum(i.hours for i in chain) / 24:.1f} A100 GPU-days over {runs}, the longest chain of "
            f"runs left that wait on each other (on one GPU per run; k GPUs per run shorten it k-fold at most):")
    return "\n".join([head] + [f"    {'->' if n else '  '} {i.script}/{i.hash} ({i.setup}, {i.hours / 24:.1f} "
                                f"GPU-days)" for n, i in enumerate(chain)])


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


# Published dense weights that can stand in for a dense model the papers trained themselves (``--dense-weights``):
# torchvision's original ResNet-50 recipe (76.1% top-1), the closest to the papers' own 90-epoch dense models (the
# newer IMAGENET1K_V2, 80.9%, comes from a much longer recipe and would move every pruned accuracy).
PUBLISHED = {("imagenet", "resnet50"): "torchvision:ResNet50_Weights.IMAGENET1K_V1"}


def with_published_dense(rows) -> list[tuple[str, object]]:
    """``rows`` with every run that prunes a dense model of a ``PUBLISHED`` setup started from the published weights
    instead (its dense run then drops out of the plan). Runs that rewind to an early epoch keep their own dense
    training: published weights have no training history to rewind to."""
    from common import config as C

    out = []
    for script, cfg in rows:
        weights = PUBLISHED.get((getattr(cfg, "dataset", None), getattr(cfg, "model", None)))
        if weights and hasattr(cfg, "pretrain") and hasattr(cfg, "dense_weights") \
                and getattr(cfg, "rewind_epoch", None) is None:
            cfg = C.replace(cfg, dense_weights=weights)
        out.append((script, cfg))
    return out


def plan(names, profile: str, runtime: dict, times_path: Path | str = TABLE, list_runs: bool = False,
         echo=print, published: bool = False) -> dict:
    """Print each figure's work and, for several, the total with shared runs once; returns {name: hours, ...,
    "total": hours}. ``published``: the plan with the ``PUBLISHED`` dense weights standing in for the dense models
    the papers trained (an opt-in variant: the default plan is the papers' own), and what that saves."""
    if not published:
        return _plan(names, profile, runtime, times_path, list_runs, echo, lambda rows: rows)
    faithful = _plan(names, profile, runtime, times_path, False, lambda *a: None, lambda rows: rows)
    variant = _plan(names, profile, runtime, times_path, list_runs, echo, with_published_dense)
    setups = ", ".join(f"{d} {m}: {w}" for (d, m), w in PUBLISHED.items())
    echo(f"\nwith published dense weights ({setups}): {variant['total']:.1f} A100 GPU-hours instead of "
         f"{faithful['total']:.1f}, {faithful['total'] - variant['total']:.1f} saved; runs that rewind to an early "
         f"epoch still train their own dense model. The papers trained their own: the default plan stays faithful.")
    return variant


def _plan(names, profile: str, runtime: dict, times_path, list_runs: bool, echo, rows_of) -> dict:
    """``plan`` of each figure's planned runs as ``rows_of`` gives them."""
    from figures.pipeline import planned_runs

    times = load_times(times_path)
    out, seen, union, per_figure = {}, set(), [], []
    for name in names:
        work = items(rows_of(planned_runs(name, profile, runtime)), times)
        rows = summary(work)
        new = [i for i in work if (i.script, i.hash) not in seen]
        seen.update((i.script, i.hash) for i in work)
        union += new
        total = rows[-1]
        echo(f"{name} [{profile}]: {total['runs']} runs with their dependencies ({total['done']} done, "
             f"{total['queued']} queued, {total['missing']} missing), {total['hours']:.1f} A100 GPU-hours, "
             f"{total['left']:.1f} left")
        echo(format_summary(rows))
        echo(format_disk(work))
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
        echo(format_disk(union))
        out["total"] = total["hours"]
    else:
        out["total"] = out[names[0]]
    return out
