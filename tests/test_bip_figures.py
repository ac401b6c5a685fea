"""The six BiP targets end to end on a shrunken tiny profile (same code path as `make fig-bip-...`)."""
import pandas as pd
import pytest

from figures import pipeline
from figures.bip import runs as bip_runs

TARGETS = ("fig-bip-trajectory", "fig-bip-time", "tab-bip-tickets", "fig-bip-structured", "fig-bip-rewind",
           "fig-bip-ig")


@pytest.fixture
def small_profile(monkeypatch):
    monkeypatch.setitem(bip_runs.SETUPS, "tiny", {
        "mlp / digits": (None, {"model": "mlp", "pretrain.epochs": 4}, 2),
        "cnn / digits": (None, {"model": "cnn", "pretrain.epochs": 2}, 1)})
    monkeypatch.setattr(bip_runs, "SEEDS", (0,))
    monkeypatch.setitem(bip_runs.GRID_N, "tiny", (1, 5, 11))
    monkeypatch.setitem(bip_runs.STRUCTURED, "tiny", (0.5,))
    monkeypatch.setitem(bip_runs.REWIND_SETUPS, "tiny", ("mlp / digits",))
    monkeypatch.setitem(bip_runs.IG_SETUPS, "tiny", ("mlp / digits",))
    monkeypatch.setattr(bip_runs, "REWIND_FRACTIONS", (0.5, 1.0))
    monkeypatch.setitem(bip_runs.REWIND_SPARSITIES, "tiny", (0.2,))
    monkeypatch.setitem(bip_runs.IG_SPARSITIES, "tiny", (0.672,))
    monkeypatch.setattr(bip_runs, "GAMMAS", (1e4, 1e-3))


def test_bip_figures_are_drawn_from_the_run_store(small_profile, tmp_path, one_thread):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    out = tmp_path / "out"
    for name in TARGETS:
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        assert paths and all(p.stat().st_size > 0 for p in paths)
    traj = pd.read_csv(out / "tiny" / "fig-bip-trajectory.csv")
    mlp = traj[traj["setup"] == "mlp / digits"]
    assert set(mlp["method"]) == {"bip", "hydra", "imp", "omp"}
    assert set(mlp[mlp["method"] == "bip"]["sparsity"]) == {20.0, 67.23, 91.41}
    assert set(mlp[mlp["method"] == "imp"]["sparsity"]) == {round(100 * (1 - 0.8 ** n), 2) for n in range(1, 12)}
    assert mlp["acc_mean"].between(10, 100).all() and (mlp["dense_acc"] > 80).all()
    summary = pd.read_csv(out / "tiny" / "fig-bip-time-summary.csv")
    assert {"bip_time_max_over_min", "imp_over_bip", "row"} <= set(summary.columns)
    assert (summary["imp_over_bip"] > 0).all() and (summary["row"] == "to 89%").sum() == 2
    assert (summary["imp_over_bip_fastest_seeds"] > 0).all()
    time = pd.read_csv(out / "tiny" / "fig-bip-time.csv")
    imp = time[(time["method"] == "imp") & (time["setup"] == "mlp / digits")].sort_values("sparsity")
    assert imp["time_mean"].is_monotonic_increasing  # cumulative over rounds
    tickets = (out / "tiny" / "tab-bip-tickets.md").read_text()
    assert "sparsest ticket" in tickets and "BiP" in tickets and "IMP" in tickets
    structured = pd.read_csv(out / "tiny" / "fig-bip-structured.csv")
    assert set(structured["structure"]) == {"filter", "channel"} and set(structured["setup"]) == {"cnn / digits"}
    rewind = pd.read_csv(out / "tiny" / "fig-bip-rewind.csv")
    assert set(rewind["rewind"]) == {"no retrain", "50%", "100%"}
    ig = pd.read_csv(out / "tiny" / "fig-bip-ig.csv")
    assert set(ig["variant"]) == {"no IG", "10000", "0.001"}
    assert ig.set_index("variant").loc["0.001", "ig_ratio_mean"] > ig.set_index("variant").loc["10000", "ig_ratio_mean"]


def test_paper_profile_plans_the_papers_setups():
    rows = pipeline.planned_runs("fig-bip-trajectory", "paper", {})
    setups = {(c.dataset, c.model) for _, c in rows}
    assert len(setups) == 8 and ("imagenet", "resnet50") in setups and ("cifar10", "vgg16_bn") in setups
    bip = [c for s, c in rows if s == "bip.prune" and c.model == "resnet18" and c.dataset == "cifar10"]
    assert {c.lower.lr for c in bip} == {0.01} and {c.upper.lr for c in bip} == {0.1} and bip[0].gamma == 1e4
    assert bip[0].epochs == 100 and bip[0].pretrain.epochs == 200
    imp = [c for s, c in rows if s == "bip.magnitude" and c.method == "imp" and c.model == "resnet20"]
    assert imp[0].epochs == 160 and imp[0].rate == 0.2 and imp[0].target_sparsity == pytest.approx(1 - 0.8 ** 20)
    assert not [c for s, c in rows if c.dataset == "imagenet" and c.method in ("omp", "hydra")]
    for name in ("fig-bip-structured", "fig-bip-rewind", "fig-bip-ig", "tab-bip-tickets", "fig-bip-time"):
        assert pipeline.planned_runs(name, "paper", {})
