"""The six BiP targets end to end on a shrunken tiny profile (same code path as `make fig-bip-...`)."""
import json

import pandas as pd
import pytest

from figures import pipeline
from figures.bip import fig_bip_time
from figures.bip import runs as bip_runs
from tests.test_figures import check_long

TARGETS = ("fig-bip-trajectory", "fig-bip-time", "tab-bip-tickets", "fig-bip-structured", "fig-bip-rewind",
           "fig-bip-ig")


@pytest.fixture
def small_profile(monkeypatch):
    """tiny shrunk to what the assertions read: E = 1 epoch per method (BiP's longer arm 2), the MLP's dense model 4
    epochs (the rewinding points), the CNN's 1 epoch on 437 of digits' 1437 training images (1000 held out: a CNN
    step costs ~10 MLP steps, evaluating an image less than training on it)."""
    monkeypatch.setitem(bip_runs.SETUPS, "tiny", {
        "mlp / digits": (None, {"model": "mlp", "pretrain.epochs": 4}, 1),
        "cnn / digits": (None, {"model": "cnn", "pretrain.epochs": 1, "val_size": 1000}, 1)})
    monkeypatch.setattr(bip_runs, "SEEDS", (0,))
    monkeypatch.setitem(bip_runs.GRID_N, "tiny", (1, 5, 11))
    monkeypatch.setitem(bip_runs.STRUCTURED, "tiny", (0.5,))
    monkeypatch.setitem(bip_runs.REWIND_SETUPS, "tiny", ("mlp / digits",))
    monkeypatch.setitem(bip_runs.IG_SETUPS, "tiny", ("mlp / digits",))
    monkeypatch.setattr(bip_runs, "REWIND_FRACTIONS", (0.5, 1.0))
    monkeypatch.setitem(bip_runs.REWIND_SPARSITIES, "tiny", (0.2,))
    monkeypatch.setitem(bip_runs.IG_SPARSITIES, "tiny", (0.672,))
    monkeypatch.setattr(bip_runs, "GAMMAS", (1e4, 1e-3))
    monkeypatch.setitem(bip_runs.LONG, "tiny", (2, (11,), (0,)))  # BiP's longer arm: 2 epochs at n = 11, seed 0
    monkeypatch.setitem(bip_runs.REWIND_FULL, "tiny", 0.5)  # 50% also retrained for the dense MLP's 4 epochs
    monkeypatch.setitem(bip_runs.TICKET_TOLERANCE, "tiny", 1.0)


def test_bip_figures_are_drawn_from_the_run_store(small_profile, tmp_path, one_thread, png_only):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    out = tmp_path / "out"
    for name in TARGETS:
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        assert paths and all(p.stat().st_size > 0 for p in paths)
    tiny = out / "tiny"
    # one seed, grid n = 1, 5, 11: per setup BiP and OMP 3 points, Hydra 3 (MLP and CNN), IMP 11 rounds, BiP's
    # longer arm 1 (n = 11)
    traj = check_long(tiny, "fig-bip-trajectory", rows=2 * (3 + 3 + 3 + 11 + 1))
    mlp = traj[traj["setup"] == "mlp / digits"]
    assert set(mlp["method"]) == {"bip", "hydra", "imp", "omp", "bip-long"} and set(traj["seed"]) == {0}
    longer = traj[traj["method"] == "bip-long"]
    assert set(longer["sparsity"]) == {91.41} and set(longer["setup"]) == {"mlp / digits", "cnn / digits"}
    assert not set(longer["run"]) & set(traj[traj["method"] == "bip"]["run"])
    assert set(mlp[mlp["method"] == "bip"]["sparsity"]) == {20.0, 67.23, 91.41}
    assert set(mlp[mlp["method"] == "imp"]["sparsity"]) == {round(100 * (1 - 0.8 ** n), 2) for n in range(1, 12)}
    assert mlp["acc"].between(10, 100).all() and (mlp["dense_acc"] > 80).all()
    bounds = pd.read_csv(tiny / "fig-bip-time-bounds.csv")
    assert {"bip_time_max_over_min", "imp_over_bip", "row"} <= set(bounds.columns)
    assert (bounds["imp_over_bip"] > 0).all() and (bounds["row"] == "to 89%").sum() == 2
    assert (bounds["imp_over_bip_fastest_seeds"] > 0).all()
    time = check_long(tiny, "fig-bip-time", rows=len(traj) + 2)  # + the two dense trainings
    imp = time[(time["method"] == "imp") & (time["setup"] == "mlp / digits")].sort_values("sparsity")
    assert imp["gpu_seconds"].is_monotonic_increasing  # cumulative over rounds
    assert set(time[time["method"] == "dense"]["sparsity"]) == {0.0}
    assert (time[time["method"] == "bip-long"]["gpu_seconds"] > 0).all() and (time["method"] == "bip-long").sum() == 2
    # computed here, on the CPU in one process each: charged their wall time
    assert (time["gpus"] == 0).all() and (time["ranks"] == 1).all() and time["gpu_seconds"].equals(time["wall_time"])
    check_gpu_seconds(tmp_path, runtime, time, pd.read_csv(tiny / "fig-bip-time-bounds.csv"))
    tickets = (tiny / "tab-bip-tickets.md").read_text()
    assert "sparsest ticket" in tickets and "BiP" in tickets and "IMP" in tickets
    assert check_long(tiny, "tab-bip-tickets").equals(traj)
    table = pd.read_csv(tiny / "tab-bip-tickets-summary.csv")
    assert {"sparsest ticket (%)", "tolerance (pt)", "ticket floor (%)"} <= set(table.columns)
    # one dense model per setup: its seed SD is 0, so the floor is the dense accuracy
    assert (table["tolerance (pt)"] == 0).all() and (table["ticket floor (%)"] == table["dense acc (%)"]).all()
    assert "a tolerance of 1 seed SD of the dense models" in tickets
    structured = check_long(tiny, "fig-bip-structured", rows=2 * 2)  # structure x method, one sparsity and seed
    assert set(structured["structure"]) == {"filter", "channel"} and set(structured["setup"]) == {"cnn / digits"}
    rewind = check_long(tiny, "fig-bip-rewind", rows=4)
    assert set(rewind["rewind"]) == {"no retrain", "50%", "100%", "50%, 4 epochs"}
    full = rewind[rewind["rewind"] == "50%, 4 epochs"]
    assert list(full["rewind_epoch"]) == list(rewind[rewind["rewind"] == "50%"]["rewind_epoch"]) == [2]
    ig = check_long(tiny, "fig-bip-ig", rows=3)
    assert set(ig["variant"]) == {"no IG", "10000", "0.001"}
    ratio = pd.read_csv(tiny / "fig-bip-ig-summary.csv").set_index("variant")["ig_ratio_mean"]
    assert ratio["0.001"] > ratio["10000"]


def computed_on(run_dir, gpus: int) -> None:
    """Rewrite the run's recorded hardware as ``gpus`` GPUs, one per DDP rank (common.store.hardware's fields)."""
    path = run_dir / "result.json"
    result = json.loads(path.read_text())
    result["provenance"]["hardware"] = {"device": "auto", "cpus": 8 * gpus, "world_size": gpus, "gpus": gpus,
                                        "gpu": "NVIDIA A100-SXM4-80GB"}
    path.write_text(json.dumps(result))


def check_gpu_seconds(tmp_path, runtime, before: pd.DataFrame, bounds_before: pd.DataFrame) -> None:
    """The MLP's IMP run as if on 8 GPUs and its BiP run at 20% on 1: drawn again, the figure charges wall time x
    GPUs (IMP 8x its wall time, that BiP run 1x, the rest, on the CPU, 1x), and IMP / BiP grows 8-fold."""
    mlp = before[before["setup"] == "mlp / digits"]
    imp_run = mlp[mlp["method"] == "imp"]["run"].iloc[0]
    bip_run = mlp[(mlp["method"] == "bip") & (mlp["sparsity"] == 20.0)]["run"].iloc[0]
    computed_on(tmp_path / "runs" / "bip.magnitude" / imp_run, 8)
    computed_on(tmp_path / "runs" / "bip.prune" / bip_run, 1)
    assert fig_bip_time.devices(tmp_path / "runs" / "bip.magnitude" / imp_run) == (8, 8)
    pipeline.make("fig-bip-time", "tiny", runtime=runtime, out_root=tmp_path / "again")
    after = check_long(tmp_path / "again" / "tiny", "fig-bip-time", rows=len(before))
    assert after["wall_time"].equals(before["wall_time"])
    gpus = after["run"].map({imp_run: 8, bip_run: 1}).fillna(0).astype(int)
    assert after["gpus"].equals(gpus) and after["ranks"].equals(gpus.clip(lower=1))
    assert after["gpu_seconds"].to_numpy() == pytest.approx((after["wall_time"] * gpus.clip(lower=1)).to_numpy(),
                                                            rel=1e-5)
    assert (after[after["run"] == imp_run]["gpu_seconds"] > 7.9 * after[after["run"] == imp_run]["wall_time"]).all()
    bounds = pd.read_csv(tmp_path / "again" / "tiny" / "fig-bip-time-bounds.csv")
    rows = bounds["setup"] == "mlp / digits"
    assert rows.sum() >= 2 and 20.0 in set(bounds[rows]["bip_sparsity"])
    assert bounds[rows]["imp_over_bip"].to_numpy() == pytest.approx(8 * bounds_before[rows]["imp_over_bip"].to_numpy(),
                                                                     rel=1e-4)


@pytest.mark.parametrize("hardware, expected", [
    ({"device": "auto", "cpus": 8, "world_size": 1, "gpus": 1, "gpu": "NVIDIA A100"}, (1, 1)),
    ({"device": "cuda", "cpus": 8, "world_size": 8, "gpus": 8, "gpu": "NVIDIA A100"}, (8, 8)),
    ({"device": "cpu", "cpus": 2, "world_size": 2, "gpus": 1, "gpu": "NVIDIA A100"}, (0, 2)),  # asked for the CPU
    ({"device": "auto", "cpus": 2, "world_size": 1, "gpus": 0, "gpu": None}, (0, 1)),
    (None, (0, 1)),  # a result.json written before the hardware was recorded
])
def test_a_runs_gpus_come_from_its_recorded_hardware(tmp_path, hardware, expected):
    provenance = {"code": {}} if hardware is None else {"code": {}, "hardware": hardware}
    (tmp_path / "result.json").write_text(json.dumps({"test_acc": 0.5, "wall_time": 10.0, "provenance": provenance}))
    assert fig_bip_time.devices(tmp_path) == expected
    rows = pd.DataFrame({"run": ["a", "a"], "time": [10.0, 12.0]})
    charged = fig_bip_time.charged(rows, {"a": expected})
    assert list(charged["gpu_seconds"]) == [10.0 * expected[1], 12.0 * expected[1]]
    assert list(charged["wall_time"]) == [10.0, 12.0] and set(charged["gpus"]) == {expected[0]}


def test_the_time_axis_says_what_it_charges():
    assert fig_bip_time.time_label(pd.Series([1, 8])) == "GPU-seconds (wall time x GPUs)"
    assert fig_bip_time.time_label(pd.Series([0, 0])) == "CPU process-seconds (wall time x processes)"
    assert fig_bip_time.time_label(pd.Series([0, 8])) == "GPU-seconds (wall time x GPUs; CPU runs x processes)"


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
