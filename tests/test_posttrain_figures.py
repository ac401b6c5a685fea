"""The five post-training pruning targets end to end, on shrunken profile tables (the code path of `make tab-...`)."""
import pandas as pd
import pytest

from figures import pipeline
from figures.posttrain import runs as P
from tests.test_figures import check_long

SMALL = {"model": "mlp", "pretrain.epochs": 3, "samples": 32, "phase1_epochs": 2, "phase2_epochs": 2,
         "retrain.epochs": 2}


@pytest.fixture
def small_profile(monkeypatch):
    monkeypatch.setitem(P.SETUPS, "tiny", [SMALL])
    for table in (P.SAMPLES_SETUP, P.ABLATION_SETUP, P.BALANCE_SETUP, P.TIME_SETUP):
        monkeypatch.setitem(table, "tiny", SMALL)
    monkeypatch.setitem(P.DRAWS, "tiny", (0, 1))
    monkeypatch.setitem(P.SAMPLES, "tiny", (16, 32))
    monkeypatch.setattr(P, "SAMPLE_DRAWS", (0, 1, 2))
    monkeypatch.setitem(P.RATIOS, "tiny", (0.3, 0.6))
    monkeypatch.setitem(P.TIME_RATIOS, "tiny", (0.5,))
    monkeypatch.setitem(P.TIME_DRAWS, "tiny", (0, 1))  # two timed runs per method, the fastest compared


def test_posttrain_targets_are_drawn_from_the_run_store(small_profile, tmp_path, one_thread, capsys, png_only):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off", "device": "cpu"}
    out = tmp_path / "out"
    for name in ("tab-posttrain", "fig-posttrain-samples", "fig-posttrain-ablation", "fig-posttrain-balance",
                 "fig-posttrain-time"):
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        tables = {".md", ".tex"} if name.startswith("tab") else set()  # a table draws its paired differences too
        assert {p.suffix for p in paths} == {".png", ".csv"} | tables, name
        assert all(p.stat().st_size > 0 for p in paths)
    tiny = out / "tiny"
    tab = pd.read_csv(tiny / "tab-posttrain-summary.csv")
    assert list(tab["method"]) == [P.LABELS[m] for m in P.METHODS]
    assert list(tab["draws"]) == [2, 2, 2, 2, 1] and (tab["RP"] > 1).all() and (tab["RF"] > 1).all()
    assert (tab["sparse_format"] == "dense (physically pruned)").all() and (tab["sparse_speedup_b64"] > 0).all()
    assert "| mlp / digits | ours (penalty + balanced) |" in (tiny / "tab-posttrain.md").read_text()
    runs = check_long(tiny, "tab-posttrain", rows=4 * 2 + 1)  # four methods x two draws, L1 + retraining once
    assert runs.groupby("method")["top1"].mean()["ours"] == pytest.approx(tab["top1"].iloc[0], abs=0.01)
    samples = check_long(tiny, "fig-posttrain-samples", rows=2 * 3)  # counts x draws
    assert set(samples["seed"]) == {0, 1, 2} and list(samples["samples"].unique()) == [16, 32]
    summary = pd.read_csv(tiny / "fig-posttrain-samples-summary.csv")
    assert (summary["seeds"] == 3).all() and (summary["top1_min"] <= summary["top1_mean"]).all()
    ablation = check_long(tiny, "fig-posttrain-ablation", rows=3 * 2 * 2)  # variant x ratio x draw
    assert set(ablation["variant"]) == {"full", "w/o sparsity penalty", "w/o reconstruction"}
    balance = check_long(tiny, "fig-posttrain-balance", rows=2 * 2 * 3)  # balanced x draw x layer
    assert set(balance["balanced"]) == {True, False} and list(balance["layer"].unique()) == [1, 3, 5]
    time = check_long(tiny, "fig-posttrain-time", rows=2 * 2)  # method x timed draw
    assert set(time["seed"]) == {0, 1} and time["run"].nunique() == 4
    summary = pd.read_csv(tiny / "fig-posttrain-time-summary.csv")
    ratio = summary["calibration_s"].iloc[0] / summary["l1_retrain_s"].iloc[0]
    assert summary["time_ratio"].iloc[0] == pytest.approx(ratio, rel=1e-4)
    fastest = time.groupby("method")["time_s"].min()
    assert summary["calibration_s"].iloc[0] == pytest.approx(fastest["ours"], rel=1e-4)
    assert summary["l1_retrain_s"].iloc[0] == pytest.approx(fastest["l1"], rel=1e-4)
    assert summary["calibration_mean_s"].iloc[0] == pytest.approx(time[time["method"] == "ours"]["time_s"].mean(),
                                                                  rel=1e-4)
    assert summary["l1_retrain_s_per_epoch"].iloc[0] == pytest.approx(fastest["l1"] / SMALL["retrain.epochs"],
                                                                      rel=1e-4)
    assert summary["timed_runs"].iloc[0] == 2
    capsys.readouterr()
    pipeline.make("fig-posttrain-time", "tiny", runtime=runtime, out_root=out)  # everything cached now
    assert "4 runs, 0 to compute" in capsys.readouterr().out
