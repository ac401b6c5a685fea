"""Long runs: checkpoints within an epoch and exact resumes from them, rewinding snapshots kept by the dense run,
--deterministic, and restoring the RNG on fewer GPUs."""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from common import config as C
from common import store
from common import train as T
from common.store import Run, execute
from tests.conftest import ROOT, one_error_line, one_thread_pretrain, run_main


class Killed(Exception):
    """Stands in for SIGKILL: raised right after a chosen checkpoint is written, so nothing after it happens."""


def _runs_equal(straight, broken, scripts):
    for script in scripts:
        (a,), (b,) = list((straight / script).iterdir()), list((broken / script).iterdir())
        assert a.name == b.name, script
        if (a / "model.pt").exists():
            wa, wb = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
            assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), script
        ra, rb = (json.loads((p / "result.json").read_text()) for p in (a, b))
        drop = ("wall_time", "run_time", "method_time")
        clean = lambda r: {k: ([{q: w for q, w in p.items() if q not in drop} for p in v] if k == "points" else v)  # noqa: E731
                           for k, v in r.items() if k not in drop}
        assert clean(ra) == clean(rb), script
        la = [{k: v for k, v in r.items() if k not in ("time", "method_time")} for r in store.read_log(a)]
        lb = [{k: v for k, v in r.items() if k not in ("time", "method_time")} for r in store.read_log(b)]
        assert la == [r for r in lb if r.get("event") != "resume"], script


def _compute(module, args, runs_dir):
    cfg = C.parse_args(module.Config, [*args, "--device", "cpu", "--progress", "off", "--runs-dir", str(runs_dir)])
    return execute(module, cfg), cfg


def _broken(monkeypatch, module, args, runs_dir, kills):
    """Compute the run, 'killed' right after its checkpoints number ``kills`` (counted over all attempts), resuming
    each time; returns the resume records of the run's log."""
    saved = [0]
    save = store.Run.save_checkpoint

    def killing(self, state):
        save(self, state)
        saved[0] += 1
        if saved[0] in kills:
            raise Killed(saved[0])

    monkeypatch.setattr(store.Run, "save_checkpoint", killing)
    for _ in range(len(kills) + 1):
        try:
            _, cfg = _compute(module, args, runs_dir)
            break
        except Killed:
            continue
    monkeypatch.setattr(store.Run, "save_checkpoint", save)
    assert saved[0] > max(kills), "the run ended before its last kill"
    return [r for r in store.read_log(Run(module.SCRIPT, cfg).dir) if r.get("event") == "resume"]


# digits: 1437 training samples, 12 batches of 128 per epoch; a checkpoint every 5 batches and at every epoch end
# (the end's time gate at 0): 3 per epoch (5, 10, end)
EVERY = ["--checkpoint-every-steps", "5", "--checkpoint-epoch-minutes", "0"]
CASES = {
    # kills within epochs and at their ends (pretrain and the pruning loops through train_epoch)
    "gmp.prune": (["--model", "mlp", "--pretrain.epochs", "2", "--epochs", "4", "--stabilize-epochs", "1",
                   "--prune-epochs", "2", "--update-every", "0.25"], [2, 10, 11, 16]),
    "seqattn.prune": (["--epochs", "3", "--mask-every", "4"], [1, 4, 8]),
    "bip.magnitude": (["--pretrain.epochs", "2", "--epochs", "1", "--target-sparsity", "0.5", "--rewind-epoch", "1"],
                      [5, 8, 10]),
    # BiP's own bi-level loop: the dense model's 6 checkpoints, then within BiP's epochs 1 and 2
    "bip.prune": (["--pretrain.epochs", "2", "--epochs", "2", "--target-sparsity", "0.5"], [2, 7, 11]),
    # the dense+attention epochs, within a fine-tuning, between two of its epochs, between two points
    "seqattn.oneshot": (["--pretrain.epochs", "2", "--finetune.epochs", "2", "--sparsities", "0.5,0.9"],
                        [2, 8, 9, 12, 14]),
}


@pytest.mark.parametrize("script", CASES)
def test_a_run_killed_within_epochs_resumes_to_the_uninterrupted_run_bitwise(script, tmp_path, monkeypatch,
                                                                            one_thread):
    module = importlib.import_module(script)
    args, kills = CASES[script]
    _compute(module, args, tmp_path / "straight")              # epoch checkpoints only (the default's 30 minutes)
    resumes = _broken(monkeypatch, module, [*args, *EVERY], tmp_path / "broken", kills)
    assert any("from_step" in r for r in resumes), resumes      # some resumed within an epoch
    scripts = [p.name for p in (tmp_path / "straight").iterdir()]
    _runs_equal(tmp_path / "straight", tmp_path / "broken", scripts)


def test_oneshot_magnitude_fine_tuning_resumes(tmp_path, monkeypatch, one_thread):
    from seqattn import oneshot

    args = ["--score", "magnitude", "--pretrain.epochs", "2", "--finetune.epochs", "2", "--sparsities", "0.5,0.9"]
    _compute(oneshot, args, tmp_path / "straight")
    _compute(importlib.import_module("common.pretrain"), ["--model", "mlp", "--train.epochs", "2"], tmp_path / "broken")
    resumes = _broken(monkeypatch, oneshot, [*args, *EVERY], tmp_path / "broken", [2, 3, 6])
    assert [r.get("from_step") for r in resumes] == [10, None, None]
    _runs_equal(tmp_path / "straight", tmp_path / "broken", ["seqattn.oneshot", "common.pretrain"])


def test_sigkilled_within_an_epoch_resumes_exactly(tmp_path):
    """A real SIGKILL once a checkpoint within an epoch is on disk; the resumed run equals an unbroken one."""
    args = ["common.pretrain", "--model", "cnn", "--train.epochs", "3", "--progress", "off", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    one_thread_pretrain(args[1:], tmp_path / "straight")  # unbroken, in this process on one thread as the job
    broken = tmp_path / "broken"
    proc = subprocess.Popen([sys.executable, "-m", *args, "--checkpoint-every-steps", "1", "--runs-dir", str(broken)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(broken.glob("common.pretrain/*/checkpoint.pt"))
        try:
            ckpt = torch.load(ckpts[0], weights_only=True) if ckpts else {}
        except Exception:  # noqa: BLE001 - replaced while read: look again
            ckpt = {}
        if ckpt.get("epoch") == 1 and ckpt.get("step", 0) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = run_main(*args, "--runs-dir", broken)  # resumed from what the killed process left on disk
    assert done.returncode == 0, done.stderr
    assert "resuming from batch" in done.stderr
    _runs_equal(tmp_path / "straight", broken, ["common.pretrain"])


@pytest.mark.parametrize("flag", ["--checkpoint-every-minutes", "--checkpoint-every-steps"])
def test_negative_checkpoint_interval_is_one_error_line(flag, tmp_path):
    proc = run_main("common.pretrain", "--model", "mlp", "--train.epochs", "1", flag, "-1", "--runs-dir", tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == f"error: {flag} -1{'.0' if 'minutes' in flag else ''} must be >= 0 (0: off)"


def test_a_timed_checkpoint_falls_due_after_its_minutes(monkeypatch):
    loop = T.resumable_epochs(type("R", (), {"cfg": type("Cfg", (), {"checkpoint_every_minutes": 2.0})()})(), 1, {})
    clock = [loop.last]
    monkeypatch.setattr(T.time, "monotonic", lambda: clock[0])
    assert not loop.due(7)
    clock[0] += 119
    assert not loop.due(8)
    clock[0] += 2
    assert loop.due(9)


def test_epoch_end_checkpoints_wait_for_their_minutes(monkeypatch):
    class Fake:  # a run that records the epochs it checkpoints
        def __init__(self, minutes):
            self.cfg, self.saved = type("Cfg", (), {"checkpoint_epoch_minutes": minutes})(), []

        def load_checkpoint(self):
            return None

        def save_checkpoint(self, state):
            self.saved.append(state["epoch"])

    clock = [0.0]
    monkeypatch.setattr(T.time, "monotonic", lambda: clock[0])
    for minutes, saved in ((10.0, [3, 6]), (0.0, [1, 2, 3, 4, 5, 6])):
        run = Fake(minutes)
        for _ in T.resumable_epochs(run, 6, {"model": torch.nn.Linear(1, 1)}):
            clock[0] += 4 * 60  # a 4-minute epoch
        assert run.saved == saved, minutes
    from common.cli import Runtime
    assert Runtime().checkpoint_epoch_minutes == 10.0 and not Runtime().keep_checkpoint


def test_a_finished_tiny_run_has_no_checkpoint_unless_kept(tmp_path, one_thread):
    from common import pretrain

    args = ["--model", "mlp", "--train.epochs", "2", "--checkpoint-epoch-minutes", "0"]
    _, cfg = _compute(pretrain, args, tmp_path)
    run = Run(pretrain.SCRIPT, cfg)
    assert run.done and not list(run.dir.glob("checkpoint*"))
    _, kept = _compute(pretrain, [*args, "--keep-checkpoint"], tmp_path / "kept")
    again = Run(pretrain.SCRIPT, kept)
    assert again.hash == run.hash and again.checkpoint_path.exists() and not list(again.dir.glob("checkpoint.prev*"))


def test_a_stop_signal_checkpoints_at_the_next_step_and_the_run_resumes_exactly(tmp_path, monkeypatch, one_thread):
    """A Slurm job's time-limit warning (USR2) mid-epoch: the run checkpoints after the step under way and stops;
    resumed, it equals the uninterrupted run."""
    from common import pretrain
    from slurm.jobs import Job

    args = ["--model", "mlp", "--train.epochs", "3"]
    _compute(pretrain, args, tmp_path / "straight")
    steps, set_lr = [0], T.set_lr

    def warned_at_step_18(optimizer, lr):  # epoch 2, batch 6 of 12
        steps[0] += 1
        if steps[0] == 18:
            os.kill(os.getpid(), signal.SIGUSR2)
        set_lr(optimizer, lr)

    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGALRM)}
    monkeypatch.setattr(T, "set_lr", warned_at_step_18)
    try:
        Job(pretrain.SCRIPT, None).catch_stop_signals()
        with pytest.raises(T.Stopped):
            _compute(pretrain, args, tmp_path / "broken")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        T.clear_stop()
    monkeypatch.undo()
    (ckpt,) = (tmp_path / "broken").glob("common.pretrain/*/checkpoint.pt")
    state = torch.load(ckpt, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 6)  # the only checkpoint: epoch 1's end is within its 10 minutes
    assert not (ckpt.parent / store.PREVIOUS_CHECKPOINT).exists()
    _compute(pretrain, args, tmp_path / "broken")
    resumes = [r for r in store.read_log(ckpt.parent) if r.get("event") == "resume"]
    assert [(r["from_epoch"], r["from_step"]) for r in resumes] == [(1, 6)]
    _runs_equal(tmp_path / "straight", tmp_path / "broken", ["common.pretrain"])


# ---------------------------------------------------------------------------------------------------- rewinding
def test_rewind_copies_the_dense_runs_snapshot_and_replays_only_without_one(tmp_path, one_thread, capsys):
    from bip import rewind
    from common import pretrain

    dense = ["--model", "mlp", "--train.epochs", "8"]
    _, dcfg = _compute(pretrain, dense, tmp_path / "a")
    ddir = Run(pretrain.SCRIPT, dcfg).dir
    # kept: the initialization, epochs 1, 2 and the figures' fractions (5, 10, 50, 75% of 8: 0, 1, 4, 6)
    assert sorted(p.name for p in (ddir / "snapshots").iterdir()) == [f"epoch{k}.pt" for k in (0, 1, 2, 4, 6)]
    rw = ["--model", "mlp", "--pretrain.epochs", "8"]
    _, rcfg = _compute(rewind, [*rw, "--epoch", "4"], tmp_path / "a")
    rdir = Run(rewind.SCRIPT, rcfg).dir
    assert (rdir / "model.pt").read_bytes() == (ddir / "snapshots" / "epoch4.pt").read_bytes()
    assert [r["source"] for r in store.read_log(rdir)] == ["snapshots/epoch4.pt"]
    # epoch 3 is not kept by a dense run computed without asking for it: a replay (exact on CPU) ...
    _, rcfg = _compute(rewind, [*rw, "--epoch", "3"], tmp_path / "a")
    assert "replaying its training to that epoch" in capsys.readouterr().err
    replay = torch.load(Run(rewind.SCRIPT, rcfg).dir / "model.pt", weights_only=True)
    # ... equal to the weights the dense run keeps when the rewind computes it (same run: same hash)
    _, rcfg = _compute(rewind, [*rw, "--epoch", "3"], tmp_path / "b")
    bdir = Run(pretrain.SCRIPT, pretrain.dense_config(rcfg, keep=(3,))).dir
    assert bdir.name == ddir.name and (bdir / "snapshots" / "epoch3.pt").exists()
    kept = torch.load(bdir / "snapshots" / "epoch3.pt", weights_only=True)
    assert all(torch.equal(replay[k], kept[k]) for k in kept)
    assert "replaying" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- determinism
def test_deterministic_sets_and_unsets_the_process_settings(tmp_path, one_thread):
    from common import pretrain

    args = ["--model", "mlp", "--train.epochs", "1"]
    plain, _ = _compute(pretrain, args, tmp_path / "plain")
    try:
        exact, _ = _compute(pretrain, [*args, "--deterministic"], tmp_path / "exact")
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == T.CUBLAS_WORKSPACE
    finally:
        T.set_deterministic(False)
    assert exact["test_loss"] == plain["test_loss"]  # on CPU nothing changes
    _compute(pretrain, [*args, "--train.lr", "0.01"], tmp_path / "plain")
    assert not torch.are_deterministic_algorithms_enabled()


def test_an_operation_deterministic_mode_cannot_honour_is_one_error_line(capsys):
    import warnings

    from common.cli import exit_code
    from common.data import TensorSplit

    class Alerting(torch.nn.Linear):  # what torch does (warn_only) on an op without a deterministic implementation
        op = ""

        def forward(self, x):
            warnings.warn(f"{self.op} does not have a deterministic implementation, but you set "
                          f"'torch.use_deterministic_algorithms(True, warn_only=True)'")
            return super().forward(x)

    model = Alerting(4, 3)
    split = TensorSplit(torch.zeros(8, 4), torch.zeros(8, dtype=torch.long), batch_size=4, train=True)
    epoch = lambda: T.train_epoch(model, split, 0, torch.optim.SGD(model.parameters(), lr=0.1),  # noqa: E731
                                  lr_of_step=lambda s: 0.1, first_step=0)
    T.set_deterministic(True)
    try:
        model.op = "index_add_cuda_"
        assert exit_code(epoch) == 2
        assert capsys.readouterr().err.strip() == (
            f"error: --deterministic cannot be honoured: index_add_cuda_ has no deterministic implementation in torch "
            f"{torch.__version__}; run without --deterministic")
        model.op = "adaptive_avg_pool2d_backward_cuda"  # flagged by torch, deterministic for a 1x1 global pool
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert epoch()["steps"] == 2
    finally:
        T.set_deterministic(False)
    model.op = "index_add_cuda_"
    with pytest.warns(UserWarning, match="index_add_cuda_ does not have"):  # not asked for: torch's own warning
        epoch()


def test_rng_restores_only_the_gpus_present(monkeypatch):
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((int(state[0]), device)))
    cpu = torch.get_rng_state()
    T.set_rng_state({"torch": cpu, "cuda": [torch.tensor([i], dtype=torch.uint8) for i in (7, 8, 9, 10)]})
    assert restored == [(7, 0), (8, 1)]   # a checkpoint of a 4-GPU job, resumed on 2
