"""The five post-training pruning targets end to end, on shrunken profile tables (the code path of `make tab-...`)."""
import pandas as pd
import pytest

from figures import pipeline
from figures.posttrain import runs as P

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


def test_posttrain_targets_are_drawn_from_the_run_store(small_profile, tmp_path, one_thread, capsys):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off", "device": "cpu"}
    out = tmp_path / "out"
    suffixes = {"tab-posttrain": {".md", ".tex", ".csv"}}
    for name in ("tab-posttrain", "fig-posttrain-samples", "fig-posttrain-ablation", "fig-posttrain-balance",
                 "fig-posttrain-time"):
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        assert {p.suffix for p in paths} == suffixes.get(name, {".png", ".pdf", ".csv"}), name
        assert all(p.stat().st_size > 0 for p in paths)
    tab = pd.read_csv(out / "tiny" / "tab-posttrain.csv")
    assert list(tab["method"]) == [P.LABELS[m] for m in P.METHODS]
    assert list(tab["draws"]) == [2, 2, 2, 2, 1] and (tab["RP"] > 1).all() and (tab["RF"] > 1).all()
    assert (tab["sparse_format"] == "dense (physically pruned)").all() and (tab["sparse_speedup_b64"] > 0).all()
    assert "| mlp / digits | ours (penalty + balanced) |" in (out / "tiny" / "tab-posttrain.md").read_text()
    samples = pd.read_csv(out / "tiny" / "fig-posttrain-samples.csv")
    assert list(samples["samples"]) == [16, 32] and (samples["draws"] == 3).all()
    assert (samples["top1_min"] <= samples["top1_mean"]).all() and (samples["top1_mean"] <= samples["top1_max"]).all()
    ablation = pd.read_csv(out / "tiny" / "fig-posttrain-ablation.csv")
    assert set(ablation["variant"]) == {"full", "w/o sparsity penalty", "w/o reconstruction"}
    balance = pd.read_csv(out / "tiny" / "fig-posttrain-balance.csv")
    assert set(balance["balanced"]) == {True, False} and list(balance["layer"].unique()) == [1, 3, 5]
    time = pd.read_csv(out / "tiny" / "fig-posttrain-time.csv")
    ratio = time["calibration_s"].iloc[0] / time["l1_retrain_s"].iloc[0]
    assert time["time_ratio"].iloc[0] == pytest.approx(ratio, rel=1e-4)
    capsys.readouterr()
    pipeline.make("fig-posttrain-time", "tiny", runtime=runtime, out_root=out)  # everything cached now
    assert "2 runs, 0 to compute" in capsys.readouterr().out
