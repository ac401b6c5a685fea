"""Export of a finished run's final model: loadable without this repository, with the run's accuracy and sparsity."""
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
import torch

from common import config as C
from common import export as E
from common.errors import UserError
from common.store import config_hash
from tests.conftest import one_error_line, run_cli, run_main

RUNS = {  # one run per kind of model: unstructured, block-sparse, structurally pruned (their dense runs come along)
    "gmp.prune": ["--model", "mlp", "--exclude", "last", "--pretrain.epochs", "3", "--epochs", "4",
                  "--stabilize-epochs", "1", "--prune-epochs", "2", "--target-sparsity", "0.8"],
    "seqattn.prune": ["--model", "mlp", "--block", "4", "--sparsity", "0.8", "--epochs", "3"],
    "posttrain.prune": ["--model", "cnn", "--pretrain.epochs", "2", "--samples", "64", "--phase1-epochs", "2",
                        "--phase2-epochs", "1"],
}

# The start of a script that runs in a fresh interpreter whose path holds no copy of this repository: plain torch
# only; argv: the (images, labels) file, then the export folders.
NO_REPOSITORY = r"""
import json, sys
import torch
try:
    import common
    sys.exit("the repository is importable")
except ModuleNotFoundError:
    pass
x, y = torch.load(sys.argv[1], weights_only=True)
out = {}
"""
LOAD = NO_REPOSITORY + r"""
for folder in sys.argv[2:]:
    rep = json.load(open(f"{folder}/sparsity.json"))
    lo, hi = rep["input"]["range"]
    assert lo <= float(x.min()) and float(x.max()) <= hi and list(x.shape[1:]) == rep["input"]["shape"][1:]
    program = torch.export.load(f"{folder}/{rep['file']}")
    weights = program.state_dict
    names = ["model." + layer["layer"] for layer in rep["layers"]]
    nonzero = sum(int(torch.count_nonzero(weights[n])) for n in names)
    with torch.no_grad():
        acc = (program.module()(x).argmax(1) == y).sum().item() / len(y)
    out[folder] = {"acc": acc, "sparsity": 1 - nonzero / sum(weights[n].numel() for n in names),
                   "params": sum(p.numel() for p in program.parameters())}
print(json.dumps(out))
"""


def _run_dir(stdout, runs):
    result = json.loads(stdout.splitlines()[-1])
    return runs / result["script"] / result["hash"]


def _raw_digits_test(test):
    """The digits test split as a user has it: scikit-learn's images, pixel / 16 (in [0, 1]), not normalized."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, positions = train_test_split(np.arange(len(digits.target)), test_size=360, random_state=0,
                                    stratify=digits.target)
    positions = np.sort(positions)
    x = torch.tensor(digits.images[positions] / 16, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target[positions])
    assert torch.equal(y, test.y) and not torch.allclose(x, test.x)  # the split's images, before standardization
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    return x, y


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every script of RUNS run with --export, then all runs (dense ones by a glob) exported again by the command."""
    from common.data import load_dataset

    tmp = tmp_path_factory.mktemp("export")
    runs = tmp / "runs"
    dirs, first = {}, {}
    for script, args in RUNS.items():  # the first one as a user runs it, the others in this process
        args = [*args, "--progress", "off", "--runs-dir", runs, "--export"]
        proc = run_cli(script, *args) if script == "gmp.prune" else run_main(script, *args)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
        assert code == 0, err
        dirs[script] = _run_dir(out, runs)
        assert f"exported: {dirs[script] / 'export'}" in err
        first[script] = torch.load(dirs[script] / "export" / "state_dict.pt", weights_only=True)
    dense = sorted((runs / "common.pretrain").iterdir())
    assert len(dense) == 2  # the mlp of gmp.prune, the cnn of posttrain.prune
    proc = run_main("common.export", "--run", dirs["gmp.prune"], "--run", runs / "common.pretrain" / "*",
                    "--run", f"{dirs['seqattn.prune']},{dirs['posttrain.prune']}")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["format"] for line in proc.stdout.splitlines()] == ["torch.export"] * 5
    dirs.update({f"common.pretrain/{d.name}": d for d in dense})
    data = tmp / "digits_test.pt"
    torch.save(_raw_digits_test(load_dataset("digits", device="cpu").test), data)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", LOAD, data, *[d / "export" for d in dirs.values()]], cwd=tmp,
                          env=clean, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    return {name: {"dir": d, "result": json.loads((d / "result.json").read_text()), "first": first.get(name),
                   "report": json.loads((d / "export" / "sparsity.json").read_text()),
                   "loaded": loaded[str(d / "export")]} for name, d in dirs.items()}


def test_exports_reload_without_the_repository_with_the_runs_accuracy_and_sparsity(exported):
    from common.data import plain_input

    digits = plain_input("digits")
    for name, e in exported.items():
        assert e["loaded"]["acc"] == e["result"]["test_acc"], name  # on plain inputs: pixel / 16
        expected = e["report"]["input"]
        assert expected["shape"] == ["batch", 1, 8, 8] and expected["range"] == [0.0, 1.0]
        assert "load_digits().images / 16" in expected["how"]
        assert expected["normalization"]["mean"] == list(digits.mean) and digits.std[0] > 0
        assert e["report"]["format"] == "torch.export" and e["report"]["file"] == "model.pt2"
        assert e["report"]["script"] == e["result"]["script"] and e["report"]["hash"] == e["result"]["hash"]
        assert e["report"]["result"]["test_acc"] == e["result"]["test_acc"]
        if name.startswith("common.pretrain"):  # dense: nothing pruned
            assert e["loaded"]["sparsity"] == e["report"]["sparsity"] == 0.0
        elif name != "posttrain.prune":
            assert abs(e["loaded"]["sparsity"] - e["result"]["sparsity"]) < 1e-6, name
            assert abs(e["report"]["sparsity"] - e["result"]["sparsity"]) < 1e-6, name
            assert e["loaded"]["sparsity"] > 0.7
    for name in ("gmp.prune", "seqattn.prune"):  # the same prunable layers as the run's own report
        assert [x["layer"] for x in exported[name]["report"]["layers"]] == \
               [x["layer"] for x in exported[name]["result"]["layers"] if x.get("block_sparsified", True)]


def test_structured_export_is_the_physically_smaller_model(exported):
    e = exported["posttrain.prune"]
    rep, res = e["report"], e["result"]
    assert rep["structured"] and e["loaded"]["params"] == rep["params"] == res["params"]
    for key in ("flops", "dense_params", "dense_flops"):
        assert rep[key] == res[key], key
    assert rep["RP"] == pytest.approx(res["RP"], rel=1e-12) and rep["RF"] == pytest.approx(res["RF"], rel=1e-12)
    assert rep["RP"] > 1.5 and rep["sparsity"] == 0.0


def test_export_by_flag_and_by_command_write_the_same_weights(exported):
    for name, e in exported.items():
        if e["first"] is None:
            continue
        again = torch.load(e["dir"] / "export" / "state_dict.pt", weights_only=True)
        assert not any(k.startswith("model.") or k in ("mean", "std") for k in again), name  # the model's own
        assert again.keys() == e["first"].keys()
        assert all(torch.equal(again[k], e["first"][k]) for k in again), name


def test_exports_are_the_same_bytes_from_two_checkouts_and_name_neither(exported, tmp_path):
    """The same runs exported by this checkout and by a copy of the code at another path (its
    ``common/``: all an export imports): every file of the dense export and the program of a sparse one (``--layers
    all``: untimed) are byte-identical, and no file names either checkout (this one holds the virtual environment)."""
    import shutil
    import zipfile

    from tests.conftest import ROOT

    runs = [tmp_path / "runs" / name for name in ("gmp.prune", "posttrain.prune")]
    for name, run in zip(("gmp.prune", "posttrain.prune"), runs):
        shutil.copytree(exported[name]["dir"], run)
        shutil.rmtree(run / "export")
    copy = tmp_path / "another checkout"
    shutil.copytree(ROOT / "common", copy / "common", ignore=shutil.ignore_patterns("__pycache__"))
    files = {}
    both = ("import sys\nfrom common.export import main\nargs = sys.argv[1:5]\n"
            "sys.exit(main(args) or main([*args, '--format', 'csr', '--layers', 'all']))")
    for checkout in (ROOT, copy):  # both exports (dense, csr) in a fresh process of each checkout
        proc = subprocess.run([sys.executable, "-c", both, "--run", str(runs[0]), "--run", str(runs[1])],
                              cwd=checkout, capture_output=True, timeout=300, text=True,
                              env=dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1"))
        assert proc.returncode == 0, proc.stderr
        for run in runs:
            for folder, names in (("export", ("model.pt2", "state_dict.pt", "sparsity.json")),
                                  ("export-csr", ("model.json", "model.pt") if run == runs[0] else ())):
                for name in names:
                    data = (run / folder / name).read_bytes()
                    files.setdefault((run.name, folder, name), []).append(data)
                    archive = None if name.endswith(".json") else zipfile.ZipFile(io.BytesIO(data))
                    for text in [data] if archive is None else [archive.read(n) for n in archive.namelist()]:
                        for path in (ROOT, copy):  # in no record, uncompressed
                            assert str(path).encode() not in text, (run.name, folder, name, path)
    assert len(files) == 8 and all(len(v) == 2 for v in files.values())
    for key, (first, second) in files.items():
        assert first == second, key
    program = torch.export.load(runs[0] / "export" / "model.pt2")
    traces = [n.meta.get("stack_trace", "") for n in program.graph_module.graph.nodes]
    assert any('File "common/export.py"' in t for t in traces)  # kept, relative to the import root


def test_the_program_normalizes_plain_images_as_the_loaders_do(one_thread):
    from common.data import CIFAR10_MEAN, CIFAR10_STD, TensorSplit
    from common.models import build_model

    pixels = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    split = TensorSplit(pixels, torch.zeros(5, dtype=torch.long), batch_size=5, train=False, mean=CIFAR10_MEAN,
                        std=CIFAR10_STD)
    ((x, _),) = split.epoch(0)
    model = build_model("resnet8", 10, (3, 32, 32)).eval()
    with torch.no_grad():
        plain = E.PlainInputModel(model, CIFAR10_MEAN, CIFAR10_STD)(pixels.float() / 255)  # ToTensor's scaling
        assert torch.equal(plain, model(x))
        assert torch.equal(E.PlainInputModel(model)(x), model(x))  # Criteo: features go in unchanged


def test_export_flag_parses_bare_and_leaves_the_run_hash_alone():
    from gmp import prune

    plain = C.parse_args(prune.Config, [])
    flagged = C.parse_args(prune.Config, ["--export"])
    assert flagged.export is True and C.parse_args(prune.Config, ["--export", "false"]).export is False
    assert config_hash(flagged) == config_hash(plain)


class Branchy(torch.nn.Module):
    """Data-dependent control flow: torch.export refuses it."""

    def __init__(self, num_classes, input_shape):
        super().__init__()
        self.fc = torch.nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc(x) if x.sum() > -1e9 else -self.fc(x)


def test_a_model_torch_export_cannot_capture_is_written_as_its_modules(tmp_path, one_thread):
    """Its architecture (``--model tests.test_export:Branchy``, as a run names its own model) and tensors, rebuilt by
    ``load`` with its normalization; without the architecture it cannot be written."""
    from common.data import plain_input

    torch.manual_seed(0)
    plain = plain_input("digits")
    model = E.PlainInputModel(Branchy(10, (1, 8, 8)), plain.mean, plain.std).eval()
    conf = {"config": {"model": "tests.test_export:Branchy", "dataset": "digits"}}
    example = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="give its architecture"):
        E.save_program(model, example, tmp_path)
    name, fmt = E.save_program(model, example, tmp_path, E.modules_description(conf, (1, 8, 8)))
    assert (name, fmt) == ("model.json", "modules") and sorted(p.name for p in tmp_path.iterdir()) == \
        ["model.json", "model.pt"]
    (tmp_path / "sparsity.json").write_text(json.dumps({"file": name, "format": fmt}))  # as export_run completes it
    loaded = E.load(tmp_path)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert type(loaded.model).__name__ == "Branchy" and torch.equal(loaded(x), model(x))


def test_the_readmes_onnx_conversion_of_the_dense_export_gives_a_valid_onnx_model(exported, tmp_path):
    """common/README.md's two lines, on the gmp.prune run's export: ``onnx.checker`` accepts the file, whose batch
    dimension stays free."""
    import onnx

    from tests.conftest import ROOT

    lines = ("program = torch.export.load(\"runs/gmp.prune/<hash>/export/model.pt2\")",
             "torch.onnx.export(program, (x,), \"model.onnx\", dynamo=True)")
    readme = (ROOT / "common" / "README.md").read_text()
    assert all(line in readme for line in lines)
    program = torch.export.load(exported["gmp.prune"]["dir"] / "export" / "model.pt2")
    x = torch.rand(2, 1, 8, 8)
    path = tmp_path / "model.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(program, (x,), str(path), dynamo=True)
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][1:] == [1, 8, 8]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic: any batch size
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == 10


def test_bad_runs_are_one_error_line(tmp_path, capsys):
    assert E.main(["--run", str(tmp_path)]) == 2
    assert "is not a finished run (no result.json" in capsys.readouterr().err
    assert E.main(["--run", str(tmp_path / "nothing*")]) == 2
    assert "matches no directory" in capsys.readouterr().err
    runs = tmp_path / "runs"
    proc = run_main("seqattn.oneshot", "--score", "magnitude", "--sparsities", "0.9", "--finetune.epochs", "0",
                    "--pretrain.epochs", "1", "--progress", "off", "--runs-dir", runs, "--export")
    assert proc.returncode == 2 and "stores no final model (no model.pt)" in one_error_line(proc)
    run_dir = _run_dir(proc.stdout, runs)  # the run itself is done and its metrics were printed
    assert (run_dir / "result.json").exists() and not (run_dir / "export").exists()
    with pytest.raises(UserError, match="seqattn.oneshot run .* stores no final model"):
        E.export_run(run_dir)
