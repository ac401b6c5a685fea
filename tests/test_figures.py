"""The figures pipeline end to end, on shrunken profile tables (same code path as `make fig-...`)."""
import pandas as pd
import pytest

from figures import fig_gmp_wd as gmp_wd
from figures import gmp_runs, pipeline
from tests.conftest import one_error_line, run_cli

SMALL = {"model": "mlp", "exclude": ("last",), "pretrain.epochs": 3, "epochs": 4, "stabilize_epochs": 1,
         "prune_epochs": 2, "finetune_lr.milestones": (1.0,)}


@pytest.fixture
def small_profile(monkeypatch):
    monkeypatch.setitem(gmp_runs.SETUPS, "tiny", [SMALL])
    monkeypatch.setattr(gmp_runs, "SEEDS", (0, 1))
    monkeypatch.setattr(gmp_runs, "SPARSITIES", (0.5, 0.9))
    monkeypatch.setattr(gmp_wd, "SPARSITIES", (0.9,))


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
