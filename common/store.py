"""The run store: every result in this repository is a run, kept at ``runs/<script>/<hash>/``.

A run is (script, config). Its directory name is a hash of the config's canonical JSON (execution-only fields such as
the device are left out). Inside:

- ``config.json``   the full config, written when the run starts (rewritten if it was damaged);
- ``log.jsonl``     one JSON line per epoch / round / phase (a run that starts from scratch starts a fresh one);
- ``checkpoint.pt`` enough state to resume (written atomically at each checkpoint);
- ``result.json``   written last and atomically: a run that has it is done and is never recomputed; it records its
                    ``provenance`` (the code's git commit or content hash, python and package versions);
- ``failed.json``   the reason a run failed (NaN loss, ...); the next invocation tries again from scratch;
- ``lock``          present while a process computes the run, so two processes never do the same work (below).

Files are created with the permissions the umask gives (a group-shared store stays readable by the group).

A script is a module with ``SCRIPT``, a ``Config`` dataclass and ``compute(cfg, run)`` (and optionally ``validate``,
``PRESETS``, ``dependencies``, ``ONE_PROCESS``): "Writing a script" in common/README.md says what each is, with a
template. ``execute(module, cfg)`` runs it through the store; dependencies (a pruning run's dense model) call
``execute`` on their own config, so they are computed once and reused.

The lock works across the nodes of a cluster sharing the runs directory (NFS, Lustre, where flock may be per node).
A process takes a run's lock by writing a file with its holder -- host, pid (and pid namespace), Slurm job id and
restart count, a random token -- and hard-linking it to ``lock`` with ``link()``, which fails when ``lock`` exists
(atomic on local filesystems, NFS and Lustre alike; a link whose reply was lost is recognized by the file's link
count). While it holds the lock a background thread sets the file's modification time, the heartbeat, every
``LOCK_HEARTBEAT_S`` (30 s); releasing removes the file. Another process that finds ``lock`` reads it (opening it
revalidates NFS's cached attributes) and treats it as stale -- its holder is presumed dead -- when its heartbeat is
older than ``LOCK_STALE_S`` (300 s), when its holder is a process of this host (and pid namespace) that no longer
exists, when its holder was an earlier run of this same Slurm job (requeued), or when it names no holder (an empty
``lock`` left by an older version of this store). A stale lock is broken atomically: the breaker first takes a claim
on that very lock file (``lock.break.<token>``, made the same way), checks that ``lock`` is still the file it judged,
removes it, and drops the claim, so of several processes that find the same stale lock exactly one removes it.
What this relies on: ``link()`` being atomic on the shared filesystem; the nodes' clocks agreeing to well within
``LOCK_STALE_S`` minus ``LOCK_HEARTBEAT_S`` (NTP does), and the filesystem's attribute caching being shorter than
that; a holder whose heartbeat thread stalls longer than ``LOCK_STALE_S`` (a frozen node) losing its lock (it
warns when it notices); a breaker not dying within the few system calls of a break (an orphaned claim is removed
once it is ``LOCK_STALE_S`` old).
A process that finds a live holder says so and waits (polling) -- or, when ``LOCK_WAIT`` is off (Slurm jobs, which
hold a GPU: ``slurm.jobs``), raises ``RunLocked`` naming the holder at once.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import threading
import tempfile
import time
from pathlib import Path

from common import config as C
from common.atomic import atomic_write, atomic_write_json, atomic_write_text
from common.errors import RunFailed, UserError
from common.sources import code_hash

HASH_LEN = 16
JOB_FILE = "slurm_job"  # in a run's directory: the id of the Slurm job that computes it (written by slurm.submit)
RUN_NAME = re.compile(rf"[0-9a-f]{{{HASH_LEN}}}\Z")  # a run directory's name: its config hash
CODE_ROOT = Path(__file__).resolve().parents[1]  # the repository (or the Slurm code snapshot) this code runs from
VERSIONED = ("torch", "torchvision", "torch-pruning", "numpy")  # packages whose versions every result records


def config_hash(cfg) -> str:
    return hashlib.sha256(C.canonical_json(cfg).encode()).hexdigest()[:HASH_LEN]


def save_state_dict(path, module) -> None:
    """``module``'s state dict, every tensor detached and on the CPU, written by ``torch.save`` to ``path`` (the
    archive inside the file is named after ``path``: write it under its final name for the same bytes)."""
    import torch

    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)


def unusable_store(root, exc: OSError) -> Exception:
    """The one-line error for a runs directory that cannot hold runs (``exc``: the failure writing into it); an
    error of another kind (a full disk, ...) is returned as it is."""
    root = Path(root)
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        file = next((p for p in (Path(exc.filename or root), *Path(exc.filename or root).parents)
                     if p.exists() and not p.is_dir()), root)
        where = "is a file" if file == root else f"cannot be created: {file} is a file"
        return UserError(f"the runs directory {root} {where}, not a folder; pass --runs-dir a folder "
                         "(a missing one is created)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"the runs directory {root} is not writable ({exc.strerror}: {exc.filename}); make it "
                         "writable (e.g. chmod u+w) or pass --runs-dir a writable folder")
    return exc


def _git(root: Path, *args) -> str:
    return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def code_version(root: Path = CODE_ROOT) -> dict:
    """The version of the code in ``root``: ``{"git_commit", "git_dirty"}`` when ``root`` is the top of a git work
    tree (dirty: tracked files changed, or untracked files that are not ignored), else ``{"content_hash"}``, the
    hash of its ``.py`` files (``common.sources.code_hash``, also the name of a Slurm code snapshot)."""
    try:
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() == Path(root).resolve():
            return {"git_commit": _git(root, "rev-parse", "HEAD"),
                    "git_dirty": bool(_git(root, "status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"content_hash": code_hash(root)}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """What produced this process's results (recorded in each ``result.json``): the code version and the versions of
    python and of the packages in ``VERSIONED``. Computed once per process."""
    return {"code": code_version(), "versions": {"python": platform.python_version(),
                                                 **{p: _version(p) for p in VERSIONED}}}


def warn(path, problem: str) -> None:
    """Report a store file or folder that cannot be used, on one line of stderr naming it (the caller skips or
    redoes it)."""
    print(f"warning: {path}: {problem}", file=sys.stderr, flush=True)


class Run:
    """One run directory and the operations a script performs on it."""

    def __init__(self, script: str, cfg, root: str | os.PathLike | None = None):
        self.script, self.cfg = script, cfg
        self.root = Path(root if root is not None else getattr(cfg, "runs_dir", "runs"))
        self.hash = config_hash(cfg)
        self.dir = self.root / script / self.hash
        self.logs: list[dict] = []
        self._t0 = time.time()
        self._elapsed_before = 0.0

    # ------------------------------------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return (self.dir / "result.json").exists()

    def result(self) -> dict:
        path = self.dir / "result.json"
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path} is damaged ({exc}); delete it and run again to compute the run anew") from None

    def elapsed(self) -> float:
        """Wall-clock seconds spent computing this run, summed over every resume."""
        return self._elapsed_before + time.time() - self._t0

    # ------------------------------------------------------------------------------------------------ logging
    def log(self, **record) -> None:
        """Append one line to ``log.jsonl`` (it is also kept in the checkpoint, so resumes keep it consistent)."""
        record.setdefault("time", round(self.elapsed(), 3))
        self.logs.append(record)
        with open(self.dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def rewrite_log(self) -> None:
        """``log.jsonl`` made to hold exactly ``self.logs`` (a resume's records, or none for a fresh start)."""
        atomic_write_text(self.dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.logs))

    # ------------------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def save_checkpoint(self, state: dict) -> None:
        import torch  # imported when a run computes: reading the store (collect, read_log) needs no torch

        state = dict(state, _logs=self.logs, _elapsed=self.elapsed())
        atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict | None:
        """The last checkpoint, or None. A corrupt or truncated file is reported, removed, and the run restarts."""
        import torch

        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "_logs" not in state:
                raise ValueError("not a checkpoint written by this repository")
        except Exception as exc:  # noqa: BLE001 - any failure to read means the file is unusable
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            warn(self.checkpoint_path, f"checkpoint is corrupt or truncated ({reason}); "
                                       "restarting this run from scratch")
            self.checkpoint_path.unlink()
            self.rewrite_log()  # from scratch: the lost epochs' records go too
            return None
        self.logs = list(state.pop("_logs"))
        self._elapsed_before = float(state.pop("_elapsed"))
        self._t0 = time.time()
        self.rewrite_log()
        return state

    # ------------------------------------------------------------------------------------------------ outcome
    def save_model(self, model) -> None:
        """The run's final weights, ``model.pt`` (``save_state_dict``)."""
        save_state_dict(self.dir / "model.pt", model)

    def finish(self, result: dict) -> dict:
        result = dict(result, script=self.script, hash=self.hash, wall_time=round(self.elapsed(), 3),
                      provenance=provenance())
        atomic_write_json(self.dir / "result.json", result)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "failed.json").unlink()
        return result

    def fail(self, reason: str) -> None:
        atomic_write_json(self.dir / "failed.json", {"reason": reason, "time": time.time()})

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's lock (``RunLock``); if a live process holds it, say so and wait for it, or raise
        ``RunLocked`` when ``LOCK_WAIT`` is off. The first write of a run: a runs directory that cannot hold it ends
        in one line naming it (a missing one is created, parents included)."""
        lock = RunLock(self.dir / "lock")
        told, pause = False, 0.05
        while True:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                if lock.acquire():
                    break
            except OSError as exc:
                raise unusable_store(self.root, exc) from None
            if lock.holder is not None:  # else: released or broken meanwhile, try again
                if not LOCK_WAIT:
                    raise RunLocked(f"{self.dir} is being computed by {lock.holder}; this job does not wait for "
                                    "it (it would hold its GPU): submit again once that is done", self.dir)
                if not told:
                    print(f"waiting: {lock.holder} is computing {self.dir}", file=sys.stderr, flush=True)
                    told = True
            time.sleep(pause)
            pause = min(2 * pause, 2.0)
        try:
            yield self
        finally:
            lock.release()


# ---------------------------------------------------------------------------------------------------- the lock
LOCK_HEARTBEAT_S = 30.0  # a lock's holder sets the lock file's modification time this often
LOCK_STALE_S = 300.0  # a lock whose modification time is older than this is stale: its holder is presumed dead
LOCK_WAIT = True  # whether Run.lock waits for a live holder; off: it raises RunLocked (slurm.jobs turns it off)


class RunLocked(RuntimeError):
    """The run in ``run_dir`` is being computed by another live process, and this one does not wait (``LOCK_WAIT``
    is off)."""

    def __init__(self, message: str, run_dir: Path | None = None):
        super().__init__(message)
        self.run_dir = run_dir


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _slurm_restarts() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _create(path: Path, text: str) -> int | None:
    """Make ``path`` hold ``text`` unless it exists, atomically (written aside, then ``link()``ed): the open file
    descriptor of the new file, or None when ``path`` exists."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
        try:
            os.link(tmp, path)
            made = True
        except FileExistsError:
            made = os.fstat(fd).st_nlink == 2  # NFS: a retransmitted link() whose first try did succeed
        now = time.time()
        if made:
            os.utime(fd, (now, now))  # the heartbeat, by this host's clock (NFS stamps new files by the server's)
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.unlink(tmp)
    if not made:
        os.close(fd)
        return None
    return fd


class RunLock:
    """A run's lock file, held by at most one process of all the hosts sharing the runs directory (the module's
    docstring says how). ``acquire()`` takes it or, when a live process holds it, leaves a description of that
    holder in ``holder``; a stale lock met on the way is broken."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None
        self.holder: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> bool:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "pidns": _pid_namespace(),
              "job": os.environ.get("SLURM_JOB_ID"), "restarts": _slurm_restarts(), "since": time.time(),
              "token": secrets.token_hex(8)}
        fd = _create(self.path, json.dumps(me) + "\n")
        if fd is None:
            self.holder = self._break_if_stale()
            return False
        self.fd, self.holder = fd, None
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, args=(os.fstat(fd).st_ino,), daemon=True,
                                      name=f"heartbeat {self.path}")
        self._beat.start()
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        self._beat.join()
        try:
            ours = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            ours = False
        os.close(self.fd)
        self.fd = None
        if ours:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _heartbeat(self, inode: int) -> None:
        warned = False
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            now = time.time()
            try:
                os.utime(self.fd, (now, now))
                lost = os.stat(self.path).st_ino != inode
            except FileNotFoundError:
                lost = True
            except OSError as exc:
                warn(self.path, f"cannot refresh this lock's heartbeat ({exc.strerror})")
                continue
            if lost and not warned:
                warn(self.path, "this process's lock was broken as stale by another process (its heartbeat was "
                                f"more than {LOCK_STALE_S:.0f} s late?); two processes may now compute this run")
                warned = True

    @staticmethod
    def read(path: Path):
        """(holder dict or None, the file's inode, seconds since its heartbeat), or None when there is no file."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            data = os.read(fd, 65536)
        finally:
            os.close(fd)
        try:
            info = json.loads(data)
            info = info if isinstance(info, dict) else None
        except ValueError:
            info = None
        return info, st.st_ino, time.time() - st.st_mtime

    def _break_if_stale(self) -> str | None:
        """Break the lock if it is stale; the description of its live holder, or None (no lock any more)."""
        seen = self.read(self.path)
        if seen is None:
            return None
        info, inode, age = seen
        why = stale_reason(info, age)
        if why is None:
            return (f"host {info.get('host')} pid {info.get('pid')}"
                    + (f" (Slurm job {info['job']})" if info.get("job") else "") + f", heartbeat {age:.0f} s ago")
        token = str(info.get("token")) if info and info.get("token") else f"inode{inode}"
        claim = self.path.with_name(f"{self.path.name}.break.{token}")
        fd = _create(claim, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}) + "\n")
        if fd is None:  # another process is breaking it (a few system calls), or died doing so
            claimed = self.read(claim)
            if claimed is None or claimed[2] < 5.0:
                return None
            if claimed[2] > LOCK_STALE_S:  # an orphaned claim is cleared once it is stale itself
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(claim)
                return None
            who = claimed[0] or {}
            return f"nobody (a stale lock that host {who.get('host')} pid {who.get('pid')} began to break)"
        try:
            now = self.read(self.path)
            if now is not None and now[1] == inode and (now[0] or {}).get("token") == (info or {}).get("token"):
                os.unlink(self.path)
                warn(self.path, f"broke a stale lock ({why})")
        finally:
            os.close(fd)
            os.unlink(claim)
        return None


def stale_reason(info: dict | None, age: float) -> str | None:
    """Why a lock file with holder ``info`` (None: it names none) and heartbeat ``age`` seconds ago is stale, or None
    when its holder may be alive."""
    if age > LOCK_STALE_S:
        return f"its heartbeat is {age:.0f} s old, more than {LOCK_STALE_S:.0f} s"
    if info is None:
        return "it names no holder (left by an older version of this store)"
    here = info.get("host") == socket.gethostname() and info.get("pidns", "") == _pid_namespace()
    if here and isinstance(info.get("pid"), int) and not _alive(info["pid"]):
        return f"its holder, pid {info['pid']} of this host, is dead"
    job = os.environ.get("SLURM_JOB_ID")
    if job and info.get("job") == job and int(info.get("restarts") or 0) < _slurm_restarts():
        return f"its holder was an earlier run of this Slurm job {job}, which was requeued"
    return None


def run_for(module, cfg) -> Run:
    return Run(module.SCRIPT, cfg)


def execute(module, cfg) -> dict:
    """The result of ``module`` on ``cfg``: read from the store when done, otherwise computed (resuming) and stored.

    It sits above the training code (``common.train``, ``common.distributed``), which it imports when called: reading
    the store (``collect``, ``read_log``, ``Run``) needs no torch."""
    from common import distributed
    from common.train import apply_runtime

    if isinstance(module, str):
        module = importlib.import_module(module)
    validate = getattr(module, "validate", None)
    if validate is not None:
        validate(cfg)
    if hasattr(cfg, "deterministic"):  # a script's Runtime (common.cli): how this process computes
        apply_runtime(cfg)
    run = run_for(module, cfg)
    if distributed.active():  # several DDP ranks: rank 0 writes the store, the others compute along
        return _execute_ranks(module, cfg, run)
    if run.done:
        return run.result()
    with run.lock():
        if run.done:  # finished by another process while we waited for the lock
            return run.result()
        return compute_and_store(module, cfg, run)


def compute_and_store(module, cfg, run: Run) -> dict:
    """Compute ``run`` (its lock held) and store its result; a diverged run is recorded as failed.

    ``config.json`` is (re)written unless it already holds the config; a run without a checkpoint to resume from
    (new, failed before, or its checkpoint lost) starts from scratch, with a fresh ``log.jsonl``."""
    config = {"script": run.script, "config": C.to_dict(cfg, True)}
    try:
        current = json.loads((run.dir / "config.json").read_text())
    except (OSError, ValueError):
        current = None
    if current != config:
        atomic_write_json(run.dir / "config.json", config)
    if not run.checkpoint_path.exists():
        (run.dir / "log.jsonl").unlink(missing_ok=True)
    try:
        result = module.compute(cfg, run)
    except RunFailed as exc:
        run.fail(str(exc))
        with contextlib.suppress(FileNotFoundError):
            run.checkpoint_path.unlink()  # a diverged state is not worth resuming from
        raise
    return run.finish(result)


# ---------------------------------------------------------------------------------------------------- several ranks
def _execute_ranks(module, cfg, run: Run) -> dict:
    """``execute`` with several DDP ranks (``common.distributed``): rank 0 takes the run's lock, decides, computes and
    writes; the other ranks compute alongside it (the collectives keep them in step) through a run that writes
    nothing. Rank 0's decision -- is the run already done? or a string: why it cannot be computed now -- is
    broadcast to every rank."""
    from common import distributed

    if distributed.rank() == 0:
        if run.done:
            distributed.broadcast(True)
            return run.result()
        try:
            with run.lock():
                if distributed.broadcast(run.done):
                    return run.result()
                result = compute_and_store(module, cfg, run)
        except RunLocked as exc:
            if exc.run_dir == run.dir:  # this run's lock, not a dependency's: the others wait for a decision
                distributed.broadcast(str(exc))
            raise
        distributed.barrier()  # result.json is written
        return result
    decision = distributed.broadcast(None)
    if isinstance(decision, str):  # rank 0 found the run locked by another process
        raise RunLocked(decision, run.dir)
    if not decision:
        with tempfile.TemporaryDirectory(prefix=f"rank{distributed.rank()}-") as scratch:
            module.compute(cfg, WorkerRun(run, Path(scratch)))
        distributed.barrier()
    return run.result()


class WorkerRun(Run):
    """The run as a rank > 0 sees it: it reads rank 0's checkpoint to resume; logs stay in memory, and what a
    script writes into ``run.dir`` (model.pt) goes to a scratch folder that is thrown away."""

    def __init__(self, run: Run, scratch: Path):
        super().__init__(run.script, run.cfg, run.root)
        self.shared, self.dir = run.dir, scratch

    @property
    def checkpoint_path(self) -> Path:
        return self.shared / "checkpoint.pt"

    def log(self, **record) -> None:
        record.setdefault("time", round(self.elapsed(), 3))
        self.logs.append(record)

    def save_checkpoint(self, state: dict) -> None:
        pass

    def load_checkpoint(self):
        import torch

        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            self.logs, self._elapsed_before = list(state.pop("_logs")), float(state.pop("_elapsed"))
        except Exception:  # noqa: BLE001 - rank 0 reports the corrupt file and restarts; so do we
            return None
        return state


# ---------------------------------------------------------------------------------------------------- collect
def flatten(d: dict, prefix: str = "") -> dict:
    """A nested dict as one level of dotted keys: {"a": {"b": 1}} -> {"a.b": 1} (with ``prefix`` before each)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            continue  # nested tables (per-layer reports) stay in result.json, out of the tidy frame
        else:
            out[prefix + k] = tuple(v) if isinstance(v, list) else v
    return out


def collect(root: str | os.PathLike = "runs", script: str | None = None):
    """All finished runs as a tidy ``pandas.DataFrame``: one row per (run, reported point).

    Columns: ``script``, ``hash``, ``run_dir``, the flattened config (``config.<field>``), the result's scalar
    metrics, and, for results that report several points (``result["points"]``, e.g. IMP rounds), the point's fields.
    The result's ``provenance`` (code version, package versions) stays in result.json. What is not a finished run
    (a stray file or folder, a damaged ``result.json`` or ``config.json``) is skipped with a one-line warning naming it.
    """
    import pandas as pd

    root = Path(root)
    rows = []
    if root.exists() and not root.is_dir():
        raise unusable_store(root, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(root)))
    if script:
        scripts = [str(root / script)]
    else:
        scripts = []
        with contextlib.suppress(FileNotFoundError), os.scandir(root) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir():
                    scripts.append(entry.path)
                else:
                    warn(entry.path, "skipped: not a script's folder of the run store (a stray file?)")
    for sdir in scripts:
        if not os.path.isdir(sdir):
            continue
        with os.scandir(sdir) as entries:
            for entry in entries:
                if not (RUN_NAME.match(entry.name) and entry.is_dir()):
                    warn(entry.path, f"skipped: not a run directory (those are <script>/<{HASH_LEN}-hex hash>/)")
                    continue
                try:
                    with open(os.path.join(entry.path, "result.json")) as fh:
                        result = json.load(fh)
                except FileNotFoundError:
                    continue  # not finished
                except (OSError, ValueError) as exc:
                    warn(entry.path, f"skipped: result.json is damaged ({exc}); delete it and run again to compute "
                                     "the run anew")
                    continue
                try:
                    with open(os.path.join(entry.path, "config.json")) as fh:
                        conf = json.load(fh)
                    name, config = conf["script"], conf["config"]
                    if not isinstance(result, dict) or not isinstance(config, dict):
                        raise ValueError("not a run's JSON object")
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    problem = "is missing" if isinstance(exc, FileNotFoundError) else f"is damaged ({exc!r})"
                    warn(entry.path, f"skipped: config.json {problem}, so its config is unknown; delete the run "
                                     "directory and run it again")
                    continue
                points = result.pop("points", None) or [{}]
                base = {"script": name, "hash": entry.name, "run_dir": entry.path}
                base.update(flatten(config, "config."))
                base.update(flatten({k: v for k, v in result.items() if k not in ("script", "hash", "provenance")}))
                for point in points:
                    rows.append({**base, **flatten(point)})
    return pd.DataFrame(rows)


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The records of a run's ``log.jsonl``."""
    with open(Path(run_dir) / "log.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]
