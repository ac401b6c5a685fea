"""The run store: every result in this repository is a run, kept at ``runs/<script>/<hash>/``.

A run is (script, config). Its directory name is a hash of the config's canonical JSON (execution-only fields such as
the device are left out). Inside:

- ``config.json``   the full config, written when the run starts;
- ``log.jsonl``     one JSON line per epoch / round / phase;
- ``checkpoint.pt`` enough state to resume (written atomically at each checkpoint);
- ``result.json``   written last and atomically: a run that has it is done and is never recomputed;
- ``failed.json``   the reason a run failed (NaN loss, ...); the next invocation tries again from scratch;
- ``lock``          an flock held while a process computes the run, so two processes never do the same work.

A script is a module with ``SCRIPT`` (its ``python -m`` name), a ``Config`` dataclass and ``compute(cfg, run)``
returning the result dict (optionally ``validate(cfg)``). ``execute(module, cfg)`` runs it through the store;
dependencies (a pruning run's dense model) call ``execute`` on their own config, so they are computed once and reused.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import config as C
from common.errors import RunFailed

HASH_LEN = 16


def config_hash(cfg) -> str:
    return hashlib.sha256(C.canonical_json(cfg).encode()).hexdigest()[:HASH_LEN]


def atomic_write(path, write, mode: int | None = None) -> Path:
    """``write(tmp)`` into a temporary file beside ``path`` (with the same extension, for writers that infer a format
    from it), then ``os.replace`` it onto ``path``: readers see the old file or the complete new one. ``mode``: the
    file's permissions (default: the temporary file's, owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
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
        return json.loads((self.dir / "result.json").read_text())

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
            warnings.warn(f"checkpoint {self.checkpoint_path} is corrupt or truncated ({reason}); "
                          "restarting this run from scratch", stacklevel=2)
            self.checkpoint_path.unlink()
            return None
        self.logs = list(state.pop("_logs"))
        self._elapsed_before = float(state.pop("_elapsed"))
        self._t0 = time.time()
        atomic_write_text(self.dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.logs))
        return state

    # ------------------------------------------------------------------------------------------------ outcome
    def finish(self, result: dict) -> dict:
        result = dict(result, script=self.script, hash=self.hash, wall_time=round(self.elapsed(), 3))
        atomic_write_json(self.dir / "result.json", result)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "failed.json").unlink()
        return result

    def fail(self, reason: str) -> None:
        atomic_write_json(self.dir / "failed.json", {"reason": reason, "time": time.time()})

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's lock; if another process holds it, say so and wait for it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a+") as fh:
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
    """Compute ``run`` (its lock held) and store its result; a diverged run is recorded as failed."""
    if not (run.dir / "config.json").exists():
        atomic_write_json(run.dir / "config.json", {"script": run.script, "config": C.to_dict(cfg, True)})
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
    """
    import pandas as pd

    root = Path(root)
    rows = []
    scripts = [root / script] if script else sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
    for sdir in scripts:
        if not sdir.is_dir():
            continue
        with os.scandir(sdir) as entries:
            for entry in entries:
                res_path = os.path.join(entry.path, "result.json")
                try:
                    with open(res_path) as fh:
                        result = json.load(fh)
                    with open(os.path.join(entry.path, "config.json")) as fh:
                        conf = json.load(fh)
                except FileNotFoundError:
                    continue
                points = result.pop("points", None) or [{}]
                base = {"script": conf["script"], "hash": entry.name, "run_dir": entry.path}
                base.update(_flatten(conf["config"], "config."))
                base.update(_flatten({k: v for k, v in result.items() if k not in ("script", "hash")}))
                for point in points:
                    rows.append({**base, **_flatten(point)})
    return pd.DataFrame(rows)


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The records of a run's ``log.jsonl``."""
    with open(Path(run_dir) / "log.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]
