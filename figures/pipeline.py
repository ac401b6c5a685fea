"""Make a figure: compute the runs it needs that are missing, then draw it from the run store.

A figure module defines:
  ``PAPER``                       what it reproduces (e.g. "Zhu & Gupta, Fig. 2");
  ``runs(profile) -> [(script, cfg)]``  every run it reads, as (script module name, config) rows of a profile table;
  ``draw(df, profile, base) -> [paths]`` drawing from ``collect()`` rows of exactly those runs, to ``base.*``.
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from common import config as C
from common.errors import DamagedFile, RunFailed, UserError
from common.store import Run, collect, execute, read_config, read_result, warn
from figures import FIGURES
from figures.profiles import PROFILES, tables, thin

OUT = Path(__file__).resolve().parent / "out"


def figure_module(name: str):
    if name not in FIGURES:
        raise UserError(f"unknown figure '{name}'; choose one of: {', '.join(FIGURES)}")
    return importlib.import_module(FIGURES[name])


def planned_runs(name: str, profile: str, runtime: dict) -> list[tuple[str, object]]:
    """The (script, config) pairs a figure reads, with execution settings (device, runs dir, ...) applied."""
    if profile not in PROFILES:
        raise UserError(f"unknown profile '{profile}'; choose one of: {', '.join(PROFILES)}")
    rows, seen = [], set()
    for script, cfg in thin(profile, figure_module(name).runs(tables(profile))):
        cfg = C.replace(cfg, **runtime)
        key = (script, Run(script, cfg).hash)
        if key not in seen:
            seen.add(key)
            rows.append((script, cfg))
    return rows


def missing_runs(rows):
    return [(s, c) for s, c in rows if not Run(s, c).done]


def unusable_runs(rows) -> list[str]:
    """The finished runs of ``rows`` that ``collect()`` would skip, one line each: a ``result.json`` that cannot be
    used. A damaged or edited ``config.json`` is rewritten from the run's config, as executing the run does."""
    problems = []
    for script, cfg in rows:
        run = Run(script, cfg)
        try:
            read_config(run.dir)
        except DamagedFile:
            try:
                run.write_config()
                warn(run.dir / "config.json", "rewritten from the run's config (it was damaged or edited)")
            except OSError as exc:
                problems.append(f"{run.dir / 'config.json'} is damaged and cannot be rewritten ({exc.strerror})")
        try:
            read_result(run.dir)
        except DamagedFile as exc:
            problems.append(str(exc))
    return problems


def compute_in_process(rows) -> list[str]:
    """Compute runs one after another in this process; returns the failures (one line each)."""
    failures = []
    for i, (script, cfg) in enumerate(rows, 1):
        t0 = time.time()
        try:
            result = execute(script, cfg)
        except RunFailed as exc:
            failures.append(f"{script} {Run(script, cfg).dir}: {exc}")
            print(f"  [{i}/{len(rows)}] {script} {Run(script, cfg).hash} FAILED: {exc}", flush=True)
            continue
        metric = next((f"{k} {result[k]:.4f}" for k in ("test_acc", "test_auc", "val_loss") if k in result), "")
        print(f"  [{i}/{len(rows)}] {script} {Run(script, cfg).hash} {time.time() - t0:.1f}s {metric}", flush=True)
    return failures


def fetch_data(rows) -> None:
    """Get the datasets that the runs ``rows`` need and that can be fetched (Fashion-MNIST), saying so in one line."""
    from common.data import fashion_folder, fetch_fashionmnist, unpack_fashionmnist

    roots = {Path(cfg.data_dir) for _, cfg in rows if getattr(cfg, "dataset", None) == "fashionmnist"}
    for root in roots:
        if fashion_folder(root) is None:
            print(fetch_fashionmnist(root), flush=True)
        if (said := unpack_fashionmnist(root)) is not None:
            print(said, flush=True)


def compute_ahead(groups: list[list[str]], profile: str, runtime: dict) -> dict:
    """Compute the missing runs of several figures before any is drawn, on the local pool: each group of figure
    names in one pool (their shared runs once, no core idle between figures), the groups in order. Returns the
    failed runs, {(script, hash): reason}, for ``make`` to report instead of computing them again."""
    from figures.launch import run_pool

    failed = {}
    for names in groups:
        rows = {(s, Run(s, c).hash): (s, c) for name in names for s, c in planned_runs(name, profile, runtime)}
        todo = missing_runs(rows.values())  # a run several figures share, once
        if not todo:
            continue
        print(f"{', '.join(names) if len(names) <= 3 else f'{len(names)} figures'} [{profile}]: "
              f"{len(todo)} runs to compute (and what they need first)", flush=True)
        fetch_data(todo)
        failed.update(run_pool(todo))
    return failed


def make(name: str, profile: str = "tiny", cluster: str = "none", runtime: dict | None = None,
         out_root: Path = OUT, failed: dict | None = None, dry_run: bool = False) -> list[Path]:
    """Compute the figure's missing runs on ``cluster``, then draw it (``dry_run``, Slurm only: print the sbatch
    scripts of its missing runs, fetch, submit and draw nothing)."""
    runtime = dict(runtime or {})
    rows = planned_runs(name, profile, runtime)
    todo = missing_runs(rows)
    print(f"{name} [{profile}]: {len(rows)} runs, {len(todo)} to compute", flush=True)
    keys = [(s, Run(s, c).hash) for s, c in todo]
    known = [failed[key] for key in keys if key in (failed or {})]
    if known:
        raise RunFailed(f"{len(known)} run(s) failed, figure not drawn: " + "; ".join(known[:3]))
    if dry_run:
        from figures.launch import submit_to_slurm

        return submit_to_slurm(todo, dry_run=True) or [] if todo else []
    if todo:
        fetch_data(todo)
        if cluster == "none":
            failures = compute_in_process(todo)
        else:
            from figures.launch import launch  # local process pool or Slurm job array

            failures = launch(todo, cluster)
            if failures is None:  # submitted to a cluster: draw once the jobs are done
                return []
        if failures:
            raise RunFailed(f"{len(failures)} run(s) failed, figure not drawn: " + "; ".join(failures[:3]))
    problems = unusable_runs(rows)
    if problems:
        raise UserError(f"{len(problems)} run(s) of {name} cannot be read, figure not drawn: " + "; ".join(problems[:3]))
    hashes = {Run(s, c).hash for s, c in rows}
    runs_dir = runtime.get("runs_dir", "runs")
    df = collect(runs_dir)
    df = df[df["hash"].isin(hashes)].reset_index(drop=True) if len(df) else df
    paths = figure_module(name).draw(df, tables(profile), out_root / profile / name)
    for p in paths:
        print(f"  wrote {p}")
    return paths
