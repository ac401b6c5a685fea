"""The figures pipeline end to end, on shrunken profile tables (same code path as `make fig-...`)."""
import os
import shutil
import subprocess

import pandas as pd
import pytest

from figures import FIGURES, pipeline
from figures.__main__ import main as figures_main
from figures.gmp import fig_gmp_wd as gmp_wd
from figures.gmp import runs as gmp_runs
from tests.conftest import ROOT, one_error_line, run_cli

SMALL = {"model": "mlp", "exclude": ("last",), "pretrain.epochs": 3, "epochs": 4, "stabilize_epochs": 1,
         "prune_epochs": 2, "finetune_lr.milestones": (1.0,)}


@pytest.fixture
def small_profile(monkeypatch):
    monkeypatch.setitem(gmp_runs.SETUPS, "tiny", [SMALL])
    monkeypatch.setattr(gmp_runs, "SEEDS", (0, 1))
    monkeypatch.setitem(gmp_runs.SPARSITIES, "tiny", (0.5, 0.9))
    monkeypatch.setitem(gmp_wd.SPARSITIES, "tiny", (0.9,))


def test_gmp_figures_are_drawn_from_the_run_store(small_profile, tmp_path, capsys):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    out = tmp_path / "out"
    for name in ("fig-gmp-vs-oneshot", "fig-gmp-wd", "fig-gmp-schedule"):
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        assert {p.suffix for p in paths} == {".png", ".pdf", ".csv"}
        assert all(p.stat().st_size > 0 for p in paths)
    vs = pd.read_csv(out / "tiny" / "fig-gmp-vs-oneshot.csv")
    assert set(vs["method"]) == {"gmp", "oneshot"} and set(vs["sparsity"]) == {0.5, 0.9}
    assert (vs["seeds"] == 2).all() and vs["acc_mean"].between(50, 100).all() and (vs["dense_acc"] > 80).all()
    wd = pd.read_csv(out / "tiny" / "fig-gmp-wd.csv")
    assert list(wd["sparsity"]) == [0.9] and {"acc_without_wd", "acc_gain_without_wd"} <= set(wd.columns)
    sched = pd.read_csv(out / "tiny" / "fig-gmp-schedule.csv")
    assert sched["target_sparsity"].is_monotonic_increasing and sched["target_sparsity"].iloc[-1] == pytest.approx(0.9)
    capsys.readouterr()
    pipeline.make("fig-gmp-wd", "tiny", runtime=runtime, out_root=out)  # everything cached now
    assert "4 runs, 0 to compute" in capsys.readouterr().out

    # `python -m figures ... --out DIR` (make's OUT=DIR) draws there, leaving figures/out as it was
    committed = {p: p.read_bytes() for p in (ROOT / "figures" / "out").rglob("*") if p.is_file()}
    elsewhere = tmp_path / "elsewhere"
    assert figures_main(["fig-gmp-wd", "--runs-dir", runtime["runs_dir"], "--progress", "off",
                         "--out", str(elsewhere)]) == 0
    assert sorted(p.name for p in (elsewhere / "tiny").iterdir()) == ["fig-gmp-wd.csv", "fig-gmp-wd.pdf",
                                                                      "fig-gmp-wd.png"]
    assert (elsewhere / "tiny" / "fig-gmp-wd.csv").read_bytes() == (out / "tiny" / "fig-gmp-wd.csv").read_bytes()
    assert {p: p.read_bytes() for p in (ROOT / "figures" / "out").rglob("*") if p.is_file()} == committed


def test_make_passes_out_and_defaults_to_figures_out():
    assert pipeline.OUT == ROOT / "figures" / "out"
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    # a make of its own, not a sub-make of the `make test` that may be running this test
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PROFILE", "CLUSTER", "RUNS", "DATA", "DEVICE", "OUT")}
    for args, out in (((), "figures/out"), (("OUT=/somewhere/else",), "/somewhere/else")):
        proc = subprocess.run([make, "--no-print-directory", "-n", "fig-gmp-wd", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        commands = [line for line in proc.stdout.splitlines() if " -m figures fig-gmp-wd " in line]
        assert len(commands) == 1, proc.stdout
        assert commands[0].endswith(f" -m figures fig-gmp-wd --profile tiny --cluster none "
                                    f"--runs-dir runs --data-dir data --device auto --out {out}")


def test_each_figure_is_found_in_its_papers_package():
    papers = ("bip", "seqattn", "gmp", "posttrain", "compare", "claims", "speed")  # claims: the scoreboard, tab-claims
    assert len(FIGURES) == 23 and not [*(ROOT / "figures").glob("fig_*.py"), *(ROOT / "figures").glob("tab_*.py")]
    for name, module in FIGURES.items():
        paper = "speed" if name == "fig-sparse-speed" else name.split("-")[1]  # speed/: sparse execution's speed
        assert paper in papers and module == f"figures.{paper}.{name.replace('-', '_')}"
        assert pipeline.figure_module(name).__name__ == module


def test_unknown_figure_and_profile_are_one_line_errors(tmp_path):
    proc = run_cli("figures", "fig-nope", "--runs-dir", tmp_path)
    assert proc.returncode == 2 and "unknown figure 'fig-nope'" in one_error_line(proc)
    proc = run_cli("figures", "fig-gmp-wd", "--profile", "huge", "--runs-dir", tmp_path)
    assert proc.returncode == 2 and "unknown profile 'huge'" in one_error_line(proc)


def test_local_pool_computes_missing_runs(small_profile, tmp_path):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    rows = pipeline.planned_runs("fig-gmp-wd", "tiny", runtime)
    from figures.launch import launch

    assert launch(rows, "local") == []
    assert pipeline.missing_runs(rows) == []


def test_small_profile_is_fashion_mnist_with_three_seeds_and_grids_that_reach_where_methods_part():
    from figures.bip import runs as bip_runs

    for name in FIGURES:
        rows = pipeline.planned_runs(name, "small", {})
        assert {cfg.dataset for _, cfg in rows} <= {"fashionmnist"}, name
        assert {cfg.model for _, cfg in rows} <= {"mlp", "lenet5"}, name
        draws = {getattr(cfg, "sample_seed", None) if s == "posttrain.prune" else cfg.seed for s, cfg in rows}
        if rows and name not in ("fig-gmp-schedule", "fig-seqattn-schedule", "fig-posttrain-time"):  # one run a point
            assert {0, 1, 2} <= draws, name
    assert max(bip_runs.sparsities("small")) >= 0.988 and max(gmp_runs.SPARSITIES["small"]) >= 0.99


def test_small_profile_end_to_end_on_idx_files(monkeypatch, tmp_path):
    """The small profile's code path (Fashion-MNIST files found in --data-dir, LeNet-300-100) with reduced epochs."""
    from common import data as D
    from tests.test_fashionmnist import write_fashion

    monkeypatch.setattr(D, "FASHION_DEBIAN", tmp_path / "no-debian")
    write_fashion(tmp_path / "data" / "FashionMNIST" / "raw", n_train=200, n_test=100)
    setup = dict(gmp_runs.SETUPS["small"][0], **{"pretrain.epochs": 1, "epochs": 3, "stabilize_epochs": 1,
                                                 "prune_epochs": 1, "finetune_lr.milestones": (1.0,)})
    monkeypatch.setitem(gmp_runs.SETUPS, "small", [setup])
    monkeypatch.setattr(gmp_runs, "SEEDS", (0,))
    monkeypatch.setitem(gmp_runs.SPARSITIES, "small", (0.9,))
    runtime = {"runs_dir": str(tmp_path / "runs"), "data_dir": str(tmp_path / "data"), "progress": "off"}
    paths = pipeline.make("fig-gmp-vs-oneshot", "small", runtime=runtime, out_root=tmp_path / "out")
    assert (tmp_path / "out" / "small" / "fig-gmp-vs-oneshot.png") in paths
    vs = pd.read_csv(tmp_path / "out" / "small" / "fig-gmp-vs-oneshot.csv")
    assert set(vs["method"]) == {"gmp", "oneshot"} and set(vs["setup"]) == {"mlp / fashionmnist"}
