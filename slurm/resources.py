"""What a Slurm job asks for: defaults < the resource file < environment variables < command-line flags.

The file is TOML (``slurm/resources.toml`` by default, another with ``--resources FILE`` or
``PRUNING_SLURM_CONFIG``); every key is optional:

    partition = "gpu"       account = "myproj"    qos = "normal"    constraint = "a100"
    time = 240              # minutes per job (a longer run is requeued and resumes from its checkpoint)
    gpus = 4                # per node; each GPU gets one task (DistributedDataParallel across them)
    cpus = 8                # per task
    mem = "64G"             # per node, as sbatch --mem takes it
    nodes = 1
    tasks = 0               # DDP ranks per node; 0: one per GPU (1 without GPUs)
    max_parallel = 32       # array jobs running at once
    max_requeues = 3        # requeues on timeout/preemption before a job gives up
    signal_delay_s = 120    # warning (USR2) this many seconds before the time limit

Environment variables ``PRUNING_SLURM_<KEY>`` (e.g. ``PRUNING_SLURM_PARTITION=gpu``) override the file, so
``PRUNING_SLURM_GPUS=4 make fig-... CLUSTER=slurm`` works without editing anything.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, get_type_hints

from common import config as C
from common.errors import UserError

DEFAULT_FILE = Path(__file__).resolve().parent / "resources.toml"
ENV_PREFIX = "PRUNING_SLURM_"


@dataclass
class Resources:
    partition: Optional[str] = C.opt(None, "Slurm partition (None: the cluster's default)")
    account: Optional[str] = C.opt(None, "account to charge")
    qos: Optional[str] = C.opt(None, "quality of service")
    constraint: Optional[str] = C.opt(None, "node features, e.g. a100")
    time: int = C.opt(60, "time limit per job in minutes; longer runs are requeued and resume")
    gpus: int = C.opt(0, "GPUs per node (one task per GPU: DistributedDataParallel when more than one)")
    cpus: int = C.opt(1, "CPUs per task")
    mem: Optional[str] = C.opt(None, "memory per node, as sbatch --mem takes it (e.g. 64G)")
    nodes: int = C.opt(1, "nodes per job")
    tasks: int = C.opt(0, "tasks (DDP ranks) per node; 0: one per GPU, or 1 without GPUs")
    max_parallel: int = C.opt(32, "array jobs running at once")
    max_requeues: int = C.opt(3, "requeues after a timeout or preemption before a job gives up")
    signal_delay_s: int = C.opt(120, "seconds before the time limit at which a job checkpoints and requeues")

    @property
    def tasks_per_node(self) -> int:
        return self.tasks or max(1, self.gpus)


def _convert(name: str, tp, value, where: str):
    """``value`` (from TOML or an environment string) as field ``name``'s type, or a one-line error."""
    optional = tp == Optional[str]
    if value is None or (isinstance(value, str) and optional and value.lower() in ("", "none")):
        if optional:
            return None
        raise UserError(f"{where}: '{name}' cannot be empty")
    if optional or tp is str:
        if not isinstance(value, (str, int)):
            raise UserError(f"{where}: '{name}' must be a string, got {value!r}")
        return str(value)
    try:
        if isinstance(value, bool) or (not isinstance(value, str) and float(value) != int(value)):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: '{name}' must be a whole number, got {value!r}") from None
    if number < (0 if name in ("gpus", "tasks", "max_requeues", "signal_delay_s") else 1):
        raise UserError(f"{where}: '{name}' = {number} is out of range; use a positive number")
    return number


def read_file(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed resource config {path}: {exc}; fix the TOML (key = value lines)") from None
    except OSError as exc:
        raise UserError(f"cannot read resource config {path}: {exc.strerror}; check --resources / "
                        f"{ENV_PREFIX}CONFIG") from None
    known = [f.name for f in fields(Resources)]
    for key, value in data.items():
        if key not in known:
            raise UserError(f"malformed resource config {path}: unknown key '{key}'"
                            f"{' (a [section]?)' if isinstance(value, dict) else ''}; known keys: {', '.join(known)}")
    return data


def resolve(path: str | os.PathLike | None = None, env=None, **flags) -> Resources:
    """Resources from the defaults, the file, ``PRUNING_SLURM_*`` variables and ``flags`` (None = not given)."""
    env = os.environ if env is None else env
    path = Path(path or env.get(ENV_PREFIX + "CONFIG") or DEFAULT_FILE)
    explicit = path != DEFAULT_FILE
    layers = []
    if path.exists() or explicit:
        layers.append((read_file(path), f"resource config {path}"))
    layers.append(({f.name: env[ENV_PREFIX + f.name.upper()] for f in fields(Resources)
                    if ENV_PREFIX + f.name.upper() in env}, "environment"))
    layers.append(({k: v for k, v in flags.items() if v is not None}, "command line"))
    hints = get_type_hints(Resources)
    values = {}
    for data, where in layers:
        for key, value in data.items():
            if key not in hints:
                raise UserError(f"{where}: unknown resource '{key}'")
            shown = f"{ENV_PREFIX}{key.upper()}" if where == "environment" else where
            values[key] = _convert(key, hints[key], value, shown)
    return dataclasses.replace(Resources(), **values)


def add_flags(parser) -> None:
    """The resource flags of ``python -m slurm.submit`` (each overrides the file and the environment)."""
    group = parser.add_argument_group("resources (override the resource file and PRUNING_SLURM_* variables)")
    group.add_argument("--resources", default=None, help=f"resource file (default: {DEFAULT_FILE.name} in slurm/)")
    hints = get_type_hints(Resources)
    for f in fields(Resources):
        tp = int if hints[f.name] is int else str
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=tp, default=None,
                           help=f"{f.metadata['help']} (default: {f.default})")


def from_args(ns) -> Resources:
    return resolve(ns.resources, **{f.name: getattr(ns, f.name) for f in fields(Resources)})
