"""The notebooks of figures/notebooks: committed clean, and executed headless (nbclient, this venv's kernel) against a
small real run store -- a few runs of every paper script with reduced epochs -- without an error, each showing at
least one image, and without writing into the repository."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from common import config as C
from common.store import execute
from figures.bip import fig_bip_rewind, fig_bip_trajectory
from figures.gmp import fig_gmp_vs_oneshot
from figures.posttrain import tab_posttrain
from figures.seqattn import fig_seqattn_oneshot, fig_seqattn_schedule
from figures.seqattn import runs as seqattn_runs
from tests.conftest import single_thread

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "figures" / "notebooks"
NOTEBOOKS = ("gmp", "bip", "seqattn", "posttrain", "compare")
SEQATTN_SMALL = [({"dataset": "digits", "model": "mlp", "epochs": 3}, (4,), (0.9,), ("acdc", "sapp"))]


def small_seqattn(mp):
    """A tiny profile whose SA++ focus runs (curves, schedule figures) are 3-epoch runs of seed 0."""
    mp.setitem(seqattn_runs.SETUPS, "tiny", SEQATTN_SMALL)
    mp.setitem(seqattn_runs.SEEDS, "tiny", (0,))


def store_rows(runs_dir: str) -> list:
    """A handful of real runs of every script the notebooks read, from the figure modules' tiny run lists."""
    first = lambda rows, **want: next(c for _, c in rows if all(getattr(c, k) == v for k, v in want.items()))  # noqa
    rows = []
    gmp = fig_gmp_vs_oneshot.runs("tiny")
    for method in ("gmp", "oneshot"):
        rows.append(("gmp.prune", C.replace(first(gmp, method=method, target_sparsity=0.9, seed=0), model="mlp",
                                            exclude=("last",), epochs=4, stabilize_epochs=1, prune_epochs=2,
                                            **{"pretrain.epochs": 3, "finetune_lr.milestones": (1.0,)})))
    bip = fig_bip_trajectory.runs("tiny")
    few = {"pretrain.epochs": 3, "epochs": 1}
    rows.append(("bip.prune", C.replace(first(bip, method="bip", model="mlp", target_sparsity=0.488, seed=0), **few)))
    rows.append(("bip.magnitude", C.replace(first(bip, method="imp", model="mlp", seed=0), target_sparsity=0.36,
                                            **few)))
    rewind = next(c for s, c in fig_bip_rewind.runs("tiny") if s == "bip.retrain" and c.rewind_epoch is not None)
    rows.append(("bip.retrain", C.replace(rewind, retrain_epochs=1, rewind_epoch=2, **few)))
    with pytest.MonkeyPatch.context() as mp:
        small_seqattn(mp)
        rows += fig_seqattn_schedule.runs("tiny")
    oneshot = fig_seqattn_oneshot.runs("tiny")
    for score in ("attention", "magnitude"):
        rows.append(("seqattn.oneshot", C.replace(first(oneshot, score=score, block=4, seed=0), sparsities=(0.5, 0.9),
                                                  **{"pretrain.epochs": 2, "finetune.epochs": 1})))
    posttrain = tab_posttrain.runs("tiny")
    for method in ("ours", "none"):
        rows.append(("posttrain.prune", C.replace(first(posttrain, method=method, model="cnn", sample_seed=0),
                                                  model="mlp", samples=32, phase1_epochs=2, phase2_epochs=2,
                                                  **{"pretrain.epochs": 3})))
    return [(script, C.replace(cfg, runs_dir=runs_dir, progress="off", device="cpu")) for script, cfg in rows]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("notebooks") / "runs"
    with single_thread():
        for script, cfg in store_rows(str(runs_dir)):
            execute(script, cfg)
    return runs_dir


def test_notebooks_are_committed_valid_and_without_outputs():
    assert sorted(p.stem for p in FOLDER.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(FOLDER / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert all(f'os.environ.get("{var}"' in code[0].source for var in ("PRUNING_RUNS", "PRUNING_PROFILE"))
        assert sum(c.cell_type == "markdown" for c in nb.cells) >= 2, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_headless_on_a_small_store(name, store, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    path = FOLDER / f"{name}.ipynb"
    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))  # which Python the kernel runs
    monkeypatch.setenv("PRUNING_RUNS", str(store))
    monkeypatch.setenv("PRUNING_PROFILE", "tiny")
    monkeypatch.setenv("PRUNING_NB_OUT", str(tmp_path / "out"))
    NotebookClient(nb, timeout=120, kernel_name="python3", shutdown_kernel="immediate",
                   resources={"metadata": {"path": str(FOLDER)}}).execute()  # raises CellExecutionError on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{name}.ipynb showed no image"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text.strip().splitlines()[-1] == sys.prefix  # the kernel runs this venv's Python
    assert str(store) in text  # the store of PRUNING_RUNS was read (its runs are reported missing for the figures)
    assert path.read_bytes() == before  # nothing written back into the notebook


def test_figure_is_drawn_by_its_module_when_all_runs_exist(store, tmp_path, monkeypatch, capsys):
    from figures.notebooks import nbplot

    small_seqattn(monkeypatch)
    nb = nbplot.Store(store, "tiny", tmp_path / "out")
    nb.figure("fig-seqattn-schedule", explore=dict(script="seqattn.prune", y="test_acc"))
    paths = nb.drawn["fig-seqattn-schedule"]
    assert {p.suffix for p in paths} == {".png", ".pdf", ".csv"}
    assert all(p.is_relative_to(tmp_path) and p.stat().st_size > 0 for p in paths)
    assert "not in" not in capsys.readouterr().out
    # a figure with runs missing names the command and falls back to the runs that are there
    nb.figure("tab-seqattn-blocks", explore=dict(script="seqattn.prune", x="config.sparsity", y="test_acc",
                                                 by=["config.method"], panel="config.block"))
    out = capsys.readouterr().out
    assert f"`make tab-seqattn-blocks PROFILE=tiny RUNS={store}` computes them" in out
    assert "tab-seqattn-blocks" not in nb.drawn
    assert set(nb.stats["group"]) == {"acdc", "sapp"} and set(nb.stats["x"]) == {90.0}
    assert nb.stats["mean"].between(10, 100).all() and (nb.stats["count"] == 1).all()
