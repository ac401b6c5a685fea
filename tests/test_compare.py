"""The cross-paper comparison figures: their run lists, their cost accounting, both drawn from a small real store."""
import math

import pandas as pd
import pytest

from common.pretrain import dense_config
from common.store import Run
from figures import pipeline
from figures.bip import runs as R
from figures.compare import fig_compare, fig_compare_structured
from figures.compare import runs as X
from tests.test_figures import check_long


def test_unstructured_run_list_is_one_model_one_grid_one_dense_start():
    rows = X.unstructured("tiny")
    methods = {X.method_of({"script": s, "config.method": c.method, "config.structure": getattr(c, "structure",
                                                                                               "unstructured"),
                            "config.block": getattr(c, "block", 1)}) for s, c in rows if s != "common.pretrain"}
    assert methods == set(X.UNSTRUCTURED_METHODS)
    assert {(c.dataset, c.model) for _, c in rows} == {("digits", "cnn")}
    grid = set(R.sparsities("tiny"))
    assert {getattr(c, "target_sparsity", getattr(c, "sparsity", None)) for s, c in rows
            if s != "common.pretrain" and getattr(c, "method", "") != "imp"} == grid
    scratch_grid = {round(1 - 0.8 ** n, 6) for n in X.SCRATCH_N["tiny"]}
    assert {c.sparsity for s, c in rows if s == "seqattn.prune"} == scratch_grid <= grid  # every other point
    assert X.cost_sparsity("tiny") in grid
    assert {c.seed for _, c in rows} == set(X.SEEDS["tiny"])
    dense = {Run("common.pretrain", dense_config(c)).hash for s, c in rows if hasattr(c, "pretrain") and c.seed == 0}
    assert len(dense) == 1  # BiP, Hydra, IMP, OMP and GMP start from the very same dense model
    # the BiP-paper runs are the BiP figures' own configs (shared in the store)
    bip_fig = {Run(s, c).hash for s, c in R.trajectory("tiny")}
    assert {Run(s, c).hash for s, c in rows if s.startswith("bip.")} <= bip_fig
    # the budget: 2E epochs after the dense model for every method with a free length; ACDC / SA++ (from scratch)
    # get BiP's total work, dense epochs + 2E
    cfg = R.prune_config(R.SETUPS["tiny"]["cnn / digits"])
    assert {c.epochs for s, c in rows if s == "gmp.prune"} == {2 * cfg.epochs}
    scratch = [c for s, c in rows if s == "seqattn.prune"]
    assert {c.epochs for c in scratch} == {cfg.pretrain.epochs + 2 * cfg.epochs}
    assert X.cost_sparsity("tiny") in {c.sparsity for c in scratch}
    assert {(c.scope, c.exclude, c.block) for c in scratch} == {("global", (), 1)}


def test_structured_run_list_has_every_method_and_shares_the_bip_figure():
    rows = X.structured("tiny")
    methods = {X.method_of({"script": s, "config.method": c.method, "config.structure": getattr(c, "structure", ""),
                            "config.block": getattr(c, "block", 1)}) for s, c in rows if s != "common.pretrain"}
    assert methods == set(X.STRUCTURED_METHODS)
    assert {(c.dataset, c.model) for _, c in rows} == {("digits", "cnn")}
    from figures.bip import fig_bip_structured

    shared = {Run(s, c).hash for s, c in fig_bip_structured.runs("tiny")}
    assert {Run(s, c).hash for s, c in rows if s == "bip.prune"} <= shared
    assert {c.block for s, c in rows if s == "seqattn.prune"} == {4}


def test_paper_profile_plans_resnet20_and_resnet18_on_cifar10():
    for rows in (X.unstructured("paper"), X.structured("paper")):
        assert {(c.dataset, c.model) for _, c in rows} == {("cifar10", "resnet20"), ("cifar10", "resnet18")}
    post = [c for s, c in X.structured("paper") if s == "posttrain.prune"]
    assert {c.model for c in post} == {"resnet18", "resnet20"} and {c.samples for c in post} == {512}
    assert {c.ignore for c in post if c.model == "resnet20"} == {("conv1", "layers.*.conv2")}  # option-A shortcuts
    gmp = [c for s, c in X.unstructured("paper") if s == "gmp.prune"]
    assert {c.epochs for c in gmp} == {200} and {c.pretrain.epochs for c in gmp} == {200}
    scratch = {c.epochs for s, c in X.unstructured("paper") if s == "seqattn.prune"}
    assert scratch == {400}  # paper: BiP's whole work (200 dense + 2 x 100) from scratch


def _row(script, method, **fields):
    return {"script": script, "config.method": method, "config.pretrain.epochs": 30, **fields}


def test_epoch_equivalents_on_hand_made_rows():
    bip = X.epoch_equivalents(_row("bip.prune", "bip", **{"config.epochs": 5, "config.lower_steps": 1}))
    assert (bip["dense_ep"], bip["method_ep"], bip["total_ep"]) == (30, 10, 40) and "BiP 5 ep" in bip["budget"]
    assert X.epoch_equivalents(_row("bip.prune", "bip", **{"config.epochs": 6, "config.lower_steps": 2}))[
        "method_ep"] == 9
    hydra = X.epoch_equivalents(_row("bip.prune", "hydra", **{"config.epochs": 5, "config.finetune_epochs": 5}))
    assert hydra["total_ep"] == 40
    assert X.epoch_equivalents(_row("bip.magnitude", "imp", **{"config.epochs": 5, "round": 7}))["total_ep"] == 65
    assert X.epoch_equivalents(_row("bip.magnitude", "omp", **{"config.epochs": 5, "round": 1}))["total_ep"] == 35
    gmp = X.epoch_equivalents(_row("gmp.prune", "gmp", **{"config.epochs": 10, "config.stabilize_epochs": 1,
                                                           "config.prune_epochs": 5}))
    assert gmp["total_ep"] == 40
    sapp = X.epoch_equivalents({"script": "seqattn.prune", "config.method": "sapp", "config.epochs": 10})
    assert (sapp["dense_ep"], sapp["total_ep"]) == (0, 10) and "from scratch" in sapp["budget"]
    post = X.epoch_equivalents(_row("posttrain.prune", "ours", **{"config.samples": 128, "config.phase1_epochs": 10,
                                                                  "config.phase2_epochs": 10,
                                                                  "config.dataset": "digits"}))
    assert math.isclose(post["method_ep"], 128 * 20 / 1437) and "128 samples" in post["budget"]


def test_method_seconds_on_hand_made_rows():
    assert X.method_seconds({"script": "bip.prune", "method_time": 3.5, "wall_time": 9.0}) == 3.5
    assert X.method_seconds({"script": "gmp.prune", "method_time": float("nan"), "wall_time": 9.0}, 2.0) == 7.0
    assert X.method_seconds({"script": "seqattn.prune", "wall_time": 4.0}) == 4.0
    with pytest.raises(ValueError):
        X.method_seconds({"script": "gmp.prune", "wall_time": 9.0})


@pytest.fixture
def small_profile(monkeypatch):
    """tiny shrunk to what the assertions read: one seed, the grid n = 1 and the cost point n = 2 (IMP: 2 rounds),
    E = 1 epoch after a 1-epoch dense model (so ACDC / SA++ train 1 + 2 epochs), 437 of digits' 1437 training images
    trained on (1000 held out), one structured and one block sparsity."""
    monkeypatch.setitem(R.SETUPS, "tiny", {"cnn / digits": (None, {"model": "cnn", "pretrain.epochs": 1,
                                                                    "val_size": 1000}, 1)})
    monkeypatch.setitem(X.COST_N, "tiny", 2)
    monkeypatch.setitem(X.SCRATCH_N, "tiny", (1, 2))
    monkeypatch.setitem(R.GRID_N, "tiny", (1, X.COST_N["tiny"]))
    monkeypatch.setitem(R.STRUCTURED, "tiny", (0.5,))
    monkeypatch.setitem(X.SEEDS, "tiny", (0,))
    monkeypatch.setitem(X.BLOCK_SPARSITIES, "tiny", (0.5,))
    monkeypatch.setitem(X.SETUPS, "tiny", {"cnn / digits": dict(
        X.SETUPS["tiny"]["cnn / digits"], posttrain=(None, {"phase1_epochs": 1, "phase2_epochs": 1}))})
    monkeypatch.setattr(fig_compare_structured, "REPEATS", 3)
    monkeypatch.setattr(fig_compare_structured, "ROUNDS", 1)


def test_both_figures_are_drawn_from_a_real_small_store(small_profile, tmp_path, one_thread, png_only):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    out = tmp_path / "out"
    for name in ("fig-compare", "fig-compare-structured"):
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        assert {p.suffix for p in paths} == {".png", ".csv"} and all(p.stat().st_size > 0 for p in paths)
    runs = check_long(out / "tiny", "fig-compare")
    assert set(runs["seed"]) == {0} and runs["acc"].between(0, 100).all()
    un = pd.read_csv(out / "tiny" / "fig-compare-summary.csv")
    assert list(un.columns) == fig_compare.COLUMNS and un["seeds"].sum() == len(runs)
    assert set(un["method"]) == set(X.UNSTRUCTURED_METHODS)
    scratch = un[un["method"].isin(["acdc", "sapp"])]  # from scratch, for the pretrained methods' whole work
    assert (scratch["total_ep"] == un[un["method"] == "bip"]["total_ep"].max()).all()
    assert set(un["sparsity"]) == {20.0, round(100 * (1 - 0.8 ** X.COST_N["tiny"]), 2)}
    assert un["budget"].str.len().gt(0).all() and (un["total_ep"] > 0).all() and (un["total_s"] > 0).all()
    imp = un[un["method"] == "imp"].set_index("sparsity")
    assert imp.loc[20.0, "method_ep"] == 1 and imp["method_ep"].max() == X.COST_N["tiny"]  # one epoch per round
    assert (un[un["method"].isin(["sapp", "acdc"])]["dense_ep"] == 0).all()
    runs = check_long(out / "tiny", "fig-compare-structured")
    assert set(runs["seed"]) == {0} and (runs["sparse_speedup_b64"] > 0).all()
    st = pd.read_csv(out / "tiny" / "fig-compare-structured-summary.csv")
    assert list(st.columns) == fig_compare_structured.COLUMNS and st["seeds"].sum() == len(runs)
    assert set(st["method"]) == set(X.STRUCTURED_METHODS)
    assert (st["RP"] > 1).all() and (st["RF"] > 1).all() and (st["speedup_b64"] > 0).all()
    assert (st["sparse_speedup_b64"] > 0).all()  # each run's export, measured; sparse_format: what it computes with
    allowed = {"posttrain": {"dense (physically pruned)"}, "bip-filter": {"csr", "dense (csr not faster)"},
               "bip-channel": {"csr", "dense (csr not faster)"}}
    for method, formats in zip(st["method"], st["sparse_format"]):
        assert set(formats.split("; ")) <= allowed.get(method, {"bsr4", "dense (bsr4 not faster)"}), (method, formats)
    assert st["budget"].str.len().gt(0).all() and st["acc_mean"].between(0, 100).all()
