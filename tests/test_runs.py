"""`python -m common.runs list|show|log|rm` on a small real run store: a GMP run (with the dense model it starts
from) computed with reduced epochs, and runs in every other state made with the store's own writers (a failed run,
one with a checkpoint and no result, one whose lock a live process holds, one that only has its config)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys

import numpy as np
import pytest

from common import config as C
from common import pretrain
from common.atomic import atomic_write_json
from common.runs import main, scalars
from common.store import Run, RunLock, config_hash, execute, read_log
from gmp import prune
from tests.conftest import one_error_line, run_main, single_thread


def gmp_config(runs_dir, **changes):
    return C.build(prune.Config, None, None, model="mlp", exclude=("last",), epochs=3, stabilize_epochs=1,
                   prune_epochs=1, runs_dir=str(runs_dir), progress="off", device="cpu",
                   **{"pretrain.epochs": 2, "finetune_lr.milestones": (), **changes})


def started(script: str, cfg) -> Run:
    """A run directory as ``execute`` leaves it right after it starts: its config, nothing else."""
    run = Run(script, cfg)
    run.dir.mkdir(parents=True)
    atomic_write_json(run.dir / "config.json", {"script": script, "config": C.to_dict(cfg, True)})
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """{name: Run} of a store holding a run in every state; the lock of ``locked`` is held by this process."""
    root = tmp_path_factory.mktemp("store") / "runs"
    with single_thread():
        done = gmp_config(root, target_sparsity=0.5)
        execute(prune, done)
    [(dense_script, dense)] = prune.dependencies(done)
    runs = {"done": Run(prune.SCRIPT, done), "dense": Run(dense_script, dense)}
    runs["failed"] = started(prune.SCRIPT, gmp_config(root, target_sparsity=0.9))
    runs["failed"].fail("training loss is NaN at epoch 2")
    runs["in progress"] = started(prune.SCRIPT, gmp_config(root, target_sparsity=0.9, seed=1))
    runs["in progress"].save_checkpoint({"epoch": 1})
    runs["locked"] = started(prune.SCRIPT, gmp_config(root, target_sparsity=0.9, seed=2))
    runs["started"] = started(prune.SCRIPT, gmp_config(root, method="oneshot"))
    lock = RunLock(runs["locked"].dir / "lock")
    assert lock.acquire()
    yield runs
    lock.release()


def cli(capsys, *args):
    """(exit status, stdout, stderr) of ``python -m common.runs ARGS`` run in this process."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_each_run_with_its_status(store, capsys):
    root = store["done"].root
    code, out, _ = cli(capsys, "list", "--runs-dir", root)
    assert code == 0
    lines = {ln.split()[1]: ln for ln in out.splitlines()[:-1]}
    assert set(lines) == {r.hash for r in store.values()}
    done = lines[store["done"].hash]
    assert done.split()[:3] == [prune.SCRIPT, store["done"].hash, "done"]
    assert str(store["done"].dir) in done
    for metric in ("test_acc", "sparsity 0.5", "wall_time"):
        assert metric in done
    assert "done" in lines[store["dense"].hash] and "test_acc" in lines[store["dense"].hash]
    assert "failed" in lines[store["failed"].hash] and "training loss is NaN at epoch 2" in lines[store["failed"].hash]
    assert "in progress" in lines[store["in progress"].hash] and "checkpoint" in lines[store["in progress"].hash]
    locked = lines[store["locked"].hash]
    assert "locked" in locked and f"host {socket.gethostname()} pid {os.getpid()}" in locked
    assert "started" in lines[store["started"].hash]
    assert out.splitlines()[-1] == "6 runs: 2 done, 1 locked, 1 in progress, 1 failed, 1 started"


def test_list_selects_by_script_and_config_fields(store, capsys):
    root = store["done"].root
    code, out, _ = cli(capsys, "list", "--runs-dir", root, "--script", pretrain.SCRIPT)
    assert code == 0 and out.splitlines()[-1] == "1 run: 1 done" and store["dense"].hash in out
    code, out, _ = cli(capsys, "list", "--runs-dir", root, "--where", "method=gmp", "--where", "target_sparsity=0.9")
    assert code == 0
    assert {ln.split()[1] for ln in out.splitlines()[:-1]} == {store[k].hash for k in ("failed", "in progress",
                                                                                          "locked")}
    code, out, _ = cli(capsys, "list", "--runs-dir", root, "--where", "seed=1", "--where", "exclude=last",
                       "--where", "pretrain.epochs=2", "--where", "finetune_weight_decay=None")
    assert code == 0 and out.splitlines()[-1] == "1 run: 1 in progress"


@pytest.mark.parametrize("args, message", [
    (("--where", "seed=7"), "no run in"),
    (("--where", "nonsense=1"), "no run here has the config field 'nonsense'"),
    (("--where", "seed"), "FIELD=VALUE"),
    (("--script", "no.such"), "no run in"),
])
def test_list_of_nothing_is_one_error_line(store, capsys, args, message):
    code, out, err = cli(capsys, "list", "--runs-dir", store["done"].root, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_show_prints_config_and_result_by_hash_prefix_or_directory(store, capsys):
    run = store["done"]
    for target in (run.hash, run.hash[:6], run.dir):
        code, out, _ = cli(capsys, "show", "--runs-dir", run.root, target)
        assert code == 0
        assert out.startswith(f"{prune.SCRIPT} {run.hash}  done")
        assert '"target_sparsity": 0.5' in out and "result:" in out and f'"test_acc": {run.result()["test_acc"]}' in out
    code, out, _ = cli(capsys, "show", "--runs-dir", run.root, store["failed"].hash)
    assert code == 0 and "failed (training loss is NaN at epoch 2)" in out and "result:" not in out


def commands(out: str) -> list[list[str]]:
    """The commands ``show`` printed to reproduce a run, each as its argv."""
    return [shlex.split(ln.split(": ", 1)[1]) for ln in out.splitlines()
            if ln.startswith(("reproduce: ", "       or: "))]


def test_show_prints_commands_that_reproduce_the_run(store, capsys, tmp_path):
    run = store["done"]
    code, out, _ = cli(capsys, "show", "--runs-dir", run.root, run.hash)
    assert code == 0
    flags, from_file = commands(out)
    assert flags[:3] == ["python", "-m", prune.SCRIPT] and dict(zip(flags[3::2], flags[4::2])) == {
        "--model": "mlp", "--exclude": "last", "--pretrain.epochs": "2", "--target-sparsity": "0.5", "--epochs": "3",
        "--prune-epochs": "1", "--finetune-lr.milestones": ""}
    assert from_file == ["python", "-m", prune.SCRIPT, "--config", str(run.dir / "config.json")]
    for argv in (flags, from_file):
        assert config_hash(C.parse_args(prune.Config, argv[3:], presets=prune.PRESETS)) == run.hash

    dense = store["dense"]  # the command run as a user runs it (the dense model: the quicker to compute)
    code, out, _ = cli(capsys, "show", "--runs-dir", dense.root, dense.hash)
    flags = commands(out)[0]
    assert code == 0 and flags[:3] == ["python", "-m", pretrain.SCRIPT] and "--config" not in flags
    proc = run_main(*flags[2:], "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hash"] == dense.hash and (tmp_path / "runs" / pretrain.SCRIPT / dense.hash).is_dir()


def test_show_reproduces_a_run_built_from_a_preset_or_only_from_its_config(capsys, tmp_path):
    """A run whose config sets a field its method ignores (as a profile's rows built from a preset may), which the
    command line refuses as a flag: a preset that sets it gives it, and where none does only its config.json can."""
    root = tmp_path / "runs"
    from_preset = started(prune.SCRIPT, C.build(prune.Config, prune.PRESETS, "imagenet-resnet50", method="oneshot",
                                                seed=3, runs_dir=str(root)))  # the preset's --update-every 0.4
    code, out, _ = cli(capsys, "show", "--runs-dir", root, from_preset.hash)
    assert code == 0
    assert commands(out)[0] == ["python", "-m", prune.SCRIPT, "--preset", "imagenet-resnet50", "--seed", "3",
                                "--method", "oneshot"]
    assert config_hash(C.parse_args(prune.Config, commands(out)[0][3:], presets=prune.PRESETS)) == from_preset.hash

    ignored = started(prune.SCRIPT, gmp_config(root, method="oneshot", update_every=2.0))
    code, out, _ = cli(capsys, "show", "--runs-dir", root, ignored.hash)
    assert code == 0 and commands(out) == [["python", "-m", prune.SCRIPT, "--config", str(ignored.dir / "config.json")]]
    assert (f"(flags alone cannot give run {ignored.hash}: --update-every 2.0 does not apply to --method oneshot (it "
            "is used with --method gmp only))") in out


def test_log_prints_one_record_per_line(store, capsys):
    run = store["done"]
    code, out, _ = cli(capsys, "log", "--runs-dir", run.root, run.hash)
    records = read_log(run.dir)
    assert code == 0 and len(out.splitlines()) == len(records) > 3
    epoch = next(i for i, r in enumerate(records) if "epoch" in r)
    assert out.splitlines()[epoch].startswith(f"epoch {records[epoch]['epoch']}  ")
    assert "train_loss" in out.splitlines()[epoch]


def test_a_bad_run_name_is_one_error_line(store, tmp_path):
    root = store["done"].root
    twins = tmp_path / "runs" / prune.SCRIPT
    for name in ("abcd000000000000", "abcd111111111111"):
        shutil.copytree(store["started"].dir, twins / name)
    for args, message in ((("show", "0123456789abcdef", "--runs-dir", root), "no run 0123456789abcdef in"),
                          (("log", "xyz", "--runs-dir", root), "neither a run directory nor a run's hash"),
                          (("log", store["started"].hash, "--runs-dir", root), "has no log.jsonl"),
                          (("show", "abcd", "--runs-dir", tmp_path / "runs"), "starts the hashes of 2 runs")):
        proc = run_main("common.runs", *args)
        assert proc.returncode == 2 and message in one_error_line(proc), proc.stderr


def test_rm_asks_and_never_removes_a_run_a_live_process_computes(store, tmp_path, capsys, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(store["done"].root, root)  # the copy of the held lock names this live process too
    failed, locked = (root / prune.SCRIPT / store[k].hash for k in ("failed", "locked"))
    code, _, err = cli(capsys, "rm", "--runs-dir", root, "--where", "target_sparsity=0.9", "--yes")
    assert code == 2 and "is being computed by host" in err and "nothing removed" in err
    assert failed.is_dir() and locked.is_dir()
    code, _, err = cli(capsys, "rm", "--runs-dir", root)
    assert code == 2 and "rm needs the runs to remove" in err

    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    code, out, _ = cli(capsys, "rm", "--runs-dir", root, store["failed"].hash)
    assert code == 1 and "nothing removed" in out and failed.is_dir()
    code, out, _ = cli(capsys, "rm", "--runs-dir", root, store["failed"].hash[:8])
    assert code == 0 and "removed 1 run(s)" in out and not failed.exists()

    code, out, _ = cli(capsys, "rm", "--runs-dir", root, "--script", pretrain.SCRIPT, "--yes")
    assert code == 0 and not (root / pretrain.SCRIPT / store["dense"].hash).exists()
    assert (root / prune.SCRIPT / store["done"].hash).is_dir() and locked.is_dir()
    code, _, err = cli(capsys, "rm", "--runs-dir", root, "--script", pretrain.SCRIPT, "--yes")
    assert code == 2 and "no run in" in err


# ------------------------------------------------------------------------------------------------ tensorboard
def test_scalars_tag_each_kind_of_record_by_its_own_step():
    records = [{"event": "start", "time": 0.1},
               {"epoch": 1, "step": 10, "stage": "prune", "train_loss": 0.5, "time": 1.0},
               {"event": "prune", "step": 10, "sparsity": 0.5, "layer_sparsity": {"fc.weight": 0.4}, "done": True},
               {"epoch": 2, "step": 20, "train_loss": 0.25, "time": 2.0},
               {"phase": "phase2", "epoch": 1, "rec_loss": 0.1} | {"event": "phase"},
               {"phase": "phase2", "epoch": 1, "rec_loss": 0.05} | {"event": "phase"}]
    assert scalars(records) == [
        ("start/time", 1, 0.1),
        ("epoch/epoch", 10, 1.0), ("epoch/train_loss", 10, 0.5), ("epoch/time", 10, 1.0),
        ("epoch/epoch", 20, 2.0), ("epoch/train_loss", 20, 0.25), ("epoch/time", 20, 2.0),
        ("prune/sparsity", 10, 0.5), ("prune/layer_sparsity.fc.weight", 10, 0.4),
        ("phase/epoch", 1, 1.0), ("phase/rec_loss", 1, 0.1), ("phase/epoch", 2, 1.0), ("phase/rec_loss", 2, 0.05)]


def test_tensorboard_writes_the_logged_scalars(store, capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = store["done"]
    code, out, _ = cli(capsys, "tensorboard", "--runs-dir", run.root, run.hash, "--out", tmp_path / "tb")
    assert code == 0 and out.splitlines()[-1] == f"view them: tensorboard --logdir {tmp_path / 'tb'}"
    events = EventAccumulator(str(tmp_path / "tb" / prune.SCRIPT / run.hash))
    events.Reload()
    read = sorted((tag, e.step, e.value) for tag in events.Tags()["scalars"] for e in events.Scalars(tag))
    expected = scalars(read_log(run.dir))
    assert len(expected) > 10 and read == sorted((t, s, float(np.float32(v))) for t, s, v in expected)  # as float32
    assert any(tag == "epoch/train_loss" for tag, _, _ in expected)
    code, _, _ = cli(capsys, "tensorboard", "--runs-dir", run.root, run.hash, "--out", tmp_path / "tb")
    assert code == 0 and len(list((tmp_path / "tb" / prune.SCRIPT / run.hash).iterdir())) == 1  # replaced, not added


def test_tensorboard_refusals_are_one_line(store, capsys, tmp_path, monkeypatch):
    run = store["done"]
    (tmp_path / "file").write_text("")
    code, _, err = cli(capsys, "tensorboard", "--runs-dir", run.root, "--out", tmp_path / "tb")
    assert code == 2 and err == "error: tensorboard needs the runs to convert: hashes or directories, --script or " \
                                "--where\n"
    code, _, err = cli(capsys, "tensorboard", "--runs-dir", run.root, run.hash, "--out", tmp_path / "file" / "tb")
    assert code == 2 and err.startswith(f"error: --out {tmp_path / 'file' / 'tb'}: cannot write") and \
        len(err.splitlines()) == 1
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where tensorboard is not installed
    code, _, err = cli(capsys, "tensorboard", "--runs-dir", run.root, run.hash, "--out", tmp_path / "tb")
    assert code == 2 and err == "error: writing TensorBoard event files needs the tensorboard package, which is not " \
                                "installed: pip install tensorboard\n"
