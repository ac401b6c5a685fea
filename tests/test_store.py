import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest
import torch

from common import config as C
from common import store
from common.errors import Diverged
from tests.conftest import ROOT


@dataclass
class Cfg:
    x: int = C.opt(1, "a number")
    runs_dir: str = C.opt("runs", "store", hash=False)


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


def test_corrupt_checkpoint_restarts_with_a_warning(tmp_path):
    run = store.Run("fake.script", Cfg(runs_dir=str(tmp_path)))
    run.dir.mkdir(parents=True)
    run.save_checkpoint({"epoch": 3})
    data = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(UserWarning, match="corrupt or truncated"):
        assert store.Run("fake.script", Cfg(runs_dir=str(tmp_path))).load_checkpoint() is None
    assert not run.checkpoint_path.exists()
    run.checkpoint_path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="restarting this run from scratch"):
        assert run.load_checkpoint() is None


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


def _weights(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=True)


def _kill_after(args, log_glob, min_lines, runs_dir):
    """Start a script, SIGKILL it once a log matching ``log_glob`` has ``min_lines`` epoch lines."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
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
    args = ["gmp.prune", "--model", "cnn", "--pretrain.epochs", "8", "--epochs", "10", "--stabilize-epochs", "1",
            "--prune-epochs", "5", "--progress", "off"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", *args, "--runs-dir", str(straight)], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    broken = tmp_path / "broken"
    _kill_after(args, "common.pretrain/*/log.jsonl", 3, broken)
    _kill_after(args, "gmp.prune/*/log.jsonl", 4, broken)
    proc = subprocess.run([sys.executable, "-m", *args, "--runs-dir", str(broken)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for script in ("common.pretrain", "gmp.prune"):
        (a,), (b,) = list((straight / script).iterdir()), list((broken / script).iterdir())
        assert a.name == b.name
        wa, wb = _weights(a), _weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), script
        ra, rb = json.loads((a / "result.json").read_text()), json.loads((b / "result.json").read_text())
        drop = ("wall_time",)
        assert {k: v for k, v in ra.items() if k not in drop} == {k: v for k, v in rb.items() if k not in drop}
        la = [{k: v for k, v in r.items() if k != "time"} for r in store.read_log(a)]
        lb = [{k: v for k, v in r.items() if k != "time"} for r in store.read_log(b)]
        assert la == lb, script
