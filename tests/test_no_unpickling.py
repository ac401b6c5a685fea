"""Nothing read from a run folder, a data set or a data cache is unpickled as code. Each file a command reads is
replaced by a pickle whose loading would run code (open a marker file for writing): the command refuses it in one
line (exit 2) or, for a cache, rebuilds it, and the marker never appears."""
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from common import export as E
from common.data import load_dataset
from common.errors import UserError
from common.models import build_model
from tests.conftest import one_error_line, one_thread_pretrain, run_main


class Evil:
    """Unpickling it calls ``open(marker, "w")``: the file appears if (and only if) the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def write_evil(path, marker, how="torch") -> None:
    """A malicious file at ``path``: ``torch.save`` of the object (torch's zip format) or a bare ``pickle.dump``."""
    if how == "torch":
        torch.save({"0.weight": Evil(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(Evil(marker), f)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (the digits MLP, one epoch) to copy: its folder holds config.json, result.json and model.pt."""
    _, run = one_thread_pretrain(["--model", "mlp", "--train.epochs", "1", "--progress", "off"],
                                 tmp_path_factory.mktemp("runs"))
    return run.dir


@pytest.fixture
def copy(finished, tmp_path):
    """A copy of the finished run, as anyone who can write the (group-shared) store could make one."""
    target = tmp_path / "runs" / "common.pretrain" / finished.name
    shutil.copytree(finished, target)
    return target


def test_a_model_pt_that_would_run_code_is_refused_by_the_command(copy, tmp_path):
    marker = tmp_path / "marker"
    write_evil(copy / "model.pt", marker)
    proc = run_main("common.export", "--run", copy)
    line = one_error_line(proc)
    assert proc.returncode == 2 and f"{copy / 'model.pt'} is refused: it is not plain tensor data" in line
    assert "delete its run directory and run the script again" in line
    assert not marker.exists() and not (copy / "export" / "sparsity.json").exists()


@pytest.mark.parametrize("name,how", [("model.pt", "pickle"), ("masks.pt", "torch"), ("masks.pt", "pickle")])
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_every_file_export_reads_is_refused_if_it_would_run_code(copy, tmp_path, capsys, name, how, fmt, one_thread):
    marker = tmp_path / "marker"
    write_evil(copy / name, marker, how)
    assert E.main(["--run", str(copy), "--format", fmt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {copy / name} is refused: it is not plain tensor data"), err
    assert not marker.exists()


def test_a_torch_pruning_state_is_refused_not_unpickled(copy, capsys):
    """Torch-Pruning's ``tp.state_dict`` (what post-training runs stored before) pickles whole modules' attributes:
    reading it would mean unpickling code, so it is refused like any other such file."""
    import torch_pruning as tp

    torch.save(tp.state_dict(build_model("mlp", 10, (1, 8, 8))), copy / "model.pt")
    assert E.main(["--run", str(copy)]) == 2
    assert f"{copy / 'model.pt'} is refused: it is not plain tensor data" in capsys.readouterr().err


@pytest.mark.parametrize("name,content,message", [
    ("model.pt", [1, 2], "is not a dict of named tensors"),
    ("model.pt", {"0.weight": torch.zeros(3)}, "does not fit the run's model"),
    ("masks.pt", {"nothing.weight": torch.ones(3)}, "does not fit mlp's weights (at 'nothing.weight')"),
    ("model.pt", {"format": E.STRUCTURED_FORMAT, "layers": {"1": {"type": "Linear", "in_features": "64"}},
                  "state_dict": {}}, "is not a structurally pruned model of this architecture (the sizes of layer '1')"),
])
def test_plain_data_that_is_not_the_runs_model_is_one_error_line(copy, capsys, name, content, message):
    torch.save(content, copy / name)
    assert E.main(["--run", str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(copy / name) in err[0] and message in err[0], err


def test_a_damaged_config_json_is_one_error_line(copy, capsys):
    (copy / "config.json").write_text('{"script": "common.pretrain", "config": ')
    assert E.main(["--run", str(copy)]) == 2
    assert "config.json or result.json is damaged; delete the run directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- structured
def test_a_structured_model_is_stored_as_data_and_rebuilt_from_its_layer_sizes(tmp_path, one_thread):
    """A physically smaller model (Torch-Pruning removed channels) round-trips through ``weights_only=True``; sizes
    that do not match the tensors, or layers that do not fit together, are one-line errors."""
    from posttrain import groups as G

    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    model = build_model("cnn", 10, (1, 8, 8)).eval()
    G.plan(model, x[:1], 0.5).remove()
    path = tmp_path / "model.pt"
    torch.save(E.structured_state(model), path)
    state = torch.load(path, weights_only=True)
    rebuilt = E.load_structured(build_model("cnn", 10, (1, 8, 8)), state, path, (1, 8, 8)).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in rebuilt.parameters()) < sum(p.numel() for p in build_model("cnn", 10, (1, 8, 8))
                                                             .parameters())
    conv = next(n for n, s in state["layers"].items() if s["type"] == "Conv2d" and n != "0")
    wrong = json.loads(json.dumps(state["layers"]))
    wrong[conv]["out_channels"] += 1  # the tensors keep their shapes: the sizes lie
    with pytest.raises(UserError, match=f"the tensors of layer '{conv}' do not have its sizes"):
        E.load_structured(build_model("cnn", 10, (1, 8, 8)), {**state, "layers": wrong}, path)
    first = state["state_dict"]["0.weight"]
    apart = {**state, "state_dict": {**state["state_dict"], "0.weight": torch.zeros(first.shape[0] + 1,
                                                                                    *first.shape[1:])}}
    apart["layers"] = {**state["layers"], "0": {**state["layers"]["0"], "out_channels": first.shape[0] + 1}}
    with pytest.raises(UserError, match="its layers do not fit together"):
        E.load_structured(build_model("cnn", 10, (1, 8, 8)), apart, path, (1, 8, 8))


# ---------------------------------------------------------------------------------------------------- data
def _cifar10(root, marker, evil_name):
    """A CIFAR-10 folder in the official format (tests/test_data.py's writer) with one batch replaced by a pickle
    that would run code."""
    from tests.test_data import cifar_images, write_cifar_batch

    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    labels = np.arange(10) % 10
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_cifar_batch(base / name, cifar_images(10, labels), labels, b"labels")
    with open(base / evil_name, "wb") as f:
        pickle.dump({b"data": Evil(marker), b"labels": [0]}, f, protocol=2)
    return base / evil_name


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path, runs):
    marker = tmp_path / "marker"
    evil = _cifar10(tmp_path / "data", marker, "data_batch_3")
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", root=str(tmp_path / "data"))
    assert f"{evil} is refused: not a CIFAR python batch (it names " in str(e.value)
    assert str(e.value).split("(it names ")[1].split(";")[0] in ("io.open", "builtins.open")  # what pickle calls it
    assert "re-extract the official archive there" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    proc = run_main("common.pretrain", "--dataset", "cifar10", "--model", "resnet8", "--train.epochs", "1",
                    "--data-dir", tmp_path / "data", "--runs-dir", runs, "--progress", "off")
    assert proc.returncode == 2 and f"{evil} is refused: not a CIFAR python batch" in one_error_line(proc)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    {b"data": np.array([1, 2, 3], dtype=object), b"labels": [0]},  # an object array: Python objects, not bytes
    [b"not", b"a", b"dict"],
])
def test_a_cifar_batch_that_is_not_plain_integer_data_is_refused(tmp_path, payload):
    path = tmp_path / "test_batch"
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    from common.data import read_cifar_batch

    with pytest.raises(UserError, match="is (refused: )?not a CIFAR python batch"):
        read_cifar_batch(path)


def test_a_poisoned_criteo_cache_is_rebuilt_not_executed(tmp_path, capsys):
    from common import criteo
    from tests.test_seqattn_criteo import write_tsv

    path = write_tsv(tmp_path / "criteo" / "train.txt", n=30)
    x, y = criteo.load_tensors(path)  # parsed, then cached
    (cache,) = path.parent.glob("train.txt.*.pt")
    marker = tmp_path / "marker"
    write_evil(cache, marker)
    again = criteo.load_tensors(path)
    assert not marker.exists()
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {cache}: not a cache this code wrote (refused")
    cached = torch.load(cache, weights_only=True)  # rewritten with the parsed tensors
    assert torch.equal(cached["x"], x) and torch.equal(cached["y"], y)
    torch.save({"x": x[:, :3], "y": y}, cache)  # data, but not the parsed shapes: parsed again too
    assert torch.equal(criteo.load_tensors(path)[0], x)


def test_no_source_file_unpickles_what_it_reads():
    """A guard over the code itself: every ``torch.load`` passes ``weights_only=True``, and nothing calls
    ``pickle.load(s)``, ``weights_only=False`` or ``np.load(..., allow_pickle=True)`` (the CIFAR reader's
    unpickler resolves its own handful of names)."""
    import re

    from tests.conftest import ROOT

    found = []
    for folder in ("common", "bip", "gmp", "seqattn", "posttrain", "figures", "slurm"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for call in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
                if "weights_only=True" not in call.group(0):
                    found.append(f"{path.relative_to(ROOT)}: {call.group(0)}")
            found += [f"{path.relative_to(ROOT)}: {bad}" for bad in
                      ("pickle.load(", "pickle.loads(", "weights_only=False", "allow_pickle=True",
                       "DelayedSubmission.load(") if bad in text]
            # a submitit job's result, results and exception are unpickled from its log folder
            found += [f"{path.relative_to(ROOT)}: {m.group(0)}"
                      for m in re.finditer(r"\bjobs?\w*\.(result|results|exception)\(\)", text)]
    assert len(found) == 0, found
    assert "weights_only=True" in (ROOT / "common" / "export.py").read_text()  # the scan sees the code


def test_a_failed_slurm_jobs_reason_is_read_from_its_text_log_not_its_result_pickle(tmp_path):
    """submitit records a job's error as a pickle in the (possibly shared) log folder: the reason a failed job is
    reported with comes from the text of its stderr log, and a poisoned result pickle beside it never runs."""
    from types import SimpleNamespace

    from slurm.submit import reason

    marker = tmp_path / "marker"
    write_evil(tmp_path / "42_0_result.pkl", marker, how="pickle")
    log = tmp_path / "42_0_log.err"
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "common.errors.RunFailed: the loss diverged at epoch 3\nsrun: error: task 0 exited\n")
    job = SimpleNamespace(paths=SimpleNamespace(stderr=log, result_pickle=tmp_path / "42_0_result.pkl"))
    assert reason(job) == "common.errors.RunFailed: the loss diverged at epoch 3"
    assert not marker.exists()
    log.unlink()
    assert reason(job).startswith("ended without a result (no log at") and not marker.exists()
