import importlib.metadata
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from common import config as C
from common import store
from common.data import process_cpus
from common.errors import Diverged, UserError
from slurm import snapshot
from tests.conftest import ROOT, one_error_line, run_main, single_thread


@dataclass
class Cfg:
    x: int = C.opt(1, "a number")
    runs_dir: str = C.opt("runs", "store", hash=False)
    keep_checkpoint: bool = C.opt(False, "keep the checkpoint of a finished run", hash=False)


class Script:
    """A fake script module: counts how often it really computes."""

    SCRIPT = "fake.script"
    calls = 0

    @classmethod
    def compute(cls, cfg, run):
        cls.calls += 1
        run.log(epoch=1, value=cfg.x)
        return {"value": cfg.x * 10, "points": [{"round": 1, "acc": 0.5}, {"round": 2, "acc": 0.7}]}


def test_done_runs_are_not_recomputed_and_results_are_atomic(tmp_path):
    Script.calls = 0
    cfg = Cfg(x=3, runs_dir=str(tmp_path))
    first = store.execute(Script, cfg)
    again = store.execute(Script, cfg)
    assert Script.calls == 1 and first == again and first["value"] == 30
    run = store.Run(Script.SCRIPT, cfg)
    assert run.dir == tmp_path / "fake.script" / store.config_hash(cfg)
    assert json.loads((run.dir / "config.json").read_text())["config"] == {"x": 3}
    assert not list(run.dir.glob(".*"))  # no temporary file left behind
    assert store.read_log(run.dir)[0]["value"] == 3


def test_collect_gives_one_row_per_point(tmp_path):
    for x in (1, 2):
        store.execute(Script, Cfg(x=x, runs_dir=str(tmp_path)))
    df = store.collect(tmp_path)
    assert len(df) == 4
    assert {"script", "hash", "run_dir", "config.x", "value", "round", "acc", "wall_time"} <= set(df.columns)
    assert sorted(df.groupby("config.x")["value"].first()) == [10, 20]


def test_failed_run_is_recorded_not_done(tmp_path):
    class Bad(Script):
        @staticmethod
        def compute(cfg, run):
            raise Diverged("training loss became nan in epoch 1")

    cfg = Cfg(runs_dir=str(tmp_path))
    with pytest.raises(Diverged):
        store.execute(Bad, cfg)
    run = store.Run(Bad.SCRIPT, cfg)
    assert not run.done and "nan" in json.loads((run.dir / "failed.json").read_text())["reason"]


def test_corrupt_checkpoint_restarts_with_a_warning(tmp_path, capsys):
    run = store.Run("fake.script", Cfg(runs_dir=str(tmp_path)))
    run.dir.mkdir(parents=True)
    run.save_checkpoint({"epoch": 3})
    data = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(data[: len(data) // 2])  # truncated
    assert store.Run("fake.script", Cfg(runs_dir=str(tmp_path))).load_checkpoint() is None
    assert "corrupt or truncated" in capsys.readouterr().err
    assert not run.checkpoint_path.exists()
    run.checkpoint_path.write_bytes(b"garbage")
    assert run.load_checkpoint() is None
    assert capsys.readouterr().err.endswith("restarting this run from scratch\n")


def test_lock_makes_the_second_process_wait_and_reuse(tmp_path):
    events = []

    class Slow(Script):
        @staticmethod
        def compute(cfg, run):
            events.append("start")
            time.sleep(0.5)
            events.append("end")
            return {"value": 1}

    cfg = Cfg(runs_dir=str(tmp_path))
    threads = [threading.Thread(target=store.execute, args=(Slow, cfg)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["start", "end"]  # computed once; the other caller waited and read the result


# ---------------------------------------------------------------------------------------------------- the lock
HOLD = """
import sys, time
from pathlib import Path
from common.store import Run
from tests.test_store import Cfg
with Run("fake.script", Cfg(runs_dir=sys.argv[1])).lock():
    print("held", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.02)
"""


def _plant(run, age: float = 0.0, **holder) -> Path:
    """A lock file in ``run``'s directory naming ``holder``, its heartbeat ``age`` seconds old."""
    run.dir.mkdir(parents=True, exist_ok=True)
    path = run.dir / "lock"
    info = {"host": "other-node", "pid": 1, "pidns": "", "job": None, "restarts": 0, "since": time.time(),
            "token": os.urandom(8).hex(), **holder}
    path.write_text(json.dumps(info) + "\n")
    os.utime(path, (time.time() - age,) * 2)
    return path


@pytest.fixture
def fail_fast(monkeypatch):
    monkeypatch.setattr(store, "LOCK_WAIT", False)


def test_a_second_process_fails_fast_or_waits_for_the_lock_held_by_another(tmp_path, fail_fast, monkeypatch):
    release = tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(release)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline() == "held\n"
        run = store.Run(Script.SCRIPT, Cfg(runs_dir=str(tmp_path)))
        t0 = time.time()
        with pytest.raises(store.RunLocked, match=rf"is being computed by host \S+ pid {holder.pid}"):
            store.execute(Script, Cfg(runs_dir=str(tmp_path)))
        assert time.time() - t0 < 1.0 and not run.done  # at once, nothing computed
        monkeypatch.setattr(store, "LOCK_WAIT", True)  # waiting (the default): until the holder releases it
        threading.Timer(0.5, release.touch).start()
        t0 = time.time()
        with run.lock():
            assert time.time() - t0 >= 0.4 and holder.wait(timeout=10) == 0
    finally:
        release.touch()
        holder.wait(timeout=10)
    assert not (run.dir / "lock").exists()  # released: the file is gone


def test_stale_locks_are_broken_live_ones_respected(tmp_path, fail_fast, monkeypatch, capsys):
    run = store.Run(Script.SCRIPT, Cfg(runs_dir=str(tmp_path)))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    _plant(run, host=socket.gethostname(), pid=dead.pid, pidns=store._pid_namespace())  # its holder died
    with run.lock():
        pass
    assert f"broke a stale lock (its holder, pid {dead.pid} of this host, is dead)" in capsys.readouterr().err
    _plant(run, age=10)  # another host, heartbeat 10 s ago: alive
    with pytest.raises(store.RunLocked, match="host other-node pid 1, heartbeat 10 s ago"):
        with run.lock():
            pass
    _plant(run, age=store.LOCK_STALE_S + 5)  # another host, heartbeat too old
    with run.lock():
        pass
    assert "its heartbeat is 305 s old" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    _plant(run, job="77", restarts=1)  # this very run of job 77 (another process of it): alive
    with pytest.raises(store.RunLocked):
        with run.lock():
            pass
    _plant(run, job="77", restarts=0)  # the run of job 77 before its requeue
    with run.lock():
        pass
    (run.dir / "lock").write_text("")  # what the flock-based store left in every run directory
    with run.lock():
        pass
    assert not (run.dir / "lock").exists() and not list(run.dir.glob(".lock*")) and not list(run.dir.glob("lock.*"))


def test_heartbeat_is_refreshed_while_the_lock_is_held(tmp_path, fail_fast, monkeypatch):
    monkeypatch.setattr(store, "LOCK_HEARTBEAT_S", 0.05)
    monkeypatch.setattr(store, "LOCK_STALE_S", 0.5)
    run = store.Run(Script.SCRIPT, Cfg(runs_dir=str(tmp_path)))
    with run.lock():
        lock = run.dir / "lock"
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and set(holder) >= {"host", "pid", "job", "since", "token"}
        time.sleep(1.0)  # twice the stale timeout: the heartbeat keeps it fresh
        assert time.time() - lock.stat().st_mtime < 0.5
        other = store.RunLock(lock)  # so another process finds it alive
        assert not other.acquire() and f"pid {os.getpid()}" in other.holder


def test_concurrent_breakers_of_one_stale_lock_let_one_holder_in_at_a_time(tmp_path, capsys):
    run = store.Run(Script.SCRIPT, Cfg(runs_dir=str(tmp_path)))
    _plant(run, age=store.LOCK_STALE_S + 5)
    inside, most, go = [], [], threading.Barrier(4)

    def contend():
        go.wait()
        with store.Run(Script.SCRIPT, run.cfg).lock():
            inside.append(1)
            most.append(len(inside))
            time.sleep(0.01)
            inside.pop()

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(most) == 4 and max(most) == 1
    assert capsys.readouterr().err.count("broke a stale lock") == 1


def _weights(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=True)


def _kill_after(args, log_glob, min_lines, runs_dir):
    """Start a script, SIGKILL it once a log matching ``log_glob`` has ``min_lines`` epoch lines."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", *args, "--runs-dir", str(runs_dir)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        logs = list(runs_dir.glob(log_glob))
        if logs and sum('"epoch"' in ln for ln in logs[0].read_text().splitlines()) >= min_lines:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def test_sigkilled_run_resumes_exactly(tmp_path):
    """Kill GMP once while its dense model trains and once while it prunes; the result equals an unbroken run."""
    args = ["gmp.prune", "--model", "cnn", "--pretrain.epochs", "5", "--epochs", "7", "--stabilize-epochs", "1",
            "--prune-epochs", "3", "--progress", "off", "--checkpoint-epoch-minutes", "0"]
    straight = tmp_path / "straight"
    from gmp import prune

    with single_thread():  # the uninterrupted run, in this process on one thread as the killed ones compute
        store.execute(prune, C.parse_args(prune.Config, [*args[1:], "--runs-dir", str(straight)]))
    broken = tmp_path / "broken"
    _kill_after(args, "common.pretrain/*/log.jsonl", 2, broken)  # 3 of 5 epochs to go
    _kill_after(args, "gmp.prune/*/log.jsonl", 3, broken)  # within the pruning stage (epochs 2-4)
    proc = run_main(*args, "--runs-dir", broken)  # resumed from what the killed processes left on disk
    assert proc.returncode == 0, proc.stderr
    for script in ("common.pretrain", "gmp.prune"):
        (a,), (b,) = list((straight / script).iterdir()), list((broken / script).iterdir())
        assert a.name == b.name
        wa, wb = _weights(a), _weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), script
        ra, rb = json.loads((a / "result.json").read_text()), json.loads((b / "result.json").read_text())
        drop = ("wall_time", "run_time", "provenance")  # times; the code may be edited while the test runs
        assert {k: v for k, v in ra.items() if k not in drop} == {k: v for k, v in rb.items() if k not in drop}
        la = [{k: v for k, v in r.items() if k != "time"} for r in store.read_log(a)]
        lb = [{k: v for k, v in r.items() if k != "time"} for r in store.read_log(b)]
        assert [r["event"] for r in lb if r.get("event") == "resume"] == ["resume"], script  # killed once each
        assert la == [r for r in lb if r.get("event") != "resume"], script


# ---------------------------------------------------------------------------------------------------- runs directory
TINY = ["--model", "mlp", "--train.epochs", "1", "--progress", "off"]


def _cli(capsys, *argv):
    """``python -m common.pretrain argv`` in this process: (exit status, its single error line or None)."""
    from common.cli import main

    code = main("common.pretrain", [*TINY, *map(str, argv)])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) <= 1, err
    return code, lines[0] if lines else None


def test_runs_dir_that_is_a_file_is_one_line_error_and_missing_parents_are_created(tmp_path, capsys, one_thread):
    file = tmp_path / "runs.txt"
    file.write_text("not a folder\n")
    code, line = _cli(capsys, "--runs-dir", file)
    assert code == 2 and line == (f"error: the runs directory {file} is a file, not a folder; pass --runs-dir a "
                                  "folder (a missing one is created)")
    code, line = _cli(capsys, "--runs-dir", file / "runs")
    assert code == 2 and f"the runs directory {file / 'runs'} cannot be created: {file} is a file" in line
    assert file.read_text() == "not a folder\n"
    with pytest.raises(UserError, match=f"^the runs directory {file} is a file, not a folder; pass --runs-dir"):
        store.collect(file)
    code, line = _cli(capsys, "--runs-dir", tmp_path / "new" / "parents" / "runs")
    assert code == 0 and line is None
    assert list((tmp_path / "new" / "parents" / "runs" / "common.pretrain").glob("*/result.json"))


def test_read_only_runs_dir_is_one_line_error(tmp_path):
    """Root writes through permission bits, so as root the folder is made a read-only mount instead (a bind mount
    in a mount namespace of this command alone); without the privilege for that, the test skips."""
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = [sys.executable, "-m", "common.pretrain", *TINY, "--runs-dir", str(ro / "runs")]
    if os.geteuid() == 0:
        wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind -o ro "$0" "$0" && exec "$@"', str(ro)]
        probe = subprocess.run([*wrap, "true"], capture_output=True) if shutil.which("unshare") else None
        if probe is None or probe.returncode != 0:
            pytest.skip("as root a read-only folder needs a read-only mount, and unshare/mount is not permitted here")
        cmd = wrap + cmd
    else:
        ro.chmod(0o555)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                              capture_output=True, text=True, timeout=300)
    finally:
        ro.chmod(0o755)
    line = one_error_line(proc)
    assert proc.returncode == 2, proc.stderr
    assert line.startswith(f"error: the runs directory {ro / 'runs'} is not writable (") and "--runs-dir" in line
    assert not (ro / "runs").exists()


# ---------------------------------------------------------------------------------------------------- damaged files
def test_collect_skips_damaged_and_stray_entries_with_one_warning_each(tmp_path, capsys):
    for x in (1, 2, 3, 4, 5):
        store.execute(Script, Cfg(x=x, runs_dir=str(tmp_path)))
    dirs = {x: store.Run(Script.SCRIPT, Cfg(x=x, runs_dir=str(tmp_path))).dir for x in (3, 4, 5)}
    truncate = lambda p: p.write_text(p.read_text()[:20])  # noqa: E731
    truncate(dirs[3] / "result.json")
    truncate(dirs[4] / "config.json")
    (dirs[5] / "config.json").unlink()
    strays = [tmp_path / "notes.txt", tmp_path / Script.SCRIPT / "old-copy", tmp_path / Script.SCRIPT / ".DS_Store"]
    strays[0].write_text("x")
    strays[1].mkdir()
    strays[2].write_text("x")
    capsys.readouterr()
    df = store.collect(tmp_path)
    assert sorted(df["config.x"].unique()) == [1, 2] and len(df) == 4  # the finished runs are all there
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 6 and all(ln.startswith("warning: ") for ln in warned), warned
    for path in [*dirs.values(), *strays]:
        assert sum(f" {path}: skipped" in ln for ln in warned) == 1, (path, warned)
    assert "result.json is damaged" in next(ln for ln in warned if str(dirs[3]) in ln)
    assert "config.json is damaged" in next(ln for ln in warned if str(dirs[4]) in ln)
    assert "config.json is missing" in next(ln for ln in warned if str(dirs[5]) in ln)
    assert len(store.collect(tmp_path, Script.SCRIPT)) == 4


def test_damaged_result_json_is_one_line_error(tmp_path):
    cfg = Cfg(runs_dir=str(tmp_path))
    store.execute(Script, cfg)
    path = store.Run(Script.SCRIPT, cfg).dir / "result.json"
    path.write_text('{"value": 1')
    with pytest.raises(UserError, match=f"^{path} is damaged .*; delete it and run again to compute the run anew$"):
        store.execute(Script, cfg)
    path.unlink()
    assert store.execute(Script, cfg)["value"] == 10


def test_damaged_config_json_is_rewritten_when_the_run_is_computed(tmp_path):
    cfg = Cfg(x=2, runs_dir=str(tmp_path))
    run = store.Run(Script.SCRIPT, cfg)
    run.dir.mkdir(parents=True)
    (run.dir / "config.json").write_text('{"script": "fake.scr')  # cut short, e.g. by a full disk
    store.execute(Script, cfg)
    assert json.loads((run.dir / "config.json").read_text()) == {"script": Script.SCRIPT, "config": {"x": 2}}
    assert store.collect(tmp_path)["config.x"].tolist() == [2, 2]


# ---------------------------------------------------------------------------------------------------- fresh logs
class Epochs:
    """A fake script with checkpointed epochs: ``fail_at`` raises Diverged, ``stop_at`` interrupts (as a kill would),
    at that epoch, after its record is logged and before its checkpoint."""

    SCRIPT = "fake.epochs"
    fail_at = stop_at = None

    @classmethod
    def compute(cls, cfg, run):
        state = run.load_checkpoint()
        for epoch in range(state["epoch"] if state else 0, 3):
            run.log(epoch=epoch + 1)
            if epoch + 1 == cls.fail_at:
                raise Diverged(f"training loss became nan in epoch {epoch + 1}")
            if epoch + 1 == cls.stop_at:
                raise KeyboardInterrupt
            run.save_checkpoint({"epoch": epoch + 1})
        return {"value": 1}


def _epochs(run) -> list[int]:
    return [r["epoch"] for r in store.read_log(run.dir)]


def test_rerun_of_a_failed_run_starts_a_fresh_log(tmp_path):
    cfg = Cfg(runs_dir=str(tmp_path))
    Epochs.fail_at, Epochs.stop_at = 2, None
    with pytest.raises(Diverged):
        store.execute(Epochs, cfg)
    run = store.Run(Epochs.SCRIPT, cfg)
    assert _epochs(run) == [1, 2] and not run.checkpoint_path.exists()
    Epochs.fail_at = None
    store.execute(Epochs, cfg)
    assert _epochs(run) == [1, 2, 3]


def test_restart_after_a_corrupt_checkpoint_starts_a_fresh_log(tmp_path, capsys):
    cfg = Cfg(runs_dir=str(tmp_path))
    Epochs.fail_at, Epochs.stop_at = None, 2
    with pytest.raises(KeyboardInterrupt):
        store.execute(Epochs, cfg)
    run = store.Run(Epochs.SCRIPT, cfg)
    assert _epochs(run) == [1, 2] and run.checkpoint_path.exists()
    run.checkpoint_path.write_bytes(run.checkpoint_path.read_bytes()[:50])
    Epochs.stop_at = None
    store.execute(Epochs, cfg)
    assert _epochs(run) == [1, 2, 3]
    assert f"warning: {run.checkpoint_path}: checkpoint is corrupt or truncated" in capsys.readouterr().err


def test_a_finished_run_deletes_its_checkpoints_unless_asked_to_keep_one(tmp_path):
    Epochs.fail_at = Epochs.stop_at = None
    plain, kept = Cfg(runs_dir=str(tmp_path / "a")), Cfg(runs_dir=str(tmp_path / "b"), keep_checkpoint=True)
    store.execute(Epochs, plain)
    store.execute(Epochs, kept)
    a, b = store.Run(Epochs.SCRIPT, plain), store.Run(Epochs.SCRIPT, kept)
    assert a.hash == b.hash and a.done and b.done  # --keep-checkpoint is not part of the run's identity
    assert sorted(p.name for p in a.dir.iterdir()) == ["config.json", "log.jsonl", "result.json"]
    assert b.checkpoint_path.exists() and not (b.dir / store.PREVIOUS_CHECKPOINT).exists()
    assert store.read_checkpoint(b.checkpoint_path)["epoch"] == 3


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    cfg = Cfg(runs_dir=str(tmp_path))
    Epochs.fail_at, Epochs.stop_at = None, 3  # checkpoints after epochs 1 and 2, then killed
    with pytest.raises(KeyboardInterrupt):
        store.execute(Epochs, cfg)
    run = store.Run(Epochs.SCRIPT, cfg)
    previous = run.dir / store.PREVIOUS_CHECKPOINT
    assert store.read_checkpoint(previous)["epoch"] == 1 and store.read_checkpoint(run.checkpoint_path)["epoch"] == 2
    run.checkpoint_path.write_bytes(run.checkpoint_path.read_bytes()[:50])  # the newest is cut short
    Epochs.stop_at = None
    state = store.Run(Epochs.SCRIPT, cfg).load_checkpoint()
    assert state["epoch"] == 1  # not from scratch: the epoch before
    err = capsys.readouterr().err
    assert f"warning: {run.checkpoint_path}: checkpoint is corrupt or truncated" in err
    assert "resuming from the previous checkpoint, checkpoint.prev.pt" in err
    store.execute(Epochs, cfg)
    assert _epochs(run) == [1, 2, 3] and not previous.exists() and not run.checkpoint_path.exists()


def test_a_checkpoint_is_flushed_to_disk_before_it_replaces_the_last(tmp_path, monkeypatch):
    run = store.Run(Epochs.SCRIPT, Cfg(runs_dir=str(tmp_path)))
    run.dir.mkdir(parents=True)
    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or
                        fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: replace(a, b) or calls.append(("replace", str(a), str(b))))
    run.save_checkpoint({"epoch": 1})
    run.save_checkpoint({"epoch": 2})
    assert [c[0] for c in calls] == ["fsync", "replace", "fsync", "replace", "replace"]
    assert calls[0][1] == calls[1][1] and calls[2][1] == calls[4][1]  # each written file flushed, then moved in
    assert calls[1][2] == calls[4][2] == str(run.checkpoint_path)
    assert calls[3][1:] == (str(run.checkpoint_path), str(run.dir / store.PREVIOUS_CHECKPOINT))
    assert store.read_checkpoint(run.dir / store.PREVIOUS_CHECKPOINT)["epoch"] == 1


def test_interrupted_run_without_a_checkpoint_starts_a_fresh_log(tmp_path):
    cfg = Cfg(runs_dir=str(tmp_path))
    Epochs.fail_at, Epochs.stop_at = None, 1  # killed in its first epoch: a record, no checkpoint
    with pytest.raises(KeyboardInterrupt):
        store.execute(Epochs, cfg)
    Epochs.stop_at = None
    store.execute(Epochs, cfg)
    assert _epochs(store.Run(Epochs.SCRIPT, cfg)) == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o022, 0o644)])
def test_store_files_follow_the_umask(tmp_path, umask, mode):
    Epochs.fail_at = Epochs.stop_at = None
    old = os.umask(umask)
    try:
        store.execute(Epochs, Cfg(runs_dir=str(tmp_path), keep_checkpoint=True))
        explicit = store.atomic_write(tmp_path / "explicit.txt", lambda p: Path(p).write_text("x"), mode=0o600)
    finally:
        os.umask(old)
    run_dir = store.Run(Epochs.SCRIPT, Cfg(runs_dir=str(tmp_path))).dir
    for name in ("config.json", "result.json", "checkpoint.pt", "log.jsonl"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == mode, name
    assert stat.S_IMODE(explicit.stat().st_mode) == 0o600  # an explicit mode still wins


# ---------------------------------------------------------------------------------------------------- provenance
def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_result_records_code_and_package_versions(tmp_path):
    result = store.execute(Script, Cfg(runs_dir=str(tmp_path)))
    prov = json.loads((store.Run(Script.SCRIPT, Cfg(runs_dir=str(tmp_path))).dir / "result.json").read_text())
    assert prov["provenance"] == result["provenance"] == {**store.provenance(), "hardware": store.hardware(Cfg())}
    hw, cuda = prov["provenance"]["hardware"], torch.cuda.is_available()  # what a timing was measured on
    assert hw["cpus"] == process_cpus() and hw["world_size"] == 1 and hw["device"] == getattr(Cfg(), "device", None)
    assert (hw["gpus"], hw["gpu"]) == ((torch.cuda.device_count(), torch.cuda.get_device_name()) if cuda else (0, None))
    versions = prov["provenance"]["versions"]
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == importlib.metadata.version("torch") and set(versions) == {
        "python", "torch", "torchvision", "torch-pruning", "numpy"}
    code = prov["provenance"]["code"]
    assert set(code) == ({"git_commit", "git_dirty", "content_hash"} if (ROOT / ".git").exists() else
                         {"content_hash"})
    assert len(code["content_hash"]) == 16
    assert not [c for c in store.collect(tmp_path).columns if "provenance" in c or "git" in c or "versions" in c]


def test_provenance_is_computed_once_and_names_missing_packages(monkeypatch):
    monkeypatch.setattr(store, "VERSIONED", ("torch", "no-such-package-here"))
    calls = []
    monkeypatch.setattr(store, "code_version", lambda: calls.append(1) or {"content_hash": "x"})
    store.provenance.cache_clear()
    try:
        first = store.provenance()
        assert store.provenance() is first and calls == [1]
        assert first["versions"]["no-such-package-here"] == "not installed"
    finally:
        store.provenance.cache_clear()


def test_code_version_is_the_git_commit_or_else_a_hash_of_the_sources(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("VALUE = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    clean = store.code_version(repo)
    assert clean == {"git_commit": _git(repo, "rev-parse", "HEAD"), "git_dirty": False,
                     "content_hash": snapshot.code_hash(repo)}
    # outputs a figure rewrites (committed or not) are not code: the version stays clean and the same
    (repo / "out.png").write_bytes(b"one")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "figure")
    (repo / "out.png").write_bytes(b"two")
    (repo / "table.md").write_text("new\n")
    assert store.code_version(repo) == {**clean, "git_commit": _git(repo, "rev-parse", "HEAD")}
    (repo / "pkg" / "new.py").write_text("VALUE = 3\n")  # a new source file is a change of the code
    assert store.code_version(repo)["git_dirty"] is True
    (repo / "pkg" / "new.py").unlink()
    (repo / "pkg" / "mod.py").write_text("VALUE = 2\n")
    changed = store.code_version(repo)
    assert changed["git_dirty"] is True and changed["content_hash"] != clean["content_hash"]
    # a Slurm code snapshot (no .git of its own, even kept inside a checkout): the hash that names it
    snap = snapshot.snapshot(repo / "slurm_logs" / "code", root=repo)
    assert store.code_version(snap) == {"content_hash": snap.name}
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git at all
    assert store.code_version(repo) == {"content_hash": snap.name} == {"content_hash": changed["content_hash"]}


def test_a_deferred_log_record_reaches_the_file_with_the_next_record_and_checkpoints_hold_numbers(tmp_path):
    run = store.Run(Script.SCRIPT, Cfg(runs_dir=str(tmp_path)))
    run.dir.mkdir(parents=True)
    run.log(event="update", step=1, value=torch.tensor(0.25, dtype=torch.float64), defer=True)
    assert not (run.dir / "log.jsonl").exists() and torch.is_tensor(run.logs[0]["value"])  # not yet written
    run.log(epoch=1, step=2)
    assert [(r.get("event"), r["step"]) for r in store.read_log(run.dir)] == [("update", 1), (None, 2)]
    assert store.read_log(run.dir)[0]["value"] == 0.25 and run.logs[0]["value"] == 0.25
    run.log(event="update", step=3, value=torch.tensor(0.5), defer=True)
    run.save_checkpoint({})
    saved = torch.load(run.checkpoint_path, weights_only=True)["_logs"]
    assert saved[-1]["value"] == 0.5 and len(store.read_log(run.dir)) == 3
