"""The five SequentialAttention++ targets end to end on a shrunken tiny profile (same code path as `make ...`)."""
import pandas as pd
import pytest

from figures import pipeline
from figures.seqattn import fig_seqattn_oneshot, tab_seqattn_ablations
from figures.seqattn import runs as seqattn_runs
from seqattn.prune import KIND
from tests.test_figures import check_long

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
    monkeypatch.setitem(seqattn_runs.ONESHOT_TEMPERATURES, "tiny", ((0.25,), (4,), (0, 1)))


def test_seqattn_figures_are_drawn_from_the_run_store(small_profile, tmp_path, capsys, png_only):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    out = tmp_path / "out"
    for name in TARGETS:
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        suffixes = {p.suffix for p in paths}
        drawn = {".png", ".csv"}  # the tables draw their paired differences too
        assert suffixes == (drawn | {".md", ".tex"} if name.startswith("tab") else drawn)
        assert all(p.stat().st_size > 0 for p in paths)
    tiny = out / "tiny"
    blocks = pd.read_csv(tiny / "tab-seqattn-blocks-summary.csv")
    assert {"ACDC", "SequentialAttention++", "block magnitude", "block PowerProp"} <= set(blocks.columns)
    assert len(blocks) == 1 and blocks["realized sparsity (%)"].between(80, 91).all()
    runs = check_long(tiny, "tab-seqattn-blocks", rows=len(KIND) * 2)  # method x seed, one block and sparsity
    assert set(runs["seed"]) == {0, 1} and runs["accuracy"].between(0, 100).all()
    ablations = pd.read_csv(tiny / "tab-seqattn-ablations-summary.csv")
    assert set(ablations["ablation"]) == {"sparsification phase", "exponential c", "attention",
                                          "short dense phases", "unstructured", "pruned weights"}
    runs = check_long(tiny, "tab-seqattn-ablations", rows=(len(ablations) + 2) * 2)  # + the defaults at B = 4, 1
    assert set(runs["variant"]) == {*ablations["variant"], "default SA++"}
    # score x block x sparsity x seed, + attention at T = 0.25 at 4x4 x sparsity x seed
    oneshot = check_long(tiny, "fig-seqattn-oneshot", rows=2 * 2 * 2 * 2 + 2 * 2)
    assert oneshot["accuracy"].notna().all() and set(oneshot["score"]) == {"attention", "magnitude"}
    attention = oneshot[oneshot["score"] == "attention"]
    assert sorted(set(attention["temperature"])) == [0.25, 1.0]
    assert oneshot[oneshot["score"] == "magnitude"]["temperature"].isna().all()
    tempered = attention[attention["temperature"] == 0.25]
    assert set(tempered["block"]) == {4} and set(tempered["seed"]) == {0, 1}
    assert len(set(tempered["run"]) & set(attention[attention["temperature"] == 1.0]["run"])) == 0
    diffs = fig_seqattn_oneshot.temperature_diffs(oneshot)
    assert set(diffs["at"]) == {"4x4, T = 1", "4x4, T = 0.25"} and len(diffs) == 2 * 2 * 2
    schedule = check_long(tiny, "fig-seqattn-schedule")
    sapp = schedule[schedule["method"] == "sapp"]["sparsity"]
    assert sapp.max() == pytest.approx(0.9, abs=1e-3) and sapp.iloc[-1] == pytest.approx(0.9, abs=1e-3)
    curves = check_long(tiny, "fig-seqattn-curves")
    assert set(curves["method"]) == {"acdc", "sapp"} and curves["train_acc"].between(0, 100).all()
    assert set(curves["seed"]) == {0, 1}
    capsys.readouterr()
    pipeline.make("fig-seqattn-schedule", "tiny", runtime=runtime, out_root=out)  # everything cached now
    assert "2 runs, 0 to compute" in capsys.readouterr().out
