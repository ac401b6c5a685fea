"""The five SequentialAttention++ targets end to end on a shrunken tiny profile (same code path as `make ...`)."""
import pandas as pd
import pytest

from figures import pipeline
from figures.seqattn import fig_seqattn_oneshot, tab_seqattn_ablations
from figures.seqattn import runs as seqattn_runs
from seqattn.prune import KIND

pytestmark = pytest.mark.usefixtures("one_thread")
TARGETS = ("tab-seqattn-blocks", "fig-seqattn-curves", "fig-seqattn-schedule", "tab-seqattn-ablations",
           "fig-seqattn-oneshot")


@pytest.fixture
def small_profile(monkeypatch):
    setup = {"dataset": "digits", "model": "mlp", "epochs": 3}
    monkeypatch.setitem(seqattn_runs.SETUPS, "tiny", [(setup, (4,), (0.9,), tuple(KIND))])
    monkeypatch.setitem(seqattn_runs.SEEDS, "tiny", (0, 1))
    monkeypatch.setitem(tab_seqattn_ablations.SPARSITIES, "tiny", (0.9,))
    monkeypatch.setitem(fig_seqattn_oneshot.SETUPS, "tiny", (
        {"dataset": "digits", "model": "mlp", "pretrain.epochs": 2, "finetune.epochs": 1}, (2, 4), (0.5, 0.9)))


def test_seqattn_figures_are_drawn_from_the_run_store(small_profile, tmp_path, capsys):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    out = tmp_path / "out"
    for name in TARGETS:
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        suffixes = {p.suffix for p in paths}
        assert suffixes == ({".md", ".tex", ".csv"} if name.startswith("tab") else {".png", ".pdf", ".csv"})
        assert all(p.stat().st_size > 0 for p in paths)
    blocks = pd.read_csv(out / "tiny" / "tab-seqattn-blocks.csv")
    assert {"ACDC", "SequentialAttention++", "block magnitude", "block PowerProp"} <= set(blocks.columns)
    assert len(blocks) == 1 and blocks["realized sparsity (%)"].between(80, 90).all()
    ablations = pd.read_csv(out / "tiny" / "tab-seqattn-ablations.csv")
    assert set(ablations["ablation"]) == {"sparsification phase", "exponential c", "attention",
                                          "short dense phases", "unstructured", "pruned weights"}
    oneshot = pd.read_csv(out / "tiny" / "fig-seqattn-oneshot.csv")
    assert len(oneshot) == 4 and oneshot["attention_minus_magnitude"].notna().all()
    schedule = pd.read_csv(out / "tiny" / "fig-seqattn-schedule.csv")
    sapp = schedule[schedule["method"] == "sapp"]["sparsity"]
    assert sapp.max() == pytest.approx(0.9, abs=1e-3) and sapp.iloc[-1] == pytest.approx(0.9, abs=1e-3)
    curves = pd.read_csv(out / "tiny" / "fig-seqattn-curves.csv")
    assert set(curves["method"]) == {"acdc", "sapp"} and curves["mean"].between(0, 100).all()
    capsys.readouterr()
    pipeline.make("fig-seqattn-schedule", "tiny", runtime=runtime, out_root=out)  # everything cached now
    assert "2 runs, 0 to compute" in capsys.readouterr().out
