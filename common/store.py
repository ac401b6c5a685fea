"""The run store: every result in this repository is a run, kept at ``runs/<script>/<hash>/``.

A run is (script, config). Its directory name is a hash of the config's canonical JSON (execution-only fields such as
the device are left out). Inside:

- ``config.json``   the full config, written when the run starts (and the sha256 of any file a ``content`` field
                    names); it must hash to the folder's name: one that does not (damaged, edited) is not trusted
                    (``collect`` skips the run, warning) and is rewritten when that config is run again;
- ``log.jsonl``     one JSON line per epoch / round / phase (a run that starts from scratch starts a fresh one);
- ``checkpoint.pt`` enough state to resume (written atomically and flushed to disk at each checkpoint; the one it
                    replaced is kept as ``checkpoint.prev.pt``, the fallback when the newest is unreadable); both are
                    removed when the run finishes (``--keep-checkpoint`` keeps ``checkpoint.pt``);
- ``result.json``   written last and atomically: a run that has it is done and is never recomputed; it records its
                    ``provenance`` (the hash of the Python sources, and the git commit and whether those sources
                    differ from it; python and package versions), ``wall_time`` (seconds from the run's start to its
                    result, summed over resumes, including the time spent computing or reading the runs it depends on,
                    e.g. its dense model) and ``run_time`` (the same less the time in those runs: the run's own);
- ``failed.json``   the reason a run failed (NaN loss, ...); the next invocation tries again from scratch;
- ``lock``          present while a process computes the run, so two processes never do the same work (below).

Files are created with the permissions the umask gives (a group-shared store stays readable by the group). Every
file is read through ``read_bytes`` / ``read_json`` and checked against the shape the code expects: what is not a
regular file (never opened blocking: a FIFO does not hang a reader), not JSON or of another shape is a
``DamagedFile``, one line naming it; a file this user may not read is one line naming what it needs. A writer
killed mid-write leaves a temporary file beside its target; it is removed when the run is next opened (its lock
taken), or by ``python -m common.runs rm --stale``. A run refused (``UserError``) before it wrote anything but its
config leaves no folder.

A script is a module with ``SCRIPT``, a ``Config`` dataclass and ``compute(cfg, run)`` (and optionally ``validate``,
``check_data``, ``PRESETS``, ``dependencies``, ``ONE_PROCESS``): "Writing a script" in common/README.md says what each is, with a
template. ``execute(module, cfg)`` runs it through the store. The runs a script needs first (a pruning run's dense
model, a rewinding point, a BiP mask) are data: its ``dependencies(cfg)`` lists them as (script, config), and
``execute`` executes each of them (read from the store when done, so each is computed once and reused) before it
calls ``compute``, which reads them through ``run.dependency(script, cfg)``: the finished ``Run`` (its ``dir``, its
``result()``). A run that its script does not declare is refused there (``UndeclaredDependency``), and so is a call
of ``execute`` from inside a ``compute``, so the declared list -- what a Slurm submission queues ahead of a run and
what ``make plan-*`` counts -- is by construction what a run uses. An accessor on the run, rather than a third
argument of ``compute``, keeps every script's ``compute(cfg, run)`` and the helpers it calls (``load_dense(cfg, run,
device)``) as they read: a loader names the run it wants by the same (script, config) its script declares, and the
refusal lives in one place. The time spent executing the dependencies is the run's: part of its ``wall_time``, not
of its ``run_time`` (the same whether they were computed or read). A script's checks of its input that need the data
(``check_data(cfg)``: a dataset read, a model traced; unlike ``validate``, never made where a run is only submitted)
run before its dependencies, so a refused run stores nothing, its dependencies included.

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
import stat
import subprocess
import sys
import threading
import tempfile
import time
from pathlib import Path

from common import config as C
from common.atomic import atomic_write, atomic_write_json, atomic_write_text, full_disk_named, leftover_temps
from common.errors import DamagedFile, RunFailed, UserError, no_permission
from common.sources import code_hash

HASH_LEN = 16
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # in a run's directory: the checkpoint before the newest, a fallback
JOB_FILE = "slurm_job"  # in a run's directory: the id of the Slurm job that computes it (written by slurm.submit)
RUN_NAME = re.compile(rf"[0-9a-f]{{{HASH_LEN}}}\Z")  # a run directory's name: its config hash
CODE_ROOT = Path(__file__).resolve().parents[1]  # the repository (or the Slurm code snapshot) this code runs from
VERSIONED = ("torch", "torchvision", "torch-pruning", "numpy")  # packages whose versions every result records


def config_hash(cfg) -> str:
    return hashlib.sha256(C.canonical_json(cfg).encode()).hexdigest()[:HASH_LEN]


def read_checkpoint(path) -> dict:
    """A checkpoint file's state (tensors and plain data only: ``weights_only``); a ``ValueError`` or torch's error
    when it is not one written by this repository."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "_logs" not in state:
        raise ValueError("not a checkpoint written by this repository")
    return state


def save_state_dict(path, module) -> None:
    """``module``'s state dict, every tensor detached and on the CPU, written by ``torch.save`` to ``path`` (the
    archive inside the file is named after ``path``: write it under its final name for the same bytes)."""
    import torch

    with full_disk_named(path):
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)


# ---------------------------------------------------------------------------------------------------- reading files
# Every file read from the store is read by these helpers and checked against the shape the code expects: a file
# that is not (a folder or a FIFO in its place, bytes that are not JSON, JSON of another shape) is a DamagedFile,
# which a reader of one run reports in one line and a reader of the whole store (collect) skips with one warning.
def _kind(mode: int) -> str:
    return next((what for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                                         (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                                         (stat.S_ISBLK, "a device")) if test(mode)), "not a regular file")


def read_bytes(path, fix: str = "remove it and run again") -> bytes | None:
    """The bytes of the store file ``path``, or None when there is none. Something else in its place (a folder, a
    FIFO: opened without blocking, so a FIFO never hangs the reader) is a ``DamagedFile`` (``fix``: what to do);
    a file this user may not read is a one-line ``UserError`` naming what is needed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise no_permission(path, "read") from None
    except OSError as exc:  # a socket (ENXIO), a dangling device, ...
        raise DamagedFile(path, f"cannot be opened ({exc.strerror})", fix) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DamagedFile(path, f"is {_kind(mode)}, not a file",
                              re.sub(r"^(remove|delete) it", r"\1 it (rm -r)", fix) if stat.S_ISDIR(mode) else fix)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except IsADirectoryError:
        raise DamagedFile(path, "is a folder, not a file", fix) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_json(path, shape=None, fix: str = "remove it and run again"):
    """The JSON document of the store file ``path`` (None when there is none), checked by ``shape(data)``: None when
    it is what the code expects, else the problem (a ``DamagedFile``, as are bytes that are not JSON)."""
    raw = read_bytes(path, fix)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DamagedFile(path, f"is damaged ({exc})", fix) from None
    problem = shape(data) if shape is not None else None
    if problem:
        raise DamagedFile(path, f"is damaged ({problem})", fix)
    return data


def not_an_object(data) -> str | None:
    """None for a JSON object, else what it is instead (a ``shape`` for ``read_json``)."""
    if isinstance(data, dict):
        return None
    kind = ("null" if data is None else "boolean" if isinstance(data, bool) else "array" if isinstance(data, list)
            else "string" if isinstance(data, str) else "number")
    return f"a JSON {kind}, not an object"


def result_shape(data) -> str | None:
    """What is wrong with a ``result.json`` document, or None: a JSON object whose ``points``, if any, are a list of
    JSON objects."""
    if not isinstance(data, dict):
        return not_an_object(data)
    points = data.get("points")
    if points is not None and not (isinstance(points, list) and all(isinstance(p, dict) for p in points)):
        return "its 'points' are not a list of JSON objects"
    return None


RESULT_FIX = "delete it and run again to compute the run anew"
CONFIG_FIX = "run that config again to rewrite it, or delete the run directory"


def config_doc(script: str, cfg) -> dict:
    """What a run's ``config.json`` holds: its script and config (the hashed fields), and the sha256 of each file a
    ``content`` field names (dotted field -> "sha256:...", only where one is set), with which its hash is checked."""
    plain, hashed = C.to_dict(cfg, True), json.loads(C.canonical_json(cfg))
    doc = {"script": script, "config": plain}
    digests = {}

    def walk(a, b, prefix=""):
        for key, value in a.items():
            if isinstance(value, dict):
                walk(value, b[key], f"{prefix}{key}.")
            elif value != b[key]:
                digests[prefix + key] = b[key]

    walk(plain, hashed)
    if digests:
        doc["digests"] = digests
    return doc


def doc_hash(doc: dict) -> str:
    """The run hash of a ``config.json`` document (``config_hash`` of the config it was written from)."""
    data = json.loads(json.dumps(doc["config"])) if doc.get("digests") else doc["config"]
    for dotted, digest in (doc.get("digests") or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = digest
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:HASH_LEN]


def read_config(run_dir) -> dict | None:
    """The ``config.json`` document of the run in ``run_dir`` (None when it has none), checked: a JSON object with
    the run's script (its folder's name) and a config whose hash is the run's (its folder's name) -- an edited
    config.json would put the run's result under another config."""
    run_dir = os.fspath(run_dir)  # (os.path, not pathlib: collect reads thousands)
    folder, name = os.path.split(run_dir)
    script = os.path.basename(folder)

    def shape(data):
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            return "not a JSON object with a 'config' object"
        if data.get("script") != script:
            return f"its script {data.get('script')!r} is not its folder's, {script}"
        if not isinstance(data.get("digests") or {}, dict):
            return "its 'digests' are not a JSON object"
        try:
            computed = doc_hash(data)
        except (KeyError, TypeError):
            return "its 'digests' name fields its config lacks"
        if computed != name:
            return f"its config hashes to {computed}, not to its folder's name: edited since the run was made?"
        return None

    return read_json(os.path.join(run_dir, "config.json"), shape, CONFIG_FIX)


def read_result(run_dir) -> dict | None:
    """The ``result.json`` of the run in ``run_dir`` (None when it has none), checked (``result_shape``)."""
    return read_json(os.path.join(run_dir, "result.json"), result_shape, RESULT_FIX)


def read_run(run_dir) -> tuple[dict, dict]:
    """(config.json, result.json) of the finished run in ``run_dir``, both checked; a ``UserError`` names what is
    missing or damaged."""
    conf, result = read_config(run_dir), read_result(run_dir)
    if conf is None or result is None:
        raise UserError(f"{run_dir} is not a finished run (no {'config.json' if conf is None else 'result.json'}); "
                        "give a directory runs/<script>/<hash> whose run is done, or run its script first")
    return conf, result


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
    if exc.errno == errno.EROFS:
        return UserError(f"the runs directory {root} is not writable ({exc.strerror}: {exc.filename}); make it "
                         "writable (e.g. chmod u+w) or pass --runs-dir a writable folder")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return no_permission(exc.filename or root, "write")
    return exc


def _git(root: Path, *args) -> str:
    return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def code_version(root: Path = CODE_ROOT) -> dict:
    """The version of the code in ``root``: ``{"content_hash"}``, the hash of the Python sources the results depend
    on (``common.sources``: also the name of a Slurm code snapshot), and, when ``root`` is the top of a git work
    tree, ``"git_commit"`` and ``"git_dirty"``: whether those sources differ from the commit (a changed, added or
    deleted ``.py`` file; the figures and tables a ``make fig-*`` rewrites are outputs, not code)."""
    version = {}
    try:
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() == Path(root).resolve():
            version = {"git_commit": _git(root, "rev-parse", "HEAD"),
                       "git_dirty": bool(_git(root, "status", "--porcelain", "--", ":(glob)**/*.py"))}
    except (OSError, subprocess.SubprocessError):
        pass
    return {**version, "content_hash": code_hash(root)}


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


def plain_values(records: list[dict]) -> None:
    """Replace the tensor values of ``records`` (0-d, on any device) by Python numbers, in place, reading them all
    in one host sync."""
    import torch

    where = [(r, k) for r in records for k, v in r.items() if torch.is_tensor(v)]
    if where:
        stacked = torch.stack([r[k].detach().reshape(()).to(torch.float64) for r, k in where])
        try:
            values = stacked.tolist()
        except RuntimeError:  # a tensor subclass (a device backend's) that has no tolist: one value at a time
            values = [float(v) for v in stacked]
        for (r, k), v in zip(where, values):
            r[k] = v


def hardware(cfg=None) -> dict:
    """The machine a result was computed on, so that timings are compared like for like: the device the run asked for
    (``--device``), the process's CPUs (its affinity), the world size (DDP ranks; 1 for one process) and the GPUs
    torch sees, their count and model (0 and None without CUDA)."""
    import torch

    from common import distributed
    from common.data import process_cpus

    cuda = torch.cuda.is_available()
    return {"device": getattr(cfg, "device", None), "cpus": process_cpus(), "world_size": distributed.world_size(),
            "gpus": torch.cuda.device_count() if cuda else 0, "gpu": torch.cuda.get_device_name() if cuda else None}


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
        self._written = 0  # how many of ``logs`` log.jsonl holds (the rest were deferred: ``log(defer=True)``)
        self._t0 = time.time()
        self._elapsed_before = 0.0
        self._dependency_time = 0.0  # of elapsed(): seconds spent executing the runs it depends on
        # the finished runs it declares, {(script, hash): Run}, handed over by execute_dependencies
        self.dependencies: dict[tuple[str, str], Run] = {}
        self._refused = False  # compute_and_store refused it before it did anything (its folder goes)

    # ------------------------------------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        try:
            os.stat(self.dir / "result.json")
        except (FileNotFoundError, NotADirectoryError):
            return False
        except PermissionError:
            raise no_permission(self.dir / "result.json", "read") from None
        return True

    def result(self) -> dict:
        result = read_result(self.dir)
        if result is None:
            raise DamagedFile(self.dir / "result.json", "is missing (removed while it was read?)", "run again")
        return result

    def dependency(self, script: str, cfg) -> Run:
        """The finished run of ``script`` on ``cfg`` that this run's script declares (``dependencies(cfg)``) and the
        store executed before ``compute``: its ``dir`` and ``result()``. A run not declared is refused
        (``UndeclaredDependency``): the declared list is what Slurm submissions queue ahead of this run."""
        key = (script, config_hash(cfg))
        found = self.dependencies.get(key)
        if found is None:
            listed = ", ".join(f"{s} {h}" for s, h in self.dependencies) or "none"
            raise UndeclaredDependency(f"{self.script}'s compute reads {script} {key[1]}, which its dependencies(cfg) "
                                       f"does not declare (declared and executed: {listed})")
        if not found.done:
            raise UndeclaredDependency(f"{found.dir} is not done, though {self.script} declares it")
        return found

    def elapsed(self) -> float:
        """Wall-clock seconds spent computing this run, summed over every resume: its ``wall_time``, which includes
        the time spent computing (or reading) the runs it depends on."""
        return self._elapsed_before + time.time() - self._t0

    def own_time(self) -> float:
        """``elapsed()`` less the time spent in the runs it depends on: its ``run_time``."""
        return self.elapsed() - self._dependency_time

    def write_config(self) -> None:
        """``config.json`` made to hold this run's config (``config_doc``): written when it is missing, damaged or
        edited, left alone when it holds it already."""
        path, doc = self.dir / "config.json", config_doc(self.script, self.cfg)
        try:
            current = json.loads(read_bytes(path) or b"null")
        except ValueError:
            current = None
        if current != doc:
            atomic_write_json(path, doc)

    def clear_debris(self, min_age: float = 0.0) -> list[Path]:
        """Remove the temporary files that writers killed mid-write left in the run's directory (``leftover_temps``);
        the ones removed. Called with the run's lock held, or ``min_age`` seconds after any live writer finished."""
        gone = []
        for path in leftover_temps(self.dir, min_age):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                gone.append(path)
        return gone

    def holds_only_config(self) -> bool:
        """Whether the run's directory holds nothing but its ``config.json`` (and the lock): a run that stopped before
        it did anything."""
        try:
            return set(os.listdir(self.dir)) - {"lock"} <= {"config.json"}
        except OSError:
            return False

    # ------------------------------------------------------------------------------------------------ logging
    def log(self, defer: bool = False, **record) -> None:
        """Append one record to ``log.jsonl`` (it is also kept in the checkpoint, so resumes keep it consistent).

        ``defer``: a record of a step-level event (a mask update at every step of a phase) whose values may be 0-d
        tensors still on the device: it joins the log at once but reaches the file, its tensors read in one host
        sync, with the next record that is not deferred, a checkpoint, a rewrite or the run's end."""
        record.setdefault("time", round(self.elapsed(), 3))
        self.logs.append(record)
        if not defer:
            self.flush_log()

    def flush_log(self) -> None:
        """Write the records not yet in ``log.jsonl`` (their tensor values as numbers)."""
        pending = self.logs[min(self._written, len(self.logs)):]
        self._written = len(self.logs)
        if pending:
            plain_values(pending)
            with full_disk_named(self.dir / "log.jsonl"), open(self.dir / "log.jsonl", "a") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in pending))

    def rewrite_log(self) -> None:
        """``log.jsonl`` made to hold exactly ``self.logs`` (a resume's records, or none for a fresh start)."""
        plain_values(self.logs)
        atomic_write_text(self.dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.logs))
        self._written = len(self.logs)

    # ------------------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    @property
    def checkpoints(self) -> tuple[Path, Path]:
        """The newest checkpoint and the one before it (``checkpoint.prev.pt``, kept as a fallback)."""
        return self.checkpoint_path, self.checkpoint_path.with_name(PREVIOUS_CHECKPOINT)

    def has_checkpoint(self) -> bool:
        return any(path.exists() for path in self.checkpoints)

    def save_checkpoint(self, state: dict) -> None:
        """``state`` (and the log, the time spent) as the newest checkpoint, flushed to disk; the one it replaces is
        kept as ``checkpoint.prev.pt``."""
        import torch  # imported when a run computes: reading the store (collect, read_log) needs no torch

        self.flush_log()  # the checkpoint's log holds numbers, and so does the file it resumes
        state = dict(state, _logs=self.logs, _elapsed=self.elapsed(), _dependency_time=self._dependency_time)
        atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp), previous=self.checkpoints[1])

    def drop_checkpoints(self, keep_newest: bool = False) -> None:
        """Remove the checkpoints (the run finished or failed), all or all but the newest."""
        for path in self.checkpoints[int(keep_newest):]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def load_checkpoint(self) -> dict | None:
        """The newest readable checkpoint, or None. A corrupt or truncated file is reported and removed, and the run
        resumes from the previous checkpoint or, without a readable one, restarts; something else in its place (a
        folder, a FIFO, never opened) is a ``DamagedFile``."""
        state, lost = None, False
        for path, fallback in zip(self.checkpoints, ("the previous checkpoint", None)):
            try:
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                raise DamagedFile(path, f"is {_kind(mode)}, not a file",
                                  "remove it (rm -r) and run again: the run restarts from scratch")
            try:
                state = read_checkpoint(path)
                break
            except Exception as exc:  # noqa: BLE001 - any failure to read means the file is unusable
                reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                usable = fallback and self.checkpoints[1].exists()
                warn(path, f"checkpoint is corrupt or truncated ({reason}); "
                           + (f"resuming from {fallback}, {self.checkpoints[1].name}" if usable
                              else "restarting this run from scratch"))
                path.unlink()
                lost = True
        if state is None:
            if lost:
                self.rewrite_log()  # from scratch: the lost epochs' records go too
            return None
        self.logs = list(state.pop("_logs"))
        self._elapsed_before = float(state.pop("_elapsed"))
        self._dependency_time = float(state.pop("_dependency_time", 0.0))  # (a checkpoint written before it: 0)
        self._t0 = time.time()
        self.rewrite_log()
        return state

    # ------------------------------------------------------------------------------------------------ outcome
    def save_model(self, model) -> None:
        """The run's final weights, ``model.pt`` (``save_state_dict``)."""
        save_state_dict(self.dir / "model.pt", model)

    def finish(self, result: dict) -> dict:
        """Write ``result.json``; the run is done, and its checkpoints go (``--keep-checkpoint`` keeps the newest)."""
        self.flush_log()
        result = dict(result, script=self.script, hash=self.hash, wall_time=round(self.elapsed(), 3),
                      run_time=round(self.own_time(), 3), provenance={**provenance(), "hardware": hardware(self.cfg)})
        atomic_write_json(self.dir / "result.json", result)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "failed.json").unlink()
        self.drop_checkpoints(keep_newest=bool(getattr(self.cfg, "keep_checkpoint", False)))
        return result

    def fail(self, reason: str) -> None:
        atomic_write_json(self.dir / "failed.json", {"reason": reason, "time": time.time()})

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's lock (``RunLock``); if a live process holds it, say so and wait for it, or raise
        ``RunLocked`` when ``LOCK_WAIT`` is off. The first write of a run: a runs directory that cannot hold it ends
        in one line naming it (a missing one is created, parents included). Holding it, the temporary files of
        writes that a kill interrupted are removed (``clear_debris``); a run that was refused before it did anything
        (``compute_and_store``) leaves no directory behind."""
        lock = RunLock(self.dir / "lock")
        told, pause = False, 0.05
        while True:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                if lock.acquire():
                    break
            except FileNotFoundError:  # the run's folder was removed meanwhile (runs rm, a refused run): again
                lock.holder = None
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
        self._refused = False
        try:
            self.clear_debris()
            yield self
        finally:
            lock.release()
            if self._refused:  # compute_and_store removed its config: the folders go if nothing else came
                with contextlib.suppress(OSError):
                    self.dir.rmdir()
                    self.dir.parent.rmdir()


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


def slurm_restarts() -> int:
    """How often Slurm requeued this job (0 outside Slurm): a requeue by ``scontrol requeue`` or a preemption."""
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
              "job": os.environ.get("SLURM_JOB_ID"), "restarts": slurm_restarts(), "since": time.time(),
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
        """(holder dict or None, the file's inode, seconds since its heartbeat), or None when there is no file;
        something else in its place (a folder, a FIFO) is a ``DamagedFile``."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise no_permission(path, "read") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DamagedFile(path, f"is {_kind(st.st_mode)}, not a lock file",
                                  "remove it (rm -r) unless a process of this store is computing the run")
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
    if job and info.get("job") == job and int(info.get("restarts") or 0) < slurm_restarts():
        return f"its holder was an earlier run of this Slurm job {job}, which was requeued"
    return None


def run_for(module, cfg) -> Run:
    return Run(module.SCRIPT, cfg)


class UndeclaredDependency(RuntimeError):
    """A script's ``compute`` reached a run that its ``dependencies(cfg)`` does not declare (``Run.dependency``), or
    executed one itself: a mistake in the script, not in the user's input."""


def _module(script):
    return importlib.import_module(script) if isinstance(script, str) else script


def declared(module, cfg) -> list[tuple[str, object]]:
    """The runs ``module`` declares for ``cfg`` (its ``dependencies(cfg)``: (script, config), none without it)."""
    listed = getattr(module, "dependencies", None)
    return list(listed(cfg)) if listed is not None else []


def execute_dependencies(module, cfg, run: Run | None = None) -> Run:
    """Execute the runs ``module`` declares for ``cfg`` (``declared``), in their order, and hand the finished runs to
    ``run`` (a new ``Run`` of ``module`` on ``cfg`` when None), whose ``compute`` reads them (``Run.dependency``);
    returns ``run``. The seconds this takes are ``run``'s dependency time: in its ``wall_time``, not its ``run_time``.
    ``execute`` calls it before ``compute``; code outside a run (a benchmark, a test) calls it to read a script's
    dependencies as its ``compute`` does."""
    run = run if run is not None else run_for(module, cfg)
    t0 = time.time()
    try:
        for script, dep_cfg in declared(module, cfg):
            dep_module = _module(script)
            execute(dep_module, dep_cfg)
            finished = run_for(dep_module, dep_cfg)
            run.dependencies[(finished.script, finished.hash)] = finished
    finally:
        run._dependency_time += time.time() - t0
    return run


def _check_data(module, cfg) -> None:
    """The script's checks that need the data (``check_data(cfg)``, if it has them), before its dependencies."""
    check = getattr(module, "check_data", None)
    if check is not None:
        check(cfg)


def execute(module, cfg) -> dict:
    """The result of ``module`` on ``cfg``: read from the store when done, otherwise computed (resuming) and stored,
    the runs it declares (``dependencies(cfg)``) executed first (``execute_dependencies``).

    It sits above the training code (``common.train``, ``common.distributed``), which it imports when called: reading
    the store (``collect``, ``read_log``, ``Run``) needs no torch."""
    from common import distributed
    from common.train import apply_runtime

    module = _module(module)
    computing = getattr(_ACTIVE, "runs", None)
    if computing:
        raise UndeclaredDependency(f"{computing[-1].script}'s compute executes {module.SCRIPT} itself; declare it in "
                                   f"{computing[-1].script}.dependencies(cfg), which the store executes before "
                                   "compute, and read it with run.dependency(script, cfg)")
    validate = getattr(module, "validate", None)
    if validate is not None:
        validate(cfg)
    if hasattr(cfg, "deterministic"):  # a script's Runtime (common.cli): how this process computes
        apply_runtime(cfg)
    run = run_for(module, cfg)
    if distributed.active():  # several DDP ranks: rank 0 writes the store, the others compute along
        return _execute_ranks(module, cfg, run)
    if run.done:
        return _stored(run)
    with run.lock():
        if run.done:  # finished by another process while we waited for the lock
            return _stored(run)
        return compute_and_store(module, cfg, run)


_ACTIVE = threading.local()  # .runs: the runs whose compute is running in this thread, innermost last


@contextlib.contextmanager
def _computing(run: Run):
    """Mark ``run``'s ``compute`` as running in this thread (``execute`` refuses to be called from it)."""
    _ACTIVE.runs = [*getattr(_ACTIVE, "runs", []), run]
    try:
        yield
    finally:
        _ACTIVE.runs = _ACTIVE.runs[:-1]


def _code_name(code: dict) -> str:
    commit = code.get("git_commit")
    where = f"commit {commit[:10]}{' with local changes' if code.get('git_dirty') else ''}" if commit else "no commit"
    return f"sources {code.get('content_hash')}, {where}"


def stored_notice(run: Run, result: dict) -> list[str]:
    """What a command says when it read ``run``'s result from the store instead of computing it: one line naming the
    run's directory and, when the code that computed it (its provenance's ``content_hash``, the hash of the Python
    sources) is not this checkout's, a warning line naming both versions: this code might compute another result."""
    lines = [f"stored: {run.dir} is done; its result was read from the store, not computed"]
    then = (result.get("provenance") or {}).get("code") or {}
    now = provenance()["code"]
    if not then.get("content_hash"):
        lines[0] += " (by code whose version it does not record)"
    elif then["content_hash"] != now["content_hash"]:
        lines.append(f"warning: {run.dir} was computed by other code ({_code_name(then)}) than this checkout's "
                     f"({_code_name(now)}); to compute it with this code: python -m common.runs rm {run.hash}, then "
                     "run again")
    return lines


def _stored(run: Run) -> dict:
    """The result of a finished run, its ``config.json`` repaired if it was damaged or edited (a store this process
    cannot write keeps it, with a warning: ``collect`` skips that run until it is repaired)."""
    result = run.result()
    try:
        run.write_config()
    except (OSError, UserError) as exc:
        warn(run.dir / "config.json", f"cannot be repaired ({getattr(exc, 'strerror', None) or exc})")
    return result


def compute_and_store(module, cfg, run: Run) -> dict:
    """Compute ``run`` (its lock held): its script's ``check_data``, its declared dependencies executed
    (``execute_dependencies``), then its script's ``compute``; store its result. A diverged run (or dependency) is recorded as failed.

    ``config.json`` is (re)written unless it already holds the config; a run without a checkpoint to resume from
    (new, failed before, or its checkpoint lost) starts from scratch, with a fresh ``log.jsonl``. A run refused
    with a ``UserError`` (a missing dataset, an unusable device, ...) before it wrote anything but its config is
    removed: it would only be listed as started."""
    run.write_config()
    if not run.has_checkpoint():
        (run.dir / "log.jsonl").unlink(missing_ok=True)
    try:
        _check_data(module, cfg)
        execute_dependencies(module, cfg, run)
        with _computing(run):
            result = module.compute(cfg, run)
    except RunFailed as exc:
        run.fail(str(exc))
        run.drop_checkpoints()  # a diverged state is not worth resuming from
        raise
    except UserError:
        if run.holds_only_config():
            (run.dir / "config.json").unlink(missing_ok=True)
            run._refused = True
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
            _check_data(module, cfg)
            worker = execute_dependencies(module, cfg, WorkerRun(run, Path(scratch)))  # in step with rank 0's
            with _computing(worker):
                module.compute(cfg, worker)
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

    def log(self, defer: bool = False, **record) -> None:
        record.setdefault("time", round(self.elapsed(), 3))
        self.logs.append(record)

    def flush_log(self) -> None:
        plain_values(self.logs[self._written:])
        self._written = len(self.logs)

    def save_checkpoint(self, state: dict) -> None:
        pass

    @property
    def checkpoints(self) -> tuple[Path, Path]:
        return self.shared / "checkpoint.pt", self.shared / PREVIOUS_CHECKPOINT

    def load_checkpoint(self):
        """Rank 0's newest readable checkpoint, as rank 0 chooses it (``Run.load_checkpoint``: it reports the
        unreadable ones)."""
        for path in self.checkpoints:
            try:
                state = read_checkpoint(path)
                self.logs, self._elapsed_before = list(state.pop("_logs")), float(state.pop("_elapsed"))
                self._dependency_time = float(state.pop("_dependency_time", 0.0))
                return state
            except Exception:  # noqa: BLE001 - missing or unreadable: the next one, as rank 0 does
                continue
        return None


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
    (a stray file or folder; a ``result.json`` or ``config.json`` that is not a file, not JSON or not of the shape
    the code expects -- ``read_result``, ``read_config``; a config.json that does not hash to its folder's name; a
    run this user may not read) is skipped with a one-line warning naming it. A store this user may not list is a
    one-line ``UserError``.
    """
    import pandas as pd

    root = Path(root)
    rows = []
    try:
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
            if os.path.isdir(sdir):
                rows += _collect_script(sdir)
    except PermissionError as exc:  # the store itself, or a script's folder, cannot be listed
        raise no_permission(exc.filename or root, "read") from None
    return pd.DataFrame(rows)


def _collect_script(sdir: str) -> list[dict]:
    """``collect``'s rows of one script's folder."""
    rows = []
    with os.scandir(sdir) as entries:
        for entry in entries:
            if not (RUN_NAME.match(entry.name) and entry.is_dir()):
                warn(entry.path, f"skipped: not a run directory (those are <script>/<{HASH_LEN}-hex hash>/)")
                continue
            try:
                result = read_result(entry.path)
                if result is None:
                    continue  # not finished
                conf = read_config(entry.path)
                if conf is None:
                    warn(entry.path, "skipped: config.json is missing, so its config is unknown; delete the run "
                                     "directory and run it again")
                    continue
            except DamagedFile as exc:
                warn(entry.path, f"skipped: {exc.path.name} {exc.problem}; {exc.fix}")
                continue
            except UserError as exc:  # a file this user may not read
                warn(entry.path, f"skipped: {exc}")
                continue
            name, config = conf["script"], conf["config"]
            points = result.pop("points", None) or [{}]
            base = {"script": name, "hash": entry.name, "run_dir": entry.path}
            base.update(flatten(config, "config."))
            base.update(flatten({k: v for k, v in result.items() if k not in ("script", "hash", "provenance")}))
            for point in points:
                rows.append({**base, **flatten(point)})
    return rows


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The records of a run's ``log.jsonl`` (none when it has none). A line that is not a JSON object (cut short by
    a kill, or edited) is skipped, with one warning naming the file and those lines."""
    path = Path(run_dir) / "log.jsonl"
    records, bad = [], []
    for number, line in enumerate((read_bytes(path) or b"").decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        warn(path, f"skipped line{'s' * (len(bad) > 1)} {shown}: not a JSON object (cut short, or edited)")
    return records
