"""What the run store holds, and the ways to read or remove its runs:

  python -m common.runs list [--script S] [--where FIELD=VALUE ...]   one line per run: script, hash, status,
                                                                      directory, key metrics (or why it has none)
  python -m common.runs show HASH_OR_DIR                              its config, the command that computes it
                                                                      again, its result
  python -m common.runs log HASH_OR_DIR                               its log.jsonl, one record per line
  python -m common.runs tensorboard [HASH_OR_DIR ...] [--script S] [--where FIELD=VALUE ...] --out DIR
                                                                      their log.jsonl as TensorBoard event files,
                                                                      DIR/<script>/<hash>/ (needs tensorboard)
  python -m common.runs rm [HASH_OR_DIR ...] [--script S] [--where FIELD=VALUE ...] [--yes]
  python -m common.runs rm --stale [--script S] [--where FIELD=VALUE ...] [--yes]
                                                                      what stopped runs left behind: folders that hold
                                                                      only a config, writes cut short by a kill

A run is named by its directory, its hash or a unique start of its hash (at least 4 digits). ``--where`` selects by
config field (``method=bip``, ``target_sparsity=0.9``, ``pretrain.epochs=3``, ``exclude=first,last``, ``seed=None``);
several conditions must all hold. A run's status:

  done          it has ``result.json``;
  locked        a live process holds its lock (host, pid, Slurm job; ``common.store.RunLock``);
  in progress   a checkpoint but no result: computing it again resumes there;
  failed        ``failed.json``'s reason (computing it again starts from scratch);
  queued        a Slurm job was submitted for it (``common.store.JOB_FILE``) and has not started it;
  started       a config and nothing else yet;
  damaged       one of its files cannot be used: not a file, not JSON, not of the expected shape, a config.json
                that does not hash to the run's name, or one this user may not read (``collect`` skips it,
                warning); the file and its problem are shown.

``show`` prints the command that reproduces a run: its script with the flags that differ from the defaults (or from
the preset that takes the fewest), and ``--config <run>/config.json`` as an alternative; each is checked to give the
run's hash. ``tensorboard`` writes each record's numbers as scalars ``<kind>/<field>`` (``scalars``); log.jsonl stays
the record, the event files are a view of it.

Finished runs are read with ``common.store.collect``, logs with ``read_log``. ``rm`` asks before it removes anything
(unless ``--yes``) and removes nothing while a live process computes one of the runs it selected.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import math
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common import config as C
from common.atomic import leftover_temps
from common.config import OneLineParser
from common.errors import DamagedFile, UserError, exit_code, no_permission
from common.store import (HASH_LEN, JOB_FILE, PREVIOUS_CHECKPOINT, RUN_NAME, RunLock, collect, config_hash, flatten,
                          read_bytes, read_config, read_json, read_log, read_result, not_an_object, stale_reason)

STATUSES = ("done", "locked", "in progress", "failed", "queued", "started", "damaged")
# shown by list when a result has them: test_acc, or else test_auc and test_loss (Criteo); sparsity; run_time (the
# run's own time) and wall_time (with the runs it depends on, when it computed them)
METRICS = ("test_acc", "test_auc", "test_loss", "sparsity", "run_time", "wall_time")
DEBRIS_AGE_S = 60.0  # rm --stale removes a temporary file of a run nobody holds once it is this old
HASH_START = re.compile(rf"[0-9a-f]{{4,{HASH_LEN}}}\Z")


@dataclass
class Entry:
    script: str
    hash: str
    dir: Path
    status: str
    why: str = ""  # the lock's holder, failed.json's reason, the Slurm job
    config: dict = field(default_factory=dict)  # flattened: "config.<field>" -> value
    metrics: dict = field(default_factory=dict)  # collect()'s scalar results of the run's last reported point
    points: int = 0  # collect()'s rows of the run: the points its result reports (0: not done)


# ------------------------------------------------------------------------------------------------ reading the store
def live_holder(lock: Path) -> str | None:
    """Who holds the lock file ``lock`` (host, pid, Slurm job), or None when there is none or it is stale."""
    seen = RunLock.read(lock)
    if seen is None:
        return None
    info, _, age = seen
    if stale_reason(info, age) is not None:
        return None
    job = f" (Slurm job {info['job']})" if info.get("job") else ""
    return f"host {info.get('host')} pid {info.get('pid')}{job}, heartbeat {age:.0f} s ago"


def _native(value):
    return None if isinstance(value, float) and math.isnan(value) else value  # a field this run's script lacks


def _unfinished(script: str, run_dir: Path) -> Entry:
    """The state of a run that ``collect`` does not report, from the files its directory holds: each is read and
    checked (``common.store``'s readers), and a file that cannot be used makes the run "damaged", naming it."""
    entry = Entry(script, run_dir.name, run_dir, "started")
    problems = []

    def checked(read):
        try:
            return read()
        except DamagedFile as exc:
            problems.append(f"{exc.path.name} {exc.problem}")
        except UserError as exc:  # a file this user may not read
            problems.append(str(exc))
        return None

    conf = checked(lambda: read_config(run_dir))
    result = checked(lambda: read_result(run_dir))
    failed = checked(lambda: read_json(run_dir / "failed.json", not_an_object))
    holder = checked(lambda: live_holder(run_dir / "lock"))
    job = checked(lambda: read_bytes(run_dir / JOB_FILE))
    if result is not None and conf is None and not problems:
        problems.append("config.json is missing, so its result's config is unknown")
    entry.config = flatten(conf["config"], "config.") if conf else {}
    if holder:
        entry.status, entry.why = "locked", f"by {holder}"
    elif problems:
        entry.status, entry.why = "damaged", "; ".join(problems)
    elif result is not None:  # finished since collect() looked
        entry.status = "done"
    elif any((run_dir / name).exists() for name in ("checkpoint.pt", PREVIOUS_CHECKPOINT)):
        entry.status, entry.why = "in progress", "checkpoint, no result"
    elif failed is not None:
        entry.status, entry.why = "failed", str(failed.get("reason", "no reason recorded"))
    elif job is not None:
        entry.status, entry.why = "queued", f"Slurm job {job.decode(errors='replace').strip()}"
    return entry


def _script_dirs(root: Path, script: str | None) -> list[Path]:
    if script:
        return [root / script] if (root / script).is_dir() else []
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def entries(root, script: str | None = None) -> list[Entry]:
    """Every run of the store at ``root`` (of ``script`` only, if given), by script then hash."""
    try:
        return _entries(Path(root), script)
    except PermissionError as exc:  # a folder of the store this user may not list
        raise no_permission(exc.filename or root, "read") from None


def _entries(root: Path, script: str | None) -> list[Entry]:
    out = []
    for sdir in _script_dirs(root, script):
        finished = {}
        df = collect(root, sdir.name)
        for row in df.to_dict("records"):
            finished.setdefault(row["hash"], []).append(row)
        for run_dir in sorted(p for p in sdir.iterdir() if RUN_NAME.match(p.name) and p.is_dir()):
            rows = finished.get(run_dir.name)
            if not rows:
                out.append(_unfinished(sdir.name, run_dir))
                continue
            last = {k: _native(v) for k, v in rows[-1].items()}
            out.append(Entry(sdir.name, run_dir.name, run_dir, "done",
                             config={k: v for k, v in last.items() if k.startswith("config.")},
                             metrics={k: last[k] for k in METRICS if last.get(k) is not None
                                      and not (k == "test_loss" and last.get("test_acc") is not None)},
                             points=len(rows)))
    return out


# ------------------------------------------------------------------------------------------------ selecting runs
def _condition(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--where takes FIELD=VALUE (a config field, e.g. method=bip), not '{text}'")
    return (key if key.startswith("config.") else f"config.{key}"), value


def matches(value, text: str) -> bool:
    """Whether a config value is the one written ``text`` on the command line."""
    if value is None:
        return text.lower() in ("none", "null", "")
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(text) == value
        except ValueError:
            return False
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) == text
    return str(value) == text


def select(found: list[Entry], where=()) -> list[Entry]:
    for key, text in map(_condition, where):
        if not any(key in e.config for e in found):
            raise UserError(f"no run here has the config field '{key.removeprefix('config.')}'")
        found = [e for e in found if key in e.config and matches(e.config[key], text)]
    return found


def find(root, target: str) -> Entry:
    """The run named by ``target``: its directory, its hash or a unique start of its hash."""
    path = Path(target)
    if path.is_dir() and RUN_NAME.match(path.name):
        return next(e for e in entries(path.parent.parent, path.parent.name) if e.hash == path.name)
    if not HASH_START.match(target):
        raise UserError(f"'{target}' is neither a run directory nor a run's hash ({HASH_LEN} hex digits, or a "
                        "unique start of at least 4)")
    scripts = sorted({p.parent.name for p in Path(root).glob(f"*/{target}*") if RUN_NAME.match(p.name)})
    hits = [e for script in scripts for e in entries(root, script) if e.hash.startswith(target)]
    if not hits:
        raise UserError(f"no run {target} in {root}")
    if len(hits) > 1:
        raise UserError(f"{target} starts the hashes of {len(hits)} runs ({', '.join(e.hash for e in hits[:4])}"
                        f"{', ...' if len(hits) > 4 else ''}); give more digits")
    return hits[0]


def chosen(args) -> list[Entry]:
    """The runs a list / rm command names: its targets, else its ``--script`` and ``--where`` selection."""
    if getattr(args, "targets", None):
        found = list({e.dir: e for e in (find(args.runs_dir, t) for t in args.targets)}.values())
        found = [e for e in found if not args.script or e.script == args.script]
    else:
        found = entries(args.runs_dir, args.script)
    found = select(found, args.where)
    if not found:
        what = " ".join([f"--script {args.script}"] * bool(args.script) + [f"--where {w}" for w in args.where])
        raise UserError(f"no run in {args.runs_dir}" + (f" matches {what}" if what else ""))
    return found


# ------------------------------------------------------------------------------------------------ the verbs
def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def line(e: Entry) -> str:
    if e.status == "done":
        detail = "  ".join(f"{k} {v:.1f} s" if k in ("run_time", "wall_time") else f"{k} {_fmt(v)}"
                           for k, v in e.metrics.items())
        detail += f"  (last of {e.points} points)" if e.points > 1 else ""
    else:
        detail = e.why
    return f"{e.script:16s} {e.hash}  {e.status:11s}  {e.dir}  {detail}".rstrip()


def list_runs(args) -> None:
    found = chosen(args)
    for e in found:
        print(line(e))
    counts = [f"{n} {s}" for s in STATUSES if (n := sum(e.status == s for e in found))]
    print(f"{len(found)} run{'s' * (len(found) != 1)}: {', '.join(counts)}")


def _hash_of(module, argv: list[str]) -> str:
    """The run hash that the command line ``argv`` of script ``module`` gives, or why it is refused."""
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:  # argparse's refusal: returned, not printed
            return config_hash(C.parse_args(module.Config, argv, presets=getattr(module, "PRESETS", None),
                                            script=module.SCRIPT))
    except UserError as exc:
        return str(exc)
    except SystemExit:
        return err.getvalue().strip().removeprefix("error: ")


def reproduce(e: Entry, doc: dict) -> list[str]:
    """The commands that compute the run ``e`` (its config.json: ``doc``) again, each checked to give its hash: its
    script with the flags that differ from the defaults (or from the preset that takes the fewest: a profile's run
    built from a preset may hold a setting its method ignores, which no flag may give), and ``--config`` its
    config.json, which gives every run its hash (its settings are taken as they are stored)."""
    try:
        module = importlib.import_module(e.script)
        cfg = C.build(module.Config, **C.settings(module.Config, doc, f"{e.dir}/config.json", module.SCRIPT))
    except ImportError:
        return [f"reproduce: no script {e.script} in this checkout"]
    except UserError as exc:
        return [f"reproduce: not with this checkout's {e.script} ({exc})"]
    presets = getattr(module, "PRESETS", None) or {}
    tried = []
    for preset in (None, *sorted(presets)):
        argv = ["--preset", preset] * bool(preset) + C.flags(cfg, C.build(module.Config, presets, preset))
        tried.append((argv, _hash_of(module, argv)))
    commands = sorted((argv for argv, got in tried if got == e.hash), key=len)[:1]
    from_file = ["--config", str(e.dir / "config.json")]
    if (got := _hash_of(module, from_file)) == e.hash:
        commands.append(from_file)
    lines = [f"{'reproduce:' if i == 0 else '       or:'} {shlex.join(['python', '-m', e.script, *argv])}"
             for i, argv in enumerate(commands)]
    if len(commands) < 2:  # which one does not give the run's hash, and why
        why = tried[0][1] if len(commands) == 1 else got
        why = f"they give run {why}" if RUN_NAME.match(why) else why.split("; leave it out")[0]
        lines.append(f"           ({'flags alone' if len(commands) == 1 else 'neither flags nor its config.json'} "
                     f"cannot give run {e.hash}: {why})")
    return lines


def show(args) -> None:
    e = find(args.runs_dir, args.target)
    print(f"{e.script} {e.hash}  {e.status}" + (f" ({e.why})" if e.why else ""))
    print(f"directory: {e.dir}")
    try:
        conf = read_config(e.dir)
    except UserError:  # the status line names the problem
        conf = None
    if conf:
        print("\n".join(reproduce(e, conf)))
    print("config:" if conf or e.status != "damaged" else "config: not shown (config.json cannot be used: above)")
    if conf or e.status != "damaged":
        print(json.dumps((conf or {}).get("config"), indent=1, sort_keys=True))
    if e.status == "done":
        print("result:")
        print(json.dumps(read_result(e.dir), indent=1, sort_keys=True))


def log(args) -> None:
    e = find(args.runs_dir, args.target)
    if not (e.dir / "log.jsonl").exists():
        raise UserError(f"{e.dir} has no log.jsonl (its script logs nothing, or the run has not started)")
    for record in read_log(e.dir):
        print("  ".join(f"{k} {_fmt(v)}" for k, v in record.items()))


STEP_KEYS = ("step", "epoch", "round")  # a log record's position in its run, the most precise first


def _increasing(values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values) and \
        all(a < b for a, b in zip(values, values[1:]))


def scalars(records: list[dict]) -> list[tuple[str, int, float]]:
    """A run's log records as TensorBoard scalars (tag, step, value). The tag is ``<kind>/<field>`` (a nested field's
    name dotted), the kind the record's ``event``, or ``epoch`` for the per-epoch records, which have none; the step
    the first of ``STEP_KEYS`` that every record of its kind holds, increasing (else the record's number in its kind,
    from 1). Every number is a scalar, ``time`` (seconds since the run started) included."""
    kinds: dict[str, list[dict]] = {}
    for record in records:
        kinds.setdefault(str(record.get("event", "epoch")), []).append(record)
    out = []
    for kind, group in kinds.items():
        key = next((k for k in STEP_KEYS if _increasing([r.get(k) for r in group])), None)
        for number, record in enumerate(group, 1):
            fields = flatten({k: v for k, v in record.items() if k not in ("event", key)})
            out += [(f"{kind}/{name}", record[key] if key else number, float(value)) for name, value in fields.items()
                    if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return out


def tensorboard(args) -> None:
    """Write each selected run's log.jsonl as TensorBoard event files in ``args.out``/<script>/<hash>/ (those of an
    earlier conversion there are replaced)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("writing TensorBoard event files needs the tensorboard package, which is not installed: "
                        "pip install tensorboard") from None
    if not (args.targets or args.script or args.where):
        raise UserError("tensorboard needs the runs to convert: hashes or directories, --script or --where")
    written = 0
    for e in chosen(args):
        records = read_log(e.dir)
        if not records:
            print(f"skipped {e.dir}: no log records")
            continue
        out = Path(args.out) / e.script / e.hash
        try:
            out.mkdir(parents=True, exist_ok=True)
            for old in out.glob("events.out.tfevents.*"):
                old.unlink()
        except OSError as exc:
            raise UserError(f"--out {args.out}: cannot write {exc.filename or out} ({exc.strerror})") from None
        values = scalars(records)
        with contextlib.closing(SummaryWriter(log_dir=str(out))) as writer:
            for tag, step, value in values:
                writer.add_scalar(tag, value, step)
        print(f"{out}: {len(values)} values of {len(records)} records of {e.dir}/log.jsonl")
        written += 1
    if written:
        print(f"view them: tensorboard --logdir {args.out}")


def _stale(args) -> tuple[list[Entry], dict[Path, list[Path]]]:
    """What stopped runs left (``rm --stale``): the runs whose folder holds only a config (and a dead lock), and the
    temporary files of writes cut short (``atomic.leftover_temps``) in the other runs nobody holds."""
    found = select(entries(args.runs_dir, args.script), args.where)
    empty, debris = [], {}
    for e in found:
        if e.status == "locked":
            continue
        temps = leftover_temps(e.dir, DEBRIS_AGE_S)
        try:
            names = set(os.listdir(e.dir)) - {t.name for t in temps}
        except OSError:
            continue
        if e.status == "started" and names <= {"config.json", "lock"}:
            empty.append(e)
        elif temps:
            debris[e.dir] = temps
    return empty, debris


def confirmed(args, question: str) -> bool:
    """``--yes``, or the user's answer to ``question`` (anything but y / yes, or no input: no, "nothing removed")."""
    if args.yes:
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing removed")
    return False


def rm_stale(args) -> int:
    if args.targets:
        raise UserError("rm --stale finds the runs itself; give it no HASH_OR_DIR (--script and --where narrow it)")
    empty, debris = _stale(args)
    if not empty and not debris:
        print(f"nothing stale in {args.runs_dir}")
        return 0
    for e in empty:
        print(line(e))
    for run_dir, temps in debris.items():
        print(f"{run_dir}  {len(temps)} temporary file(s) of an interrupted write: {', '.join(t.name for t in temps)}")
    if not confirmed(args, f"remove these {len(empty)} run(s) and {sum(map(len, debris.values()))} file(s)?"):
        return 1
    removed = 0
    for e in empty:
        if live_holder(e.dir / "lock") is None:  # nobody took it up meanwhile
            shutil.rmtree(e.dir, ignore_errors=True)
            removed += not e.dir.exists()
    files = 0
    for temps in debris.values():
        for t in temps:
            try:
                t.unlink()
                files += 1
            except FileNotFoundError:
                pass
    print(f"removed {removed} run(s) and {files} temporary file(s)")
    return 0


def rm(args) -> int:
    if args.stale:
        return rm_stale(args)
    if not (args.targets or args.script or args.where):
        raise UserError("rm needs the runs to remove: hashes or directories, --script or --where (or --stale)")
    found = chosen(args)
    for e in found:
        holder = live_holder(e.dir / "lock")
        if holder:
            raise UserError(f"{e.dir} is being computed by {holder}; nothing removed (leave it out of the selection, "
                            "or stop that process first)")
    for e in found:
        print(line(e))
    if not confirmed(args, f"remove these {len(found)} run(s)?"):
        return 1
    for e in found:
        shutil.rmtree(e.dir)
    print(f"removed {len(found)} run(s)")
    return 0


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m common.runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default="runs", help="root of the run store (default: runs, in the current "
                                                             "directory)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="list|show|log|rm|tensorboard")

    def selection(p, targets: bool):
        if targets:
            p.add_argument("targets", nargs="*", metavar="HASH_OR_DIR", help="runs named by hash or directory")
        p.add_argument("--script", default=None, help="only the runs of this script (e.g. gmp.prune)")
        p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                       help="only the runs whose config has this value (repeatable: all must hold)")
        p.add_argument("--runs-dir", default=argparse.SUPPRESS, help="root of the run store")

    selection(verbs.add_parser("list", help="one line per run"), targets=False)
    for name, what in (("show", "a run's config, the command that reproduces it, its result"),
                       ("log", "a run's log.jsonl")):
        p = verbs.add_parser(name, help=what)
        p.add_argument("target", metavar="HASH_OR_DIR")
        p.add_argument("--runs-dir", default=argparse.SUPPRESS, help="root of the run store")
    p = verbs.add_parser("rm", help="remove runs (asks first)")
    selection(p, targets=True)
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.add_argument("--stale", action="store_true",
                   help="remove what stopped runs left: folders holding only a config, and temporary files of "
                        f"writes cut short (older than {DEBRIS_AGE_S:.0f} s) in runs nobody holds")
    p = verbs.add_parser("tensorboard", help="runs' log.jsonl as TensorBoard event files (needs tensorboard)")
    selection(p, targets=True)
    p.add_argument("--out", required=True, metavar="DIR", help="write the event files to DIR/<script>/<hash>/")
    args = parser.parse_args(argv)
    action = {"list": list_runs, "show": show, "log": log, "rm": rm, "tensorboard": tensorboard}[args.verb]
    returned = []
    try:
        return exit_code(lambda: returned.append(action(args))) or (returned[0] or 0)
    except BrokenPipeError:  # the reader of the output left (| head)
        sys.stdout = None
        return 0


if __name__ == "__main__":
    sys.exit(main())
