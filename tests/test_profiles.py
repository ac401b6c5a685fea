"""The profiles and the entry point's defaults: `make figures` is the small profile on the local pool, `make smoke` is
tiny's runs thinned to one seed and two grid points per figure in a store and folder of its own, there is no
scoreboard at tiny / smoke, and an unknown device is refused before anything runs."""
import os
import shutil
import subprocess

import pytest

from figures import FIGURES, pipeline, profiles
from figures.__main__ import main as figures_main
from tests.conftest import ROOT, one_error_line, run_main


def make_n(*args) -> str:
    """The `python -m figures` command line that `make -n ARGS` would run (a make of its own, default variables)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PROFILE", "CLUSTER", "RUNS", "DATA", "DEVICE", "OUT")}
    proc = subprocess.run([make, "--no-print-directory", "-n", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if " -m figures " in line]
    assert len(commands) == 1, proc.stdout
    return commands[0]


def test_make_figures_is_the_small_profile_on_the_local_pool_and_make_smoke_has_its_own_store():
    assert make_n("figures").endswith(" -m figures all --profile small --cluster auto --runs-dir runs --data-dir data "
                                      "--device auto --out figures/out")
    assert make_n("smoke").endswith(" -m figures all --profile smoke --cluster auto --runs-dir runs-smoke "
                                    "--data-dir data --device auto --out figures/out")
    assert " --runs-dir /r " in make_n("smoke", "RUNS=/r")


def test_cluster_auto_is_the_local_pool_on_more_than_one_core(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(pipeline, "make", lambda name, profile, cluster, runtime, out, failed=None, dry_run=False:
                        calls.append((profile, cluster)))
    for cores, cluster in ((1, "none"), (2, "local"), (16, "local")):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        assert figures_main(["fig-gmp-wd", "--runs-dir", str(tmp_path)]) == 0
        assert calls.pop() == ("small", cluster)
    assert figures_main(["fig-gmp-wd", "--cluster", "none", "--profile", "smoke"]) == 0
    assert calls.pop() == ("smoke", "none")


@pytest.mark.parametrize("argv", [["fig-gmp-wd", "--device", "tpu"], ["plan", "all", "--device", "cuda0"]])
def test_an_unknown_device_is_refused_before_anything_runs(argv, tmp_path):
    proc = run_main("figures", *argv, "--runs-dir", tmp_path)
    assert proc.returncode == 2 and "unknown device" in one_error_line(proc)
    assert not any(tmp_path.iterdir())


def test_there_is_no_scoreboard_at_the_smoke_profiles(monkeypatch):
    for profile in ("tiny", "smoke"):
        with pytest.raises(SystemExit) as exc:
            figures_main(["tab-claims", "--profile", profile])
        assert exc.value.code == 2
    made = []
    monkeypatch.setattr(pipeline, "make", lambda name, *a: made.append(name))
    assert figures_main(["all", "--profile", "smoke", "--cluster", "none"]) == 0
    assert sorted(made) == sorted(n for n in FIGURES if n != "tab-claims")
    assert not list((ROOT / "figures" / "out" / "tiny").glob("tab-claims*"))


def _grid(cfg) -> dict:
    return {f: getattr(cfg, f) for f in profiles.GRID_FIELDS if hasattr(cfg, f)}


def test_smoke_is_tiny_thinned_to_one_seed_and_two_grid_points_per_figure_and_shortened():
    assert profiles.tables("smoke") == "tiny" and profiles.tables("small") == "small"
    scripts = {"smoke": set(), "tiny": set()}
    for name in FIGURES:
        if name == "tab-claims":
            continue
        tiny, smoke = (pipeline.planned_runs(name, p, {}) for p in ("tiny", "smoke"))
        assert bool(smoke) == bool(tiny), name
        keys = {(s, pipeline.Run(s, profiles.shorten(s, c)).hash) for s, c in tiny}
        assert {(s, pipeline.Run(s, c).hash) for s, c in smoke} <= keys, name  # tiny's runs, shortened
        for script, cfg in smoke:
            assert cfg.epochs == 6 if script == "seqattn.prune" else True
            assert cfg.epochs == 1 if script in ("bip.prune", "bip.magnitude") else True
            if script == "posttrain.prune":  # a length is set where the method uses it, else left at tiny's
                assert cfg.retrain.epochs == (5 if cfg.method == "l1" else 100), cfg.method
                assert cfg.phase1_epochs == (2 if cfg.method == "ours" else 10), cfg.method
        assert {getattr(c, f, 0) for _, c in smoke for f in profiles.SEED_FIELDS} <= {0}, name
        for field in profiles.GRID_FIELDS:
            values = {_grid(c)[field] for _, c in smoke if field in _grid(c)}
            assert len(values) <= 2, (name, field, values)
        scripts["tiny"] |= {s for s, _ in tiny}
        scripts["smoke"] |= {s for s, _ in smoke}
    assert scripts["smoke"] == scripts["tiny"]  # every script runs


def test_the_small_profile_decides():
    """The small tables' design (figures/*/runs.py docstrings): where effects are 1-3 seed SDs there are 5 seeds (2
    where no claim reads the points or the contrast is not testable at this scale), BiP has a longer budget arm at
    the sparsest points, SA++ runs 10 epochs, GMP updates its mask every 0.2 epoch, post-training has 10 calibration
    draws, fig-compare runs one seed."""
    from collections import defaultdict

    from figures.bip import runs as bip_runs
    from figures.gmp import runs as gmp_runs
    from figures.gmp.fig_gmp_schedule import steps_per_epoch
    from gmp import prune as gmp_prune

    seeds = defaultdict(set)  # (method, epochs, sparsity) -> seeds
    for script, cfg in pipeline.planned_runs("fig-bip-trajectory", "small", {}):
        seeds[(cfg.method, cfg.epochs, cfg.target_sparsity)].add(cfg.seed)
    grid = bip_runs.sparsities("small")
    assert [round(1 - 0.8 ** n, 6) for n in (5, 6, 7)] == grid[1:4] and max(grid) >= 0.988
    for s in grid:
        for m in ("bip", "hydra", "omp"):
            assert seeds[(m, 4, s)] == (set(range(5)) if s >= 0.93 else {0, 1}), (m, s)
    assert seeds[("imp", 4, max(grid))] == set(range(5))
    assert {s for (m, e, s) in seeds if e == 12} == set(grid[-3:])
    assert all(seeds[("bip", 12, s)] == {0, 1, 2} for s in grid[-3:])  # paired with IMP's seeds 0-2

    rows = pipeline.planned_runs("fig-gmp-vs-oneshot", "small", {})
    cfg = rows[0][1]
    steps = steps_per_epoch(cfg)
    assert gmp_prune.pruning_steps(cfg, steps).dt <= 0.2 * steps
    assert {c.seed for _, c in rows if c.target_sparsity >= 0.98} == set(range(5))
    assert {c.seed for _, c in rows if c.target_sparsity < 0.98} == {0, 1, 2}

    table = pipeline.planned_runs("tab-seqattn-blocks", "small", {})
    assert {c.epochs for _, c in table} == {10} and {c.block for _, c in table} == {4, 16}
    for m in ("sapp", "acdc"):
        assert {c.seed for _, c in table if c.method == m} == set(range(5))
    ablations = pipeline.planned_runs("tab-seqattn-ablations", "small", {})
    assert {c.epochs for _, c in ablations} == {10}
    decided = [c for _, c in ablations if c.block == 4 and c.attention == "softmax" and c.zero_pruned]
    assert {c.seed for c in decided} == set(range(5))  # the default, no sparsification, c = 2 / 8, short dense
    assert {(c.sparsification, c.c, c.short_dense_steps) for c in decided} == \
        {(True, 4.0, 0), (False, 4.0, 0), (True, 2.0, 0), (True, 8.0, 0), (True, 4.0, 2)}
    assert {c.seed for _, c in ablations if c not in decided} == {0, 1}  # exp(L), weights kept, B = 1

    for name in ("tab-posttrain", "fig-posttrain-ablation"):
        draws = {c.sample_seed for _, c in pipeline.planned_runs(name, "small", {}) if c.method == "ours"}
        assert draws == set(range(10)), name
    for name in ("fig-compare", "fig-compare-structured"):
        assert {c.seed for _, c in pipeline.planned_runs(name, "small", {})} == {0}, name
    assert gmp_runs.SPARSITIES["small"][-1] >= 0.99
