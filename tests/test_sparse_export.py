"""Sparse exports (python -m common.export --format csr|bsr): the sparse layers against their dense references, real
tiny runs exported in each format and reloaded by ``common.export.load`` in a fresh interpreter where any warning is an
error, the per-layer decisions, the bad inputs (damaged exports included)."""
import copy
import importlib
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from common import config as C
from common import export as E
from common import sparse as SP
from common.store import config_hash
from common.errors import UserError
from tests.conftest import ROOT, one_error_line, run_cli, run_main, single_thread
from tests.test_export import _raw_digits_test, _run_dir

GMP = ["--pretrain.epochs", "2", "--epochs", "3", "--stabilize-epochs", "1", "--prune-epochs", "1",
       "--target-sparsity", "0.8", "--exclude", "last"]
RUNS = {  # unstructured MLP and CNN, block-sparse MLP (4x4 blocks), structurally pruned CNN
    "mlp": ("gmp.prune", ["--model", "mlp", *GMP]),
    "cnn": ("gmp.prune", ["--model", "cnn", *GMP]),
    "block": ("seqattn.prune", ["--model", "mlp", "--block", "4", "--sparsity", "0.8", "--epochs", "2"]),
    "structured": ("posttrain.prune", ["--model", "cnn", "--pretrain.epochs", "2", "--samples", "64",
                                       "--phase1-epochs", "1", "--phase2-epochs", "1"]),
}
EXPORTS = {  # run -> the exports made of it: (--format, --block); the dense one (export/) is the reference
    "mlp": [("dense", 0), ("csr", 0), ("bsr", 8)],     # 300 x 64 and 100 x 300: B = 8 pads both sides
    "cnn": [("dense", 0), ("csr", 0), ("bsr", 4)],     # convolutions through im2col; the 1-channel stem K = 9 pads
    "block": [("dense", 0), ("bsr", 0)],               # the run's own 4x4 blocks
}

# A fresh interpreter (python -W error: any warning fails it) that loads each export as a user does,
# common.export.load(folder): each export's logits on the plain digits test images and its sparse weights' layouts.
LOAD = r"""
import json, sys
import torch
from common import export, sparse
x, y = torch.load(sys.argv[1], weights_only=True)
out = {}
for folder in sys.argv[2:]:
    model = export.load(folder)
    with torch.no_grad():
        logits = model(x)
    layouts = sorted({str(m.matrix.weight().layout) for m in model.modules() if isinstance(m, sparse.SPARSE_LAYERS)})
    acc = (logits.argmax(1) == y).sum().item() / len(y)
    out[folder] = {"logits": logits.tolist(), "layouts": layouts, "acc": acc}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """RUNS computed (``--export`` on the first: the dense export), every export of EXPORTS written by the command
    (``--layers all``: these tiny layers are faster dense, see test_faster_layers_...), reloaded in a fresh
    interpreter (``LOAD``)."""
    from common.data import load_dataset

    tmp = tmp_path_factory.mktemp("sparse")
    runs = tmp / "runs"
    dirs = {}
    for key, (script, args) in RUNS.items():
        extra = ["--export-format", "csr"] if key == "structured" else []  # the script's flag
        proc = run_main(script, *args, "--progress", "off", "--runs-dir", runs, *extra)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
        assert code == 0, err
        dirs[key] = _run_dir(out, runs)
        if extra:
            assert "structurally pruned, exported as the physically smaller dense model" in err
            assert f"exported: {dirs[key] / 'export-csr'}" in err
    folders = {}
    with single_thread():
        for key, formats in EXPORTS.items():
            for fmt, block in formats:
                args = ["--run", str(dirs[key]), "--format", fmt, *(["--block", str(block)] if block else [])]
                assert E.main([*args, *(["--layers", "all"] if fmt != "dense" else [])]) == 0
                folders[key, fmt] = dirs[key] / E.folder(fmt, block or (4 if key == "block" else 0))
    data = tmp / "digits_test.pt"
    torch.save(_raw_digits_test(load_dataset("digits", device="cpu").test), data)
    every = [*folders.values(), dirs["structured"] / "export-csr"]
    proc = subprocess.run([sys.executable, "-W", "error", "-c", LOAD, data, *every], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    return {"dirs": dirs, "folders": folders,
            "loaded": {k: loaded[str(f)] for k, f in folders.items()},
            "structured": loaded[str(dirs["structured"] / "export-csr")],
            "reports": {k: json.loads((f / "sparsity.json").read_text()) for k, f in folders.items()}}


# ---------------------------------------------------------------------------------------------------- the layers
def _pruned(layer, sparsity, seed=0):
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        layer.weight.mul_(torch.rand(layer.weight.shape, generator=g) >= sparsity)
    return layer.eval()


@pytest.mark.parametrize("fmt,block", [("csr", 0), ("bsr", 2), ("bsr", 4), ("bsr", 8)])
def test_each_sparse_layer_equals_its_dense_reference(fmt, block, one_thread):
    torch.manual_seed(0)
    layers = [(_pruned(nn.Linear(30, 21), 0.8), (30,)), (_pruned(nn.Linear(24, 16, bias=False), 0.5), (24,)),
              (_pruned(nn.Conv2d(3, 6, 3, stride=2, padding=1), 0.7), (3, 9, 9)),
              (_pruned(nn.Conv2d(5, 8, (3, 2), padding=(1, 2), dilation=(1, 2), bias=False), 0.6), (5, 7, 6))]
    for layer, shape in layers:
        eager = SP.sparse_layer(layer, fmt, block or 1)
        assert isinstance(eager, SP.SparseLinear if isinstance(layer, nn.Linear) else SP.SparseConv2d)
        state = eager.state_dict()  # what an export stores: plain tensors, the sparse weight as its parts
        assert sorted(state) == sorted(f"matrix.{part}" for part in SP.SparseMatrix.PARTS)
        assert all(t.layout == torch.strided for t in state.values())
        rebuilt = SP.rebuilt_layer(copy.deepcopy(layer), json.loads(json.dumps(SP.spec(eager))),
                                   {k.split(".")[-1]: v.clone() for k, v in state.items()})
        for n in (1, 5, SP.MIN_BSR_COLUMNS + 1):  # below and above the BSR column padding
            x = torch.randn(n, *shape)
            with torch.no_grad():
                want, ref = layer(x), eager.reference(x)
                assert torch.allclose(ref, want, atol=1e-6), (layer, n)  # the compressed weight is the weight
                for got in (eager(x), rebuilt(x), copy.deepcopy(eager)(x)):
                    assert got.shape == want.shape and SP.agrees(got, ref), (layer, n)
                if isinstance(layer, nn.Conv2d):
                    assert torch.equal(eager.patches(x), eager.patches_reference(x))
    lin = layers[0][0]
    x = torch.randn(2, 3, 30)  # a Linear on (..., in) inputs
    with torch.no_grad():
        assert SP.agrees(SP.sparse_layer(lin, fmt, block or 1)(x), lin(x))


def test_bsr_pads_a_layer_the_block_does_not_divide(one_thread):
    layer = _pruned(nn.Linear(390, 300), 0.9)
    m = SP.sparse_layer(layer, "bsr", 8)
    assert m.matrix.size == [304, 392] and m.matrix.pad_k == 2
    assert SP.spec(m) == {"kind": "linear", "format": "bsr", "block": 8, "size": [304, 392], "shape": [300, 390]}
    x = torch.randn(3, 390)
    with torch.no_grad():
        assert SP.agrees(m(x), layer(x))


def test_faster_layers_are_kept_sparse_and_slower_ones_dense(one_thread):
    """A 1024 x 1024 layer at 95% is several times faster sparse at batch 64; a 4 x 1024 one at 10% is not."""
    torch.manual_seed(0)
    model = nn.Sequential(_pruned(nn.Linear(1024, 1024), 0.95), nn.ReLU(), _pruned(nn.Linear(1024, 4), 0.1),
                          nn.ReLU(), nn.Linear(4, 3)).eval()
    sparse, decisions = SP.sparsify(model, "csr", 0, (1024,), batch=64)
    big, small, last = decisions
    assert (big["layer"], big["format"], big["why"]) == ("0.weight", "csr", "csr faster")
    assert big["sparse_ms"] < SP.MARGIN * big["dense_ms"] and big["speedup"] > 1.5
    assert small["format"] == "dense" and "csr not faster" in small["why"]
    assert small["sparse_ms"] >= SP.MARGIN * small["dense_ms"]
    assert last["format"] == "dense" and last["why"] == "no zero weights" and last["dense_ms"] is None
    assert abs(big["sparsity"] - 0.95) < 0.01 and big["shape"] == [1024, 1024]
    assert isinstance(sparse[0], SP.SparseLinear) and isinstance(sparse[2], nn.Linear)
    assert model[0].weight.layout == torch.strided  # the model itself is left alone
    x = torch.randn(7, 1024)
    with torch.no_grad():
        assert SP.agrees(sparse(x), model(x))
    assert "2.weight (csr not faster" in SP.summary(decisions) and "4.weight" not in SP.summary(decisions)


def test_a_sparse_layer_computes_with_the_parts_it_holds_and_refuses_indices_out_of_range(one_thread):
    layer = _pruned(nn.Linear(12, 6), 0.5)
    m = SP.sparse_layer(layer, "csr")
    x = torch.randn(3, 12)
    with torch.no_grad():
        m(x)  # its sparse weight made
        m.load_state_dict({k: v * 2 if k.endswith(("values", "bias")) else v for k, v in m.state_dict().items()})
        assert SP.agrees(m(x), 2 * layer(x))  # made again from the loaded parts
    parts = {k.split(".")[-1]: v.clone() for k, v in m.state_dict().items()}
    parts["col"][0] = 12  # a column beyond the 6 x 12 matrix: the kernels would read out of bounds
    with pytest.raises(RuntimeError, match="col_indices"):
        SP.rebuilt_layer(layer, SP.spec(m), parts)
    with pytest.raises(ValueError, match="matrix of shape"):
        SP.rebuilt_layer(nn.Linear(13, 6), SP.spec(m), {k.split(".")[-1]: v for k, v in m.state_dict().items()})


# ---------------------------------------------------------------------------------------------------- real runs
def test_sparse_exports_reload_without_warnings_and_equal_the_dense_export(exported):
    for key, formats in EXPORTS.items():
        dense = torch.tensor(exported["loaded"][key, "dense"]["logits"])
        acc = json.loads((exported["dirs"][key] / "result.json").read_text())["test_acc"]
        for fmt, _ in formats[1:]:
            got = exported["loaded"][key, fmt]
            logits = torch.tensor(got["logits"])
            assert SP.agrees(logits, dense), (key, fmt, float((logits - dense).abs().max()))
            assert got["acc"] == acc, (key, fmt)
            assert exported["reports"][key, fmt]["format"] == "modules"
            assert exported["reports"][key, fmt]["file"] == "model.json"
            assert got["layouts"] == [f"torch.sparse_{fmt}"], (key, fmt, got["layouts"])
            tensors = torch.load(exported["folders"][key, fmt] / "model.pt", weights_only=True)
            assert all(t.layout == torch.strided for t in tensors.values())  # parts, not sparse tensors
            description = json.loads((exported["folders"][key, fmt] / "model.json").read_text())
            assert set(description["sparse"]) == {f"model.{d['layer'][:-len('.weight')]}" for d in
                                                  exported["reports"][key, fmt]["weights"]["layers"]
                                                  if d["format"] == fmt}
            assert exported["reports"][key, fmt]["result"]["test_acc"] == acc


def test_sparsity_json_records_every_layers_decision(exported):
    for (key, fmt), rep in exported["reports"].items():
        weights = rep["weights"]
        assert weights["format"] == fmt
        if fmt == "dense":
            assert weights == {"format": "dense", "block": None}
            continue
        by_layer = {x["layer"]: x for x in rep["layers"]}  # the export's own sparsity report
        assert weights["layers_rule"] == "all" and weights["threads"] == 1 and weights["batch"] == 64
        for d in weights["layers"]:
            if d["layer"] in by_layer:
                assert abs(d["sparsity"] - by_layer[d["layer"]]["sparsity"]) < 1e-12
            assert d["format"] == (fmt if d["sparsity"] > 0 else "dense"), d
            assert d["block"] == (weights["block"] if d["format"] == "bsr" else None)
            assert d["kind"] == ("conv2d" if len(d["shape"]) == 4 else "linear")
    assert exported["reports"]["block", "bsr"]["weights"]["block"] == 4  # the run's own block size
    mlp8 = {d["layer"]: d for d in exported["reports"]["mlp", "bsr"]["weights"]["layers"]}
    assert mlp8["1.weight"]["padded"] == [304, 64] and mlp8["3.weight"]["padded"] == [104, 304]
    stem = exported["reports"]["cnn", "bsr"]["weights"]["layers"][0]
    assert stem["layer"] == "0.weight" and stem["padded"] == [32, 12]  # 32 x (3*3*1) in 4x4 blocks
    assert all(d["padded"] is None for d in exported["reports"]["block", "bsr"]["weights"]["layers"])


def test_a_structured_run_exports_its_physically_smaller_dense_model(exported):
    run = exported["dirs"]["structured"]
    rep = json.loads((run / "export-csr" / "sparsity.json").read_text())
    assert rep["structured"] and rep["weights"]["format"] == "csr" and rep["format"] == "torch.export"
    assert {d["format"] for d in rep["weights"]["layers"]} == {"dense"}
    assert all("structurally pruned" in d["why"] for d in rep["weights"]["layers"])
    assert rep["params"] == json.loads((run / "result.json").read_text())["params"]
    assert exported["structured"]["layouts"] == []


# ---------------------------------------------------------------------------------------------------- bad inputs
def test_a_damaged_or_incomplete_sparse_export_is_one_error_and_never_runs_code(exported, tmp_path):
    import shutil

    from tests.test_no_unpickling import write_evil

    folder = tmp_path / "export-csr"
    shutil.copytree(exported["folders"]["mlp", "csr"], folder)
    text = (folder / "model.json").read_text()
    description = json.loads(text)
    description["sparse"]["model.1"]["shape"] = [300, 65]  # not the model's 300 x 64 layer
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(UserError, match=r"model.pt and its model.json do not describe one model \(ValueError"):
        E.load(folder)
    (folder / "model.json").write_text(text)
    tensors = torch.load(folder / "model.pt", weights_only=True)
    tensors["model.1.matrix.col"][0] = 10 ** 6  # a column index beyond the matrix
    torch.save(tensors, folder / "model.pt")
    with pytest.raises(UserError, match=r"do not describe one model \(RuntimeError: .*col_indices"):
        E.load(folder)
    marker = tmp_path / "marker"
    write_evil(folder / "model.pt", marker)
    with pytest.raises(UserError, match="model.pt is refused: it is not plain tensor data"):
        E.load(folder)
    assert not marker.exists()
    report = json.loads((folder / "sparsity.json").read_text())
    (folder / "sparsity.json").write_text(json.dumps({**report, "format": "torchscript"}))  # an earlier version's
    with pytest.raises(UserError, match="holds a torchscript export, which this version does not load"):
        E.load(folder)
    (folder / "sparsity.json").unlink()  # an export cut short
    with pytest.raises(UserError, match="is not a complete export"):
        E.load(folder)


def test_the_readmes_csr_example_exports_a_tiny_run_as_written(exported, tmp_path):
    """common/README.md's ``--format csr`` example, run as written from a folder whose runs/ holds a tiny pruned CNN:
    none of its layers pays off sparse at batch 64 (oneDNN's convolutions win), so the export computes the dense
    model, says so in one note line naming each layer, and records each decision."""
    import shlex
    import shutil

    from tests.conftest import ROOT

    lines = [ln.split("#")[0].strip() for ln in (ROOT / "common" / "README.md").read_text().splitlines()
             if ln.startswith("python -m common.export --run runs/gmp.prune/<hash> --format csr")]
    assert lines == ["python -m common.export --run runs/gmp.prune/<hash> --format csr"]
    run = exported["dirs"]["cnn"]
    copy = tmp_path / "runs" / "gmp.prune" / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export*"))
    proc = run_cli(*shlex.split(lines[0].replace("<hash>", run.name))[2:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["export"] == "runs/gmp.prune/" + run.name + "/export-csr"
    rep = json.loads((copy / "export-csr" / "sparsity.json").read_text())
    assert rep["weights"]["format"] == "csr" and rep["weights"]["layers_rule"] == "faster"
    decided = [d for d in rep["weights"]["layers"] if d["sparsity"] > 0]
    assert decided and all(d["dense_ms"] > 0 and d["sparse_ms"] > 0 for d in decided)
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("note: ")]
    if all(d["format"] == "dense" for d in decided):
        assert rep["format"] == "torch.export" and len(notes) == 1
        assert "no layer is faster csr, the program computes the dense model: " in notes[0]
        assert all(f"{d['layer']} (csr not faster" in notes[0] for d in decided)
    else:  # a layer measured faster on this machine: computed in CSR
        assert rep["format"] == "modules"


def test_a_run_without_zero_weights_is_one_error_line_naming_each_layer(exported, tmp_path):
    dense = next(d for d in (exported["dirs"]["mlp"].parents[1] / "common.pretrain").iterdir()
                 if json.loads((d / "config.json").read_text())["config"]["model"] == "mlp")
    proc = run_main("common.export", "--run", dense, "--format", "csr")
    line = one_error_line(proc)
    assert proc.returncode == 2 and "no layer of" in line and "has zero weights, so none can be computed csr" in line
    assert "1.weight (no zero weights); 3.weight (no zero weights); 5.weight (no zero weights)" in line
    assert "--format dense" in line and not (dense / "export-csr").exists()


def test_layers_that_stay_dense_are_named_in_one_note_line(exported, monkeypatch, capsys):
    """Timings replaced by fixed ones: the first layer is twice as fast sparse, the second twice as slow."""
    times = iter([{"dense": 1.0, "sparse": 0.5}, {"dense": 1.0, "sparse": 2.0}])
    monkeypatch.setattr(SP, "time_pair", lambda *a, **k: next(times))
    assert E.main(["--run", str(exported["dirs"]["mlp"]), "--format", "csr"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: ") and "export-csr: layers that stay dense: " in err[0]
    assert err[0].endswith(f"3.weight (csr not faster: 2 ms vs dense 1 ms at batch 64 (sparse needs < {SP.MARGIN:g}x))")
    layers = json.loads((exported["dirs"]["mlp"] / "export-csr" / "sparsity.json").read_text())["weights"]["layers"]
    assert [d["format"] for d in layers] == ["csr", "dense", "dense"] and layers[0]["speedup"] == 2.0


def test_runs_without_a_single_final_model_are_one_error_line(exported, tmp_path, capsys):
    unfinished = tmp_path / "runs" / "gmp.prune" / "0123456789abcdef"
    unfinished.mkdir(parents=True)
    assert E.main(["--run", str(unfinished), "--format", "csr"]) == 2
    assert "is not a finished run (no result.json" in capsys.readouterr().err
    run = exported["dirs"]["mlp"]
    for name in ("config.json", "result.json"):  # done, but its model.pt is gone
        (unfinished / name).write_bytes((run / name).read_bytes())
    proc = run_main("common.export", "--run", unfinished, "--format", "bsr", "--block", "4")
    assert proc.returncode == 2 and "stores no final model (no model.pt)" in one_error_line(proc)


def test_block_sizes_that_cannot_apply_are_one_error_line(exported, capsys):
    run = str(exported["dirs"]["mlp"])
    assert E.main(["--run", run, "--format", "csr", "--block", "4"]) == 2
    assert "--block 4: give a positive block size with the bsr format" in capsys.readouterr().err
    assert E.main(["--run", run, "--format", "bsr", "--block", "-2"]) == 2
    assert "--block -2" in capsys.readouterr().err
    proc = run_main("gmp.prune", "--export-format", "csr", "--export-block", "8", "--runs-dir",
                    exported["dirs"]["mlp"].parents[1])
    assert proc.returncode == 2 and "--export-block 8: give a positive block size" in one_error_line(proc)
    assert E.main(["--run", run, "--format", "coo"]) == 2
    assert "--format 'coo' is not one of: dense, csr, bsr" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- the hash
SCRIPTS = ("common.pretrain", "gmp.prune", "bip.prune", "bip.magnitude", "seqattn.prune", "seqattn.oneshot",
           "posttrain.prune")


@pytest.mark.parametrize("script", SCRIPTS)
def test_export_format_is_an_execution_setting_outside_the_run_hash(script):
    module = importlib.import_module(script)
    plain = C.parse_args(module.Config, [])
    flagged = C.parse_args(module.Config, ["--export-format", "bsr", "--export-block", "8"])
    assert (flagged.export_format, flagged.export_block) == ("bsr", 8)
    assert config_hash(flagged) == config_hash(plain)
    identity = C.canonical_json(plain)
    assert "export" not in identity  # neither --export nor its format is part of what a run computes


# ---------------------------------------------------------------------------------------------------- gpu-check
def test_gpu_check_measures_sparse_inference_and_skips_2_4_off_cuda(one_thread):
    from figures import gpu_check

    result = gpu_check.sparse_inference(torch.device("cpu"), quick=True)
    assert set(result) == {"mlp_csr_90", "criteo-first-layer_bsr8_95", "semi_structured_2_4"}
    for key in ("mlp_csr_90", "criteo-first-layer_bsr8_95"):
        assert result[key]["equal"] and result[key]["dense_ms"] > 0 and result[key]["sparse_ms"] > 0, result[key]
    assert "CUDA only" in result["semi_structured_2_4"]["skipped"]
    assert gpu_check.sparse_outputs_agree({"sparse_inference": result})
    assert not gpu_check.sparse_outputs_agree({"sparse_inference": {"x": {"equal": False}}})
