"""`python -m common.runs list|show|log|rm` on a small real run store: a GMP run (with the dense model it starts
from) computed with reduced epochs, and runs in every other state made with the store's own writers (a failed run,
one with a checkpoint and no result, one whose lock a live process holds, one that only has its config)."""
from __future__ import annotations

import os
import shutil
import socket

import pytest

from common import config as C
from common import pretrain
from common.atomic import atomic_write_json
from common.runs import main
from common.store import Run, RunLock, execute, read_log
from gmp import prune
from tests.conftest import one_error_line, run_cli, single_thread


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
        proc = run_cli("common.runs", *args)
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
