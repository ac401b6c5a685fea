"""The run store: every result in this repository is a run, kept at ``runs/<script>/<hash>/``.

A run is (script, config). Its directory name is a hash of the config's canonical JSON (execution-only fields such as
the device are left out). Inside:

- ``config.json``   the full config, written when the run starts (rewritten if it was damaged);
- ``log.jsonl``     one JSON line per epoch / round / phase (a run that starts from scratch starts a fresh one);
- ``checkpoint.pt`` enough state to resume (written atomically at each checkpoint);
- ``result.json``   written last and atomically: a run that has it is done and is never recomputed; it records its
                    ``provenance`` (the code's git commit or content hash, python and package versions);
- ``failed.json``   the reason a run failed (NaN loss, ...); the next invocation tries again from scratch;
- ``lock``          an flock held while a process computes the run, so two processes never do the same work.

Files are created with the permissions the umask gives (a group-shared store stays readable by the group).

A script is a module with ``SCRIPT`` (its ``python -m`` name), a ``Config`` dataclass and ``compute(cfg, run)``
returning the result dict (optionally ``validate(cfg)``). ``execute(module, cfg)`` runs it through the store;
dependencies (a pruning run's dense model) call ``execute`` on their own config, so they are computed once and reused.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

from common import config as C
from common.errors import RunFailed, UserError

HASH_LEN = 16
RUN_NAME = re.compile(rf"[0-9a-f]{{{HASH_LEN}}}\Z")  # a run directory's name: its config hash
CODE_ROOT = Path(__file__).resolve().parents[1]  # the repository (or the Slurm code snapshot) this code runs from
VERSIONED = ("torch", "torchvision", "torch-pruning", "numpy")  # packages whose versions every result records


def config_hash(cfg) -> str:
    return hashlib.sha256(C.canonical_json(cfg).encode()).hexdigest()[:HASH_LEN]


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
    hash of its ``.py`` files (the name of a Slurm code snapshot, ``slurm.snapshot``)."""
    try:
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() == Path(root).resolve():
            return {"git_commit": _git(root, "rev-parse", "HEAD"),
                    "git_dirty": bool(_git(root, "status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        pass
    from slurm.snapshot import code_hash

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


def atomic_write(path, write, mode: int | None = None) -> Path:
    """``write(tmp)`` into a temporary file beside ``path`` (with the same extension, for writers that infer a format
    from it), then ``os.replace`` it onto ``path``: readers see the old file or the complete new one. ``mode``: the
    file's permissions; by default those of any new file, ``0o666`` less the umask (the temporary file is created
    with ``0o666`` and the kernel applies the umask, so a group-shared store stays readable by the group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = str(path.with_name(f".{path.stem}.{secrets.token_hex(4)}{path.suffix}"))
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` written atomically, and flushed to disk before it replaces the old file."""
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")


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
        import torch

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
        """Hold the run's lock; if another process holds it, say so and wait for it. The first write of a run: a
        runs directory that cannot hold it ends in one line naming it (a missing one is created, parents included)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.dir / "lock", "a+")
        except OSError as exc:
            raise unusable_store(self.root, exc) from None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting: another process is computing {self.dir}", file=sys.stderr, flush=True)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def run_for(module, cfg) -> Run:
    return Run(module.SCRIPT, cfg)


def execute(module, cfg) -> dict:
    """The result of ``module`` on ``cfg``: read from the store when done, otherwise computed (resuming) and stored."""
    if isinstance(module, str):
        module = importlib.import_module(module)
    validate = getattr(module, "validate", None)
    if validate is not None:
        validate(cfg)
    run = run_for(module, cfg)
    ddp = sys.modules.get("common.distributed")
    if ddp is not None and ddp.active():  # several DDP ranks: rank 0 writes the store, the others compute along
        return ddp.execute(module, cfg, run, compute_and_store)
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


# ---------------------------------------------------------------------------------------------------- collect
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
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
                base.update(_flatten(config, "config."))
                base.update(_flatten({k: v for k, v in result.items() if k not in ("script", "hash", "provenance")}))
                for point in points:
                    rows.append({**base, **_flatten(point)})
    return pd.DataFrame(rows)


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The records of a run's ``log.jsonl``."""
    with open(Path(run_dir) / "log.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]
