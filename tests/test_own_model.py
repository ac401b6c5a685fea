"""The user's own model (--model torchvision:<name> / <package.module>:<function>), own dense weights
(--dense-checkpoint FILE, --dense-weights torchvision:<Weights>) and own images (--dataset imagefolder) on every
script."""
import json

import pytest
import torch
import torch.nn as nn

from common import cli
from common import config as C
from common import pretrain
from common.errors import UserError
from common.models import build_model
from common.store import Run, config_hash
from tests.test_data import folder  # noqa: F401 - the fixture: an image folder of 3 classes

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS = (1, 8, 8)
# every script whose run starts from the dense model, with the settings that make it list that model as a dependency
DENSE_USERS = [("gmp.prune", []), ("bip.prune", []), ("bip.magnitude", ["--method", "omp"]), ("posttrain.prune", []),
               ("seqattn.oneshot", ["--score", "magnitude"])]
GIVEN_START = DENSE_USERS + [("bip.retrain", []), ("bip.rewind", []), ("seqattn.prune", [])]


def small_mlp(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """A user's own builder, named on the command line as tests.test_own_model:small_mlp."""
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], 16), nn.ReLU(),
                         nn.Linear(16, num_classes))


def config_of(script: str, argv):
    import importlib

    return C.parse_args(importlib.import_module(script).Config, list(argv))


def refused(script: str, argv, capsys) -> str:
    """Run ``script`` in this process; it must exit 2 with one ``error:`` line, which is returned."""
    assert cli.main(script, [str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def stored(runs) -> list:
    """Every run folder under ``runs`` (a refused command leaves none)."""
    return [p for p in runs.glob("*/*") if p.is_dir()] if runs.exists() else []


@pytest.fixture
def cnn_weights(tmp_path):
    """A state_dict file of the digits CNN, and the model it came from."""
    torch.manual_seed(1)
    model = build_model("cnn", 10, DIGITS)
    path = tmp_path / "cnn.pt"
    torch.save(model.state_dict(), path)
    return path, model


# ------------------------------------------------------------------------------------------------------ --model
def test_own_function_trains_and_names_the_run(runs, capsys):
    argv = ["--model", "tests.test_own_model:small_mlp", "--train.epochs", "1", "--runs-dir", runs, "--progress", "off"]
    assert cli.main("common.pretrain", [str(a) for a in argv]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_acc"] > 0.3  # one epoch of a 64-16-10 MLP on digits
    (run_dir,) = (runs / "common.pretrain").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["config"]["model"] == "tests.test_own_model:small_mlp"


@pytest.mark.parametrize("script", ["common.pretrain", "gmp.prune", "seqattn.prune", "posttrain.prune"])
@pytest.mark.parametrize("model, message", [
    ("torchvision:nonexistent", "--model torchvision:nonexistent: torchvision "),
    ("tests.no_such_module:make", "--model tests.no_such_module:make: cannot import tests.no_such_module "
                                  "(ModuleNotFoundError"),
    ("tests.test_own_model:DIGITS", "--model tests.test_own_model:DIGITS: tests.test_own_model has no function DIGITS"),
])
def test_a_model_that_cannot_be_built_is_one_line(script, model, message, runs, capsys):
    line = refused(script, ["--model", model, "--runs-dir", runs], capsys)
    assert line.startswith(f"error: {message}"), line
    assert not stored(runs)


# ------------------------------------------------------------------------------------------- --dense-checkpoint
@pytest.mark.parametrize("script, argv", DENSE_USERS)
def test_given_weights_replace_the_dense_run_as_a_dependency(script, argv, cnn_weights):
    import importlib

    module = importlib.import_module(script)
    assert [s for s, _ in module.dependencies(config_of(script, argv))] == ["common.pretrain"]
    given = config_of(script, [*argv, "--dense-checkpoint", str(cnn_weights[0])])
    assert [s for s, _ in module.dependencies(given)] == []


@pytest.mark.parametrize("script, argv", GIVEN_START)
def test_given_weights_are_keyed_by_content_and_leave_other_hashes(script, argv, tmp_path):
    default = config_of(script, argv)
    assert not {"dense_checkpoint", "dense_weights", "image_size"} & set(json.loads(C.canonical_json(default)))
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights one")
    first = config_hash(config_of(script, [*argv, "--dense-checkpoint", str(a)]))
    assert first != config_hash(default)
    assert first == config_hash(config_of(script, [*argv, "--dense-checkpoint", str(b)]))  # the bytes, not the path
    b.write_bytes(b"weights two")
    assert first != config_hash(config_of(script, [*argv, "--dense-checkpoint", str(b)]))
    published = config_of(script, [*argv, "--dense-weights", "torchvision:ResNet18_Weights.IMAGENET1K_V1"])
    assert json.loads(C.canonical_json(published))["dense_weights"] == "torchvision:ResNet18_Weights.IMAGENET1K_V1"


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"model": s, "epoch": 3},
                                  lambda s: {"state_dict": s, "step": 7}, lambda s: {"model_state_dict": s},
                                  lambda s: {f"module.{k}": v for k, v in s.items()}])
def test_start_model_reads_a_state_dict_or_a_checkpoint(wrap, cnn_weights, tmp_path):
    _, model = cnn_weights
    path = tmp_path / "given.pt"
    torch.save(wrap(model.state_dict()), path)
    cfg = config_of("gmp.prune", ["--dense-checkpoint", str(path)])
    loaded = pretrain.start_model(cfg).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_a_run_from_given_weights_prunes_them_and_trains_no_dense_model(cnn_weights, runs, capsys):
    from common.data import load_dataset
    from common.train import evaluate

    path, model = cnn_weights
    argv = ["--dense-checkpoint", path, "--epochs", "1", "--stabilize-epochs", "0", "--prune-epochs", "1",
            "--runs-dir", runs, "--progress", "off"]
    assert cli.main("gmp.prune", [str(a) for a in argv]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dense_test_acc"] == evaluate(model, load_dataset("digits").test)["acc"]
    assert result["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert sorted(p.name for p in runs.iterdir()) == ["gmp.prune"]  # no common.pretrain run


def test_sequential_attention_starts_its_training_from_given_weights(tmp_path, monkeypatch):
    from seqattn import prune

    torch.manual_seed(2)
    mlp = build_model("mlp", 10, DIGITS)
    path = tmp_path / "mlp.pt"
    torch.save(mlp.state_dict(), path)
    seen = {}
    monkeypatch.setattr(prune, "controller", lambda cfg, model, *a, **k: seen.update(model.state_dict()) or 1 / 0)
    cfg = config_of("seqattn.prune", ["--model", "mlp", "--dense-checkpoint", str(path), "--device", "cpu"])
    with pytest.raises(ZeroDivisionError):  # stopped right after the model is made, before any training
        prune.compute(cfg, Run(prune.SCRIPT, cfg, root=tmp_path / "runs"))
    assert all(torch.equal(seen[k], v) for k, v in mlp.state_dict().items())


def test_mismatched_or_foreign_files_are_one_line(cnn_weights, tmp_path, runs, capsys):
    path, _ = cnn_weights
    line = refused("gmp.prune", ["--model", "mlp", "--dense-checkpoint", path, "--runs-dir", runs], capsys)
    assert line.startswith(f"error: --dense-checkpoint {path} does not match --model mlp (for 10 classes): its "
                           f"1.weight has shape (32,), the model's (300, 64) (and "), line
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    line = refused("bip.prune", ["--dense-checkpoint", text, "--runs-dir", runs], capsys)
    assert line.startswith(f"error: --dense-checkpoint {text} is not a torch state_dict file"), line
    numbers = tmp_path / "numbers.pt"
    torch.save({"lr": 0.1, "epoch": 3}, numbers)
    line = refused("posttrain.prune", ["--dense-checkpoint", numbers, "--runs-dir", runs], capsys)
    assert line == (f"error: --dense-checkpoint {numbers} holds a dict of float, int, not a state_dict (named tensors) "
                    f"nor a checkpoint with one as its model, state_dict, model_state_dict entry")
    assert not stored(runs)


def test_posttrain_checkpoint_is_another_name_of_dense_checkpoint(cnn_weights, tmp_path, runs, capsys):
    path, _ = cnn_weights
    old = config_of("posttrain.prune", ["--checkpoint", str(path)])
    assert (old.dense_checkpoint, old.checkpoint) == (str(path), "")
    assert config_hash(old) == config_hash(config_of("posttrain.prune", ["--dense-checkpoint", str(path)]))
    other = tmp_path / "other.pt"
    other.write_bytes(path.read_bytes())
    line = refused("posttrain.prune", ["--checkpoint", path, "--dense-checkpoint", other, "--runs-dir", runs], capsys)
    assert line.startswith(f"error: --checkpoint {path} and --dense-checkpoint {other} name two files"), line


def test_rewinding_given_weights_is_refused(cnn_weights, runs, capsys):
    path, _ = cnn_weights
    line = refused("bip.magnitude", ["--rewind-epoch", "2", "--dense-checkpoint", path, "--runs-dir", runs], capsys)
    assert line == (f"error: --rewind-epoch 2 rewinds to the dense training's weights of that epoch, and "
                    f"--dense-checkpoint {path} has no training to rewind to; use --rewind-epoch none (fine-tuning)")
    line = refused("bip.rewind", ["--dense-checkpoint", path, "--runs-dir", runs], capsys)
    assert "has no dense training to rewind" in line
    assert not stored(runs)


# --------------------------------------------------------------------------------------------- --dense-weights
SHUFFLENET = "torchvision:ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1"  # a small torchvision model (0.35M weights here)


def test_published_weights_are_read_from_the_local_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("a download was tried"))
    torch.manual_seed(3)
    model = build_model("torchvision:shufflenet_v2_x0_5", 10, DIGITS)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "shufflenetv2_x0.5-f707e7126e.pth"  # the URL's file name
    cached.parent.mkdir(parents=True)
    torch.save(model.state_dict(), cached)
    cfg = config_of("gmp.prune", ["--model", "torchvision:shufflenet_v2_x0_5", "--dense-weights", SHUFFLENET])
    loaded = pretrain.start_model(cfg).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_published_weights_missing_say_where_and_how(tmp_path, monkeypatch, runs, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    argv = ["--model", "torchvision:shufflenet_v2_x0_5", "--dense-weights", SHUFFLENET, "--runs-dir", runs]
    line = refused("bip.prune", argv, capsys)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "shufflenetv2_x0.5-f707e7126e.pth"
    assert f"{expected} not found" in line and "never downloaded" in line, line
    assert "get_weight('ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1').get_state_dict()" in line
    assert not stored(runs)


@pytest.mark.parametrize("spec, message", [
    ("ResNet18_Weights.IMAGENET1K_V1", "give torchvision:<Weights>.<name>"),
    ("torchvision:ResNet18_Weights.NOPE", "publishes no such weights"),
    ("torchvision:ResNet18_Weights.DEFAULT", "not DEFAULT"),
])
def test_unusable_weight_names_are_refused(spec, message):
    with pytest.raises(UserError, match=message):
        pretrain.published_weights(spec)


# ---------------------------------------------------------------------------------------- --dataset imagefolder
def test_a_pruning_run_on_an_image_folder_trains_its_dense_model_on_it(folder, runs, capsys):  # noqa: F811
    argv = ["--dataset", "imagefolder", "--data-dir", folder, "--image-size", "8", "--model", "cnn", "--workers", "0",
            "--pretrain.epochs", "1", "--epochs", "1", "--stabilize-epochs", "0", "--prune-epochs", "1",
            "--runs-dir", runs, "--progress", "off"]
    assert cli.main("gmp.prune", [str(a) for a in argv]) == 0
    assert json.loads(capsys.readouterr().out)["sparsity"] == pytest.approx(0.9, abs=1e-3)
    (dense,) = (runs / "common.pretrain").iterdir()
    stored_config = json.loads((dense / "config.json").read_text())
    assert stored_config["config"]["image_size"] == 8 and stored_config["digests"]["dataset"].startswith(
        "imagefolder:sha256:")
