"""A damaged file, a full disk or a store this user may not use ends in one line, never a traceback or a hang; what
a killed or refused run leaves behind is cleaned; a result records the truth about its code and its time.

The real cases: a tiny digits run written into a tmpfs too small for it (mounted in a mount namespace of its own),
and the commands run as an unprivileged user (``setpriv``), where this machine allows them; each test that cannot
make its case here skips, saying why."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from common import config as C
from common import pretrain, store
from common.atomic import full_disk_named, leftover_temps
from common.errors import DamagedFile, UserError
from common.runs import main as runs_main
from tests.conftest import ROOT, one_error_line, single_thread

TINY = ["--model", "mlp", "--train.epochs", "1", "--progress", "off", "--device", "cpu"]


def tiny_run(runs_dir) -> store.Run:
    """A finished digits run (one epoch of the MLP) in ``runs_dir``, computed in this process on one thread."""
    cfg = C.parse_args(pretrain.Config, [*TINY, "--runs-dir", str(runs_dir)])
    with single_thread():
        store.execute(pretrain, cfg)
    return store.Run(pretrain.SCRIPT, cfg)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> store.Run:
    return tiny_run(tmp_path_factory.mktemp("made") / "runs")


@pytest.fixture
def done(made, tmp_path) -> store.Run:
    """A copy of the finished run's store, for this test to damage."""
    shutil.copytree(made.root, tmp_path / "runs")
    cfg = C.replace(made.cfg, runs_dir=str(tmp_path / "runs"))
    return store.Run(pretrain.SCRIPT, cfg)


def runs(capsys, *args) -> tuple[int, str, str]:
    """(status, stdout, stderr) of ``python -m common.runs ARGS`` in this process; never a traceback."""
    code = runs_main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def status_line(capsys, run: store.Run) -> str:
    """The line ``runs list`` prints for ``run`` (the store stays listable)."""
    code, out, _ = runs(capsys, "list", "--runs-dir", run.root)
    assert code == 0, out
    return next(ln for ln in out.splitlines() if run.hash in ln)


def collected(capsys, run: store.Run) -> tuple[list[str], list[str]]:
    """(the hashes ``collect()`` reports, its warning lines)."""
    df = store.collect(run.root)
    err = capsys.readouterr().err
    return (sorted(set(df["hash"])) if len(df) else []), err.splitlines()


# ---------------------------------------------------------------------------------------------------- full disk
def _in_a_small_tmpfs(folder: Path, size: str) -> list[str]:
    """A command prefix that runs the command with a tmpfs of ``size`` mounted on ``folder``, in a mount namespace
    of its own (nothing to unmount afterwards); skips the test where this machine does not permit it."""
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(folder)]
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a real full disk needs a small tmpfs: mounting one needs root and unshare")
    probe = subprocess.run([*wrap, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({probe.stderr.decode().strip()[:120]})")
    return wrap


def test_a_real_full_disk_is_one_line_and_exit_1(tmp_path):
    """torch.save on a full filesystem raises RuntimeError (not OSError): the run still ends in the one line."""
    disk = tmp_path / "disk"
    disk.mkdir()
    wrap = _in_a_small_tmpfs(disk, "300k")  # the config and log fit; the first checkpoint (~400 kB) does not
    proc = subprocess.run([*wrap, sys.executable, "-m", "common.pretrain", *TINY, "--checkpoint-epoch-minutes", "0",
                           "--runs-dir", str(disk / "runs")],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=300)
    line = one_error_line(proc)
    assert proc.returncode == 1, proc.stderr
    assert line.startswith(f"error: the disk at {disk / 'runs' / pretrain.SCRIPT}/") and " is full; free some " \
        "space there" in line, line


def test_a_writer_error_on_a_disk_with_room_is_not_called_a_full_disk(tmp_path):
    with pytest.raises(RuntimeError, match="not about space"), full_disk_named(tmp_path / "x.pt"):
        raise RuntimeError("not about space")


# ---------------------------------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("text, problem", [
    ('{"test_acc": 0.5, "points": "abc"}', "its 'points' are not a list of JSON objects"),
    ('{"test_acc": 0.5, "points": [1, 2]}', "its 'points' are not a list of JSON objects"),
    ("[]", "a JSON array, not an object"),
    ("null", "a JSON null, not an object"),
    ('{"test_acc": 0.5', "Expecting"),
])
def test_a_result_of_the_wrong_shape_is_skipped_and_refused_in_one_line(done, capsys, text, problem):
    path = done.dir / "result.json"
    path.write_text(text)
    hashes, warned = collected(capsys, done)
    assert done.hash not in hashes
    assert len(warned) == 1 and warned[0].startswith(f"warning: {done.dir}: skipped: result.json is damaged (")
    assert problem in warned[0]
    line = status_line(capsys, done)
    assert " damaged " in line and f"result.json is damaged ({problem}" in line and "config.json" not in line
    code, out, _ = runs(capsys, "show", "--runs-dir", done.root, done.hash)  # blames result.json, shows the config
    assert code == 0 and out.splitlines()[0].startswith(f"{pretrain.SCRIPT} {done.hash}  damaged (result.json")
    assert '"model": "mlp"' in out and "result:" not in out
    with pytest.raises(UserError, match=f"^{path} is damaged \\(.*; delete it and run again to compute the run anew$"):
        store.execute(pretrain, done.cfg)  # a rerun: one line, exit 2 from the command


def script(capsys, module: str, *argv) -> tuple[int, str]:
    """(status, its single error line or "") of ``python -m MODULE ARGV`` run in this process on one thread."""
    from common.cli import main

    with single_thread():
        code = main(module, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) <= 1, err
    return code, lines[0] if lines else ""


def test_a_rerun_of_a_damaged_result_is_one_line_from_the_command(done, capsys):
    (done.dir / "result.json").write_text("[]")
    assert script(capsys, "common.pretrain", *TINY, "--runs-dir", done.root) == (
        2, f"error: {done.dir / 'result.json'} is damaged (a JSON array, not an object); delete it and run again to "
           "compute the run anew")


@contextlib.contextmanager
def no_hang(seconds: int = 30):
    """Fail (not hang) when the block takes longer: a blocking open of a FIFO is interrupted by the alarm."""
    def alarm(*_):
        raise TimeoutError(f"hung for {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_fifo_named_result_json_never_hangs_a_reader(done, capsys):
    (done.dir / "result.json").unlink()
    os.mkfifo(done.dir / "result.json")
    with no_hang():
        hashes, warned = collected(capsys, done)
        assert hashes == [] and warned == [f"warning: {done.dir}: skipped: result.json is a FIFO, not a file; "
                                           "delete it and run again to compute the run anew"]
        line = status_line(capsys, done)
        assert " damaged " in line and "result.json is a FIFO, not a file" in line
        code, line = script(capsys, "common.pretrain", *TINY, "--runs-dir", done.root)
        assert code == 2 and "result.json is a FIFO, not a file" in line


def test_a_garbage_log_line_is_skipped_with_one_warning(done, capsys):
    records = store.read_log(done.dir)
    with open(done.dir / "log.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "train_lo\n[1, 2]\n')  # a line cut short by a kill, and one that is no record
    capsys.readouterr()
    code, out, err = runs(capsys, "log", "--runs-dir", done.root, done.hash)
    assert code == 0 and len(out.splitlines()) == len(records)
    n = len(records)
    assert err == f"warning: {done.dir / 'log.jsonl'}: skipped lines {n + 1}, {n + 2}: not a JSON object (cut short, " \
                  "or edited)\n"
    (done.dir / "log.jsonl").unlink()
    (done.dir / "log.jsonl").mkdir()
    code, _, err = runs(capsys, "log", "--runs-dir", done.root, done.hash)
    assert code == 2 and err == f"error: {done.dir / 'log.jsonl'} is a folder, not a file; remove it (rm -r) and " \
                                "run again\n"


def test_a_lock_that_is_a_folder_is_listed_as_damaged_and_refused_in_one_line(done, capsys):
    (done.dir / "result.json").unlink()
    (done.dir / "lock").mkdir()
    line = status_line(capsys, done)
    assert " damaged " in line and "lock is a folder, not a lock file" in line
    assert collected(capsys, done) == ([], [])
    with pytest.raises(DamagedFile, match=f"^{done.dir / 'lock'} is a folder, not a lock file; remove it \\(rm -r\\) "
                                          "unless a process of this store is computing the run$"):
        store.execute(pretrain, done.cfg)
    assert not list(done.dir.glob(".lock.*"))  # the attempt left nothing


@pytest.mark.parametrize("name, content, problem", [
    ("failed.json", "[]", "failed.json is damaged (a JSON array, not an object)"),
    ("slurm_job", None, "slurm_job is a folder, not a file"),
    ("config.json", '{"script": "common.pretrain"}', "config.json is damaged (not a JSON object with a 'config'"),
])
def test_other_damaged_files_of_an_unfinished_run_are_named(done, capsys, name, content, problem):
    (done.dir / "result.json").unlink()
    if content is None:
        (done.dir / name).mkdir()
    else:
        (done.dir / name).write_text(content)
    line = status_line(capsys, done)
    assert " damaged " in line and problem in line, line


# ---------------------------------------------------------------------------------------------------- edited config
def test_an_edited_config_is_not_trusted_and_is_repaired_by_the_next_run(done, capsys):
    path = done.dir / "config.json"
    doc = json.loads(path.read_text())
    doc["config"]["seed"] = 7  # the result is seed 0's; this would file it under seed 7
    path.write_text(json.dumps(doc))
    hashes, warned = collected(capsys, done)
    assert hashes == [] and len(warned) == 1
    assert warned[0].startswith(f"warning: {done.dir}: skipped: config.json is damaged (its config hashes to ")
    assert "not to its folder's name: edited since the run was made?); run that config again" in warned[0]
    assert " damaged " in status_line(capsys, done)
    store.execute(pretrain, done.cfg)  # done: read, and its config.json repaired
    assert json.loads(path.read_text()) == {"script": pretrain.SCRIPT, "config": C.to_dict(done.cfg, True)}
    assert collected(capsys, done)[0] == [done.hash]


def test_config_json_records_the_digest_of_a_content_file_and_hashes_to_the_run(tmp_path):
    from tests.test_config import WithFile as Hashed  # a config with a content field

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    cfg = Hashed(weights=str(weights))
    doc = store.config_doc("some.script", cfg)
    assert doc["config"]["weights"] == str(weights) and doc["digests"]["weights"].startswith("sha256:")
    assert store.doc_hash(doc) == store.config_hash(cfg)
    plain = store.config_doc("some.script", Hashed())
    assert "digests" not in plain and store.doc_hash(plain) == store.config_hash(Hashed())


# ---------------------------------------------------------------------------------------------------- permissions
def _as_nobody() -> list[str]:
    """The command prefix that runs a command as the unprivileged user nobody; skips where that is impossible."""
    if os.geteuid() != 0:
        pytest.skip("running a command as another user needs root (as this user, permissions would bite anyway, "
                    "but the store could not be made unreadable to it and readable to the test)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is not installed")
    wrap = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*wrap, sys.executable, "-c", "import common.store"], capture_output=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1"))
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this repository's python here ({probe.stderr.decode()[-200:]})")
    return wrap


@pytest.fixture
def shared(made):
    """A copy of the finished run's store in a folder every user may enter (pytest's own is root's alone)."""
    top = Path(tempfile.mkdtemp(prefix="store-perm-"))
    top.chmod(0o777)
    shutil.copytree(made.root, top / "runs")
    yield top
    shutil.rmtree(top)


# Each command's entry point (what ``python -m`` calls), run in turn in one process of user nobody (one start of
# torch instead of one per command); one JSON line per command: its status, stdout and stderr.
AS_COMMANDS = """
import contextlib, io, json, sys, traceback
from common.errors import exit_code


def call(command, argv):
    if command == "collect":
        from common.store import collect
        return exit_code(lambda: collect(argv[0]))
    if command == "common.runs":
        from common.runs import main
        return main(argv)
    if command == "figures":
        from figures.__main__ import main
        return main(argv)
    if command == "common.export":
        from common.export import main
        return main(argv)
    from common.cli import main
    return main(command, argv)


for command, argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = call(command, argv)
        except BaseException:
            traceback.print_exc(file=err)
            code = -1
    print(json.dumps({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}), flush=True)
"""


def _nobody(wrap, top: Path, *commands) -> list[subprocess.CompletedProcess]:
    """What each of ``commands`` ((module, argv)) did, run as user nobody: returncode, stdout, stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", HOME=str(top), OMP_NUM_THREADS="1",
               MPLCONFIGDIR=str(top / "mpl"))
    todo = json.dumps([(module, [str(a) for a in argv]) for module, argv in commands])
    proc = subprocess.run([*wrap, sys.executable, "-c", AS_COMMANDS, todo], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [subprocess.CompletedProcess(module, **json.loads(ln)) for (module, _), ln in
            zip(commands, proc.stdout.splitlines())]


def test_a_store_this_user_may_not_read_or_write_is_one_line_everywhere(made, shared):
    """As user nobody (one process for every command): a store it may not enter; one it may read but not write; one
    with a result it may not read."""
    wrap = _as_nobody()
    closed, readable, other = shared / "runs", shared / "readable", shared / "other"
    shutil.copytree(closed, readable)
    shutil.copytree(closed, other)
    closed.chmod(0o700)  # root's: nobody may neither list nor enter it
    unreadable = other / pretrain.SCRIPT / made.hash / "result.json"
    unreadable.chmod(0o600)
    refused = [("common.runs", ["list", "--runs-dir", closed]),
               ("collect", [closed]),
               ("common.pretrain", [*TINY, "--runs-dir", closed]),
               ("figures", ["fig-gmp-schedule", "--runs-dir", closed]),
               ("common.export", ["--run", closed / pretrain.SCRIPT / made.hash])]
    read_only = [("common.runs", ["list", "--runs-dir", readable]),
                 ("common.pretrain", [*TINY, "--runs-dir", readable]),  # done: read, nothing written
                 ("common.pretrain", [*TINY, "--seed", "1", "--runs-dir", readable]),
                 ("common.runs", ["list", "--runs-dir", other])]
    done = _nobody(wrap, shared, *refused, *read_only)
    for (module, args), proc in zip(refused, done[:len(refused)], strict=True):
        line = one_error_line(proc)
        assert proc.returncode == 2, (args, proc.stderr)
        assert line.startswith(f"error: permission denied: {closed}") and "this user (nobody)" in line, (args, line)
        assert (f"cannot enter the folder {closed}, which needs x (search) permission" in line
                or f"the folder {closed} needs rx permission for this user (nobody) to read" in line), (args, line)
    listed, again, new, damaged = done[len(refused):]
    assert listed.returncode == 0 and "1 run: 1 done" in listed.stdout, listed.stderr
    assert again.returncode == 0 and '"test_acc"' in again.stdout, again.stderr
    line = one_error_line(new)
    assert new.returncode == 2
    assert line.startswith(f"error: permission denied: {readable / pretrain.SCRIPT}/") and \
        f"the folder {readable / pretrain.SCRIPT} needs w permission for this user (nobody) to write" in line, line
    assert damaged.returncode == 0 and "damaged" in damaged.stdout, damaged.stderr
    assert f"{unreadable} needs r permission" in damaged.stdout


# ---------------------------------------------------------------------------------------------------- debris
@dataclass
class Cfg:
    x: int = C.opt(1, "a number")
    runs_dir: str = C.opt("runs", "store", hash=False)


class Refused:
    """A fake script that refuses its config once it has started (as a missing dataset does)."""

    SCRIPT = "fake.refused"

    @staticmethod
    def compute(cfg, run):
        raise UserError("no such dataset here; pass --data-dir")


def test_a_run_refused_after_it_started_leaves_no_folder(tmp_path):
    cfg = Cfg(runs_dir=str(tmp_path / "runs"))
    with pytest.raises(UserError, match="no such dataset"):
        store.execute(Refused, cfg)
    assert not (tmp_path / "runs" / Refused.SCRIPT).exists()
    run = store.Run(Refused.SCRIPT, cfg)  # a run that had done something keeps its folder
    run.dir.mkdir(parents=True)
    (run.dir / "failed.json").write_text('{"reason": "nan"}')
    with pytest.raises(UserError):
        store.execute(Refused, cfg)
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.json", "failed.json"]


@pytest.mark.parametrize("args", [
    ["--dataset", "cifar10", "--data-dir", "{empty}"],  # a missing dataset, found by the dense model it starts from
    ["--val-size", "100000"],
    ["--device", "cuda"],  # no usable CUDA here
    ["--pretrain.batch-size", "0"],
])
def test_a_script_refused_after_its_folders_are_made_leaves_none(tmp_path, capsys, args):
    """gmp.prune makes its folder, then its dense model's (a dependency), before either is refused."""
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(empty=empty) for a in args]
    if args[:2] == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is usable on this machine")
    code, line = script(capsys, "gmp.prune", "--model", "mlp", "--pretrain.epochs", "1", "--epochs", "3",
                        "--stabilize-epochs", "1", "--prune-epochs", "1", "--progress", "off",
                        "--runs-dir", tmp_path / "runs", *args)
    assert code == 2 and line
    assert not list((tmp_path / "runs").glob("*/*")), list((tmp_path / "runs").rglob("*"))


KILLED_WRITER = """
import sys, time
from common.atomic import atomic_write
def write(tmp):
    open(tmp, "w").write("half")
    print("writing", flush=True)
    time.sleep(600)
atomic_write(sys.argv[1], write)
"""


def _killed_mid_write(path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout.readline() == "writing\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


class Quick:
    SCRIPT = "fake.quick"

    @staticmethod
    def compute(cfg, run):
        return {"value": cfg.x}


def test_writes_cut_short_by_a_kill_are_cleaned_when_the_run_is_next_opened(tmp_path):
    cfg = Cfg(runs_dir=str(tmp_path / "runs"))
    run = store.Run(Quick.SCRIPT, cfg)
    run.dir.mkdir(parents=True)
    for name in ("checkpoint.pt", "result.json"):
        _killed_mid_write(run.dir / name)
    left = sorted(p.name for p in run.dir.iterdir())
    assert len(left) == 2 and left[0].startswith(".checkpoint.") and left[1].startswith(".result."), left
    assert store.execute(Quick, cfg)["value"] == 1
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.json", "result.json"]


def test_rm_stale_clears_config_only_folders_and_old_temporary_files(done, capsys):
    started = store.Run(pretrain.SCRIPT, C.replace(done.cfg, seed=3))
    started.dir.mkdir()
    started.write_config()
    _killed_mid_write(done.dir / "checkpoint.pt")
    [temp] = leftover_temps(done.dir)
    young = sorted(p.name for p in done.dir.iterdir())
    code, out, _ = runs(capsys, "rm", "--runs-dir", done.root, "--stale", "--yes")
    assert code == 0 and out.splitlines()[-1] == "removed 1 run(s) and 0 temporary file(s)"
    assert not started.dir.exists() and sorted(p.name for p in done.dir.iterdir()) == young  # too young to judge
    old = time.time() - 3600
    os.utime(temp, (old, old))
    code, out, _ = runs(capsys, "rm", "--runs-dir", done.root, "--stale", "--yes")
    assert code == 0 and temp.name in out and out.splitlines()[-1] == "removed 0 run(s) and 1 temporary file(s)"
    assert not temp.exists() and (done.dir / "result.json").exists()
    code, out, _ = runs(capsys, "rm", "--runs-dir", done.root, "--stale")
    assert code == 0 and out == f"nothing stale in {done.root}\n"
    code, _, err = runs(capsys, "rm", "--runs-dir", done.root, "--stale", done.hash)
    assert code == 2 and err.startswith("error: rm --stale finds the runs itself; give it no HASH_OR_DIR")


# ---------------------------------------------------------------------------------------------------- run time
class Dependency:
    SCRIPT = "fake.dependency"

    @staticmethod
    def compute(cfg, run):
        time.sleep(1.0)
        return {"value": cfg.x}


class Dependent:
    SCRIPT = "fake.dependent"

    @staticmethod
    def dependencies(cfg):
        return [(Dependency, cfg)]

    @staticmethod
    def compute(cfg, run):
        return {"value": run.dependency(Dependency.SCRIPT, cfg).result()["value"]}


def test_run_time_leaves_out_the_time_of_the_runs_it_depends_on(tmp_path):
    first = store.execute(Dependent, Cfg(x=1, runs_dir=str(tmp_path)))
    assert first["wall_time"] >= 1.0 and first["run_time"] < 0.5, first  # it computed its dependency
    dep = store.execute(Dependency, Cfg(x=1, runs_dir=str(tmp_path)))
    assert dep["run_time"] >= 1.0 and dep["run_time"] == dep["wall_time"]
    df = store.collect(tmp_path)
    assert {"run_time", "wall_time"} <= set(df.columns)


# ---------------------------------------------------------------------------------------------------- figures
class OneRunFigure:
    """A figure module whose only run is the finished digits run; ``draw`` records what it was given."""

    PAPER = "a test figure"
    drawn: list = []

    def __init__(self, cfg):
        self.cfg = cfg

    def runs(self, profile):
        return [(pretrain.SCRIPT, self.cfg)]

    def draw(self, df, profile, base):
        self.drawn.append(sorted(df["hash"]))
        return []


def test_a_figure_repairs_an_edited_config_and_refuses_a_damaged_result_in_one_line(done, capsys, monkeypatch,
                                                                                    tmp_path):
    from figures import pipeline

    figure = OneRunFigure(done.cfg)
    monkeypatch.setattr(pipeline, "figure_module", lambda name: figure)
    runtime = {"runs_dir": str(done.root)}
    path = done.dir / "config.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "config": {**doc["config"], "seed": 5}}))
    figure.drawn.clear()
    pipeline.make("fig-test", "tiny", runtime=runtime, out_root=tmp_path)
    assert figure.drawn == [[done.hash]]  # drawn with the run, its config.json rewritten
    assert json.loads(path.read_text()) == doc
    assert f"warning: {path}: rewritten from the run's config" in capsys.readouterr().err
    (done.dir / "result.json").write_text('{"points": "abc"}')
    with pytest.raises(UserError, match=f"^1 run\\(s\\) of fig-test cannot be read, figure not drawn: "
                                        f"{done.dir / 'result.json'} is damaged \\(its 'points' are not a list"):
        pipeline.make("fig-test", "tiny", runtime=runtime, out_root=tmp_path)
    assert figure.drawn == [[done.hash]]


@pytest.mark.parametrize("name, kind", [("checkpoint.pt", "fifo"), ("checkpoint.pt", "folder"),
                                        ("log.jsonl", "folder"), ("failed.json", "folder")])
def test_a_fifo_or_folder_in_place_of_a_run_file_is_one_line_for_a_rerun(done, capsys, name, kind):
    for path in (done.dir / "result.json", done.dir / name):
        path.unlink(missing_ok=True)
    (os.mkfifo if kind == "fifo" else os.mkdir)(done.dir / name)
    with no_hang():
        code, line = script(capsys, "common.pretrain", *TINY, "--runs-dir", done.root)
    assert code == 2 and line.startswith(f"error: {done.dir / name} is a ") and "remove it (rm -r)" in line, line
    assert status_line(capsys, done)  # the store stays listable
