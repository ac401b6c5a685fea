"""What a Slurm job asks for, per run: its model's size, its script, and what the user states.

Each run's resources come from these layers, each overriding the ones before it (key by key):

  1. the defaults below (``Resources``);
  2. the table ``slurm/resources.toml``, shipped with the repository: its top-level keys, then its ``[setup."DATASET"]``
     section, its ``[setup."DATASET/MODEL"]`` section and its ``[script."SCRIPT"]`` section for the run
     (e.g. CIFAR nets 1 GPU, ImageNet ResNet-50 a node of 8 GPUs);
  3. the user's file (``--resources FILE`` or ``PRUNING_SLURM_CONFIG``), in the same format, in the same order;
  4. environment variables ``PRUNING_SLURM_<KEY>`` (e.g. ``PRUNING_SLURM_PARTITION=gpu``), for every run;
  5. ``python -m slurm.submit``'s flags (``--gpus 4``), for every run.

Three things are then decided by the run rather than chosen: a script that runs in one process (its module's
``ONE_PROCESS``: ``bip.prune``, ``posttrain.prune``, which refuse several) gets one node, one task and at most one
GPU whatever the layers say (and that GPU's share of the node's ``mem``); a run that only copies files (its module's ``copies(cfg)``: ``bip.rewind`` when the dense
run keeps the weights) gets ``COPY_JOB``: no GPU, one CPU, at most 30 minutes; and ``max_requeues``, unless a layer
sets it, is the requeue budget ``requeue_budget`` computes from the run's estimated length (``common.cost``).

Every key is optional:

    partition = "gpu"       account = "myproj"    qos = "normal"    constraint = "a100"
    time = 240              # minutes per job (a longer run is requeued and resumes from its checkpoint)
    gpus = 4                # per node; each GPU gets one task (DistributedDataParallel across them)
    cpus = 8                # per task
    mem = "64G"             # per node, as sbatch --mem takes it
    nodes = 1
    tasks = 0               # DDP ranks per node; 0: one per GPU (1 without GPUs)
    max_parallel = 32       # array jobs running at once
    max_requeues = 3        # requeues on timeout/preemption before a job gives up (default: from the run's length)
    signal_delay_s = 120    # warning (USR2) this many seconds before the time limit
    speed = 1.0             # the GPUs' training throughput relative to an A100 (0.5: half as fast)
    gpu_type = "a100"       # the GPUs' gres type: --gpus-per-node=a100:N (checked against sinfo)
    sbatch = {exclusive = true, mail-type = "END"}  # further sbatch options (checked against sbatch --help)
    srun = ["--mpi=pmix"]   # further srun arguments
    max_submit = 500        # jobs one submission queues at most (top level): stay below the site's MaxSubmitJobs
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import unicodedata
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, get_type_hints

from common import config as C
from common.errors import UserError

DEFAULT_FILE = Path(__file__).resolve().parent / "resources.toml"
ENV_PREFIX = "PRUNING_SLURM_"
SECTIONS = ("setup", "script")  # [setup."DATASET"], [setup."DATASET/MODEL"], [script."SCRIPT"]
# Requeues beyond the legs a run is estimated to need: REQUEUE_SPARE, plus REQUEUE_SLACK of those legs (for
# preemptions, start-up and resume time, and an estimate that is off)
REQUEUE_SPARE = 2
REQUEUE_SLACK = 0.25


@dataclass(frozen=True)
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
    max_requeues: Optional[int] = C.opt(None, "requeues after a timeout or preemption before a job gives up (None: "
                                              "from the run's estimated length and the time limit)")
    signal_delay_s: int = C.opt(120, "seconds before the time limit at which a job checkpoints and requeues")
    speed: float = C.opt(1.0, "the GPUs' training throughput relative to an A100 (the unit of the run-length "
                              "estimates in figures/epoch_times.toml), for the requeue budget")
    gpu_type: Optional[str] = C.opt(None, "the GPUs' type as the partition's gres names it (e.g. a100: asked as "
                                          "--gpus-per-node=a100:N); checked against sinfo before submitting")
    sbatch: tuple = C.opt((), "further sbatch options: a TOML table (sbatch = {exclusive = true, mail-type = "
                              "\"END\"}) or 'exclusive mail-type=END'; an option sbatch does not know is refused")
    srun: tuple = C.opt((), "further arguments of the job's srun: a TOML list or one string (as a flag: "
                            "--srun=--mpi=pmix)")
    max_submit: Optional[int] = C.opt(None, "jobs one submission queues at most (each array task counts; top level "
                                            "only): the rest are submitted by the same command once those are done")

    @property
    def tasks_per_node(self) -> int:
        return self.tasks or max(1, self.gpus)

    @property
    def ranks(self) -> int:
        """The processes of one job (DDP ranks, one GPU each when it has GPUs)."""
        return self.nodes * self.tasks_per_node

    def per_job(self) -> "Resources":
        """What the job asks Slurm for, the same for every job of an array: all but the per-run requeue budget."""
        return dataclasses.replace(self, max_requeues=None)


# The job of a run that only copies files (its script's ``copies(cfg)``: bip.rewind when the dense run keeps the
# weights) asks for this, and at most COPY_MINUTES, whatever the layers say: no GPU, one CPU
COPY_JOB = {"gpus": 0, "cpus": 1, "nodes": 1, "tasks": 1, "mem": "4G", "gpu_type": None}
COPY_MINUTES = 30

HINTS = get_type_hints(Resources)
OPTIONAL_STR = Optional[str]
# sbatch options that the other keys (or slurm.submit itself) set: an 'sbatch' entry may not set them again
MANAGED = {"time": "time", "nodes": "nodes", "ntasks-per-node": "tasks", "cpus-per-task": "cpus",
           "gpus-per-node": "gpus", "partition": "partition", "account": "account", "qos": "qos",
           "constraint": "constraint", "mem": "mem", "signal": "signal_delay_s", "array": "max_parallel",
           **{k: None for k in ("dependency", "chdir", "requeue", "kill-on-invalid-dep", "job-name", "output", "error",
                                "open-mode", "wckey")}}


def check_one_line(text: str, what: str) -> None:
    """Refuse a control character (newline, carriage return, tab, NUL, escape, ...) in a value that becomes part of a
    job script: a newline would end its ``#SBATCH`` line and start another directive, or a shell command."""
    bad = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise UserError(f"{what} {text!r} holds a control character ({bad!r}); give it as one line of plain text")


def _convert(name: str, value, where: str):
    """``value`` (from TOML or an environment string) as field ``name``'s type, or a one-line error."""
    if isinstance(value, str):
        check_one_line(value, f"{where}: '{name}' =")
    if name == "sbatch":
        return _sbatch_options(value, where)
    if name == "srun":
        return _srun_args(value, where)
    tp = HINTS[name]
    optional = tp in (OPTIONAL_STR, Optional[int])
    if value is None or (isinstance(value, str) and optional and value.lower() in ("", "none")):
        if optional:
            return None
        raise UserError(f"{where}: '{name}' cannot be empty")
    if tp in (OPTIONAL_STR, str):
        if not isinstance(value, (str, int)):
            raise UserError(f"{where}: '{name}' must be a string, got {value!r}")
        return str(value)
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: '{name}' must be a number, got {value!r}") from None
        if not 0 < number < math.inf:
            raise UserError(f"{where}: '{name}' = {number:g} is out of range; use a positive number")
        return number
    try:
        if isinstance(value, bool) or (not isinstance(value, str) and float(value) != int(value)):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: '{name}' must be a whole number, got {value!r}") from None
    if number < (0 if name in ("gpus", "tasks", "max_requeues", "signal_delay_s") else 1):
        raise UserError(f"{where}: '{name}' = {number} is out of range; use a positive number")
    return number


def _sbatch_options(value, where: str) -> tuple:
    """'sbatch' as ((option, value or True), ...): from a TOML table, or a string 'exclusive mail-type=END'."""
    if isinstance(value, str):
        value = dict((k, v or True) for k, _, v in (word.partition("=") for word in shlex.split(value)))
    if not isinstance(value, dict):
        raise UserError(f"{where}: 'sbatch' must be a table of sbatch options (sbatch = {{exclusive = true}}) or a "
                        f"string ('exclusive mail-type=END'), got {value!r}")
    out = []
    for key, val in value.items():
        key = str(key).removeprefix("--")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise UserError(f"{where}: 'sbatch' option {key!r} is not an sbatch option name (e.g. mail-type)")
        if key in MANAGED:
            set_by = f"the key '{MANAGED[key]}'" if MANAGED[key] else "slurm.submit itself"
            raise UserError(f"{where}: 'sbatch' option '{key}' is set by {set_by}; use that, not 'sbatch'")
        if val is False or not (val is True or isinstance(val, (str, int, float))):
            raise UserError(f"{where}: 'sbatch' option '{key}' = {val!r}: give a string, a number or true")
        if isinstance(val, str):
            check_one_line(val, f"{where}: 'sbatch' option '{key}' =")
        out.append((key, val if val is True else str(val)))
    return tuple(out)


def _srun_args(value, where: str) -> tuple:
    """'srun' as a tuple of arguments: from a TOML list of strings, or one string split as a shell would."""
    args = shlex.split(value) if isinstance(value, str) else value
    if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
        raise UserError(f"{where}: 'srun' must be a list of srun arguments (srun = [\"--mpi=pmix\"]) or one string, "
                        f"got {value!r}")
    for arg in args:
        check_one_line(arg, f"{where}: 'srun' argument")
        if arg.split("=")[0] in ("--cpus-per-task", "-c"):
            raise UserError(f"{where}: 'srun' argument {arg!r}: srun is given the key 'cpus' already; set that")
    return tuple(args)


def sbatch_options() -> set[str] | None:
    """The long options this cluster's sbatch knows (from ``sbatch --help``), or None without sbatch."""
    if shutil.which("sbatch") is None:
        return None
    text = subprocess.run(["sbatch", "--help"], capture_output=True, text=True, timeout=30).stdout
    return set(re.findall(r"--([a-z][a-z0-9-]*)", text)) or None


def check_sbatch_keys(res: Resources, known: set[str] | None) -> None:
    """Refuse an 'sbatch' option that this cluster's sbatch does not know (``known``: ``sbatch_options()``)."""
    for key, _ in res.sbatch:
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise UserError(f"'sbatch' option '{key}' is not an option of this cluster's sbatch (sbatch --help)"
                            + (f"; did you mean '{close[0]}'?" if close else "") + "; nothing submitted")


def _keys(data: dict, where: str, path: Path) -> dict:
    """The resource keys of one table of a file, converted (unknown keys and sections are one-line errors)."""
    known = [f.name for f in fields(Resources)]
    for key, value in data.items():
        if key not in known:
            raise UserError(f"malformed resource config {path}: unknown key '{key}'{where}"
                            f"{' (a [section]?)' if isinstance(value, dict) else ''}; known keys: {', '.join(known)}; "
                            f"sections: [setup.\"DATASET\"], [setup.\"DATASET/MODEL\"], [script.\"SCRIPT\"]")
    return {key: _convert(key, value, f"resource config {path}{where}") for key, value in data.items()}


@dataclass
class Layer:
    """One source of settings: its keys for every run, and its sections for some runs."""
    where: str
    every: dict
    setup: dict = dataclasses.field(default_factory=dict)  # "dataset" or "dataset/model" -> keys
    script: dict = dataclasses.field(default_factory=dict)  # "bip.prune" -> keys

    def for_run(self, script: str, cfg) -> dict:
        dataset, model = getattr(cfg, "dataset", None), getattr(cfg, "model", None)
        return {**self.every, **self.setup.get(dataset, {}), **self.setup.get(f"{dataset}/{model}", {}),
                **self.script.get(script, {})}


def read_file(path: Path) -> Layer:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed resource config {path}: {exc}; fix the TOML (key = value lines)") from None
    except OSError as exc:
        raise UserError(f"cannot read resource config {path}: {exc.strerror}; check --resources / "
                        f"{ENV_PREFIX}CONFIG") from None
    sections = {}
    for name in SECTIONS:
        table = data.pop(name, {})
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise UserError(f"malformed resource config {path}: '{name}' must hold sections "
                            f"[{name}.\"NAME\"] of key = value lines")
        sections[name] = {key: _keys(keys, f" in [{name}.\"{key}\"]", path) for key, keys in table.items()}
    return Layer(f"resource config {path}", _keys(data, "", path), **sections)


class Choice:
    """The layers that choose each run's resources: the table, the user's file, the environment, the flags."""

    def __init__(self, path: str | os.PathLike | None = None, env=None, **flags):
        env = os.environ if env is None else env
        user = Path(path or env.get(ENV_PREFIX + "CONFIG") or DEFAULT_FILE)
        self.layers = []
        if DEFAULT_FILE.exists():
            self.layers.append(read_file(DEFAULT_FILE))
        if user.resolve() != DEFAULT_FILE.resolve():
            self.layers.append(read_file(user))
        given = {f.name: env[ENV_PREFIX + f.name.upper()] for f in fields(Resources)
                 if ENV_PREFIX + f.name.upper() in env}
        self.layers.append(Layer("environment", {k: _convert(k, v, ENV_PREFIX + k.upper()) for k, v in given.items()}))
        unknown = sorted(set(flags) - set(HINTS))
        if unknown:
            raise UserError(f"command line: unknown resource '{unknown[0]}'")
        self.layers.append(Layer("command line", {k: _convert(k, v, "command line") for k, v in flags.items()
                                                  if v is not None}))
        self._times = None

    def base(self) -> Resources:
        """The settings that hold for every run (the sections apart), as given."""
        values = {}
        for layer in self.layers:
            values.update(layer.every)
        return dataclasses.replace(Resources(), **values)

    def for_run(self, script: str, cfg) -> Resources:
        """The resources of one run's job: the layers for it, one process where its script needs one, and its
        requeue budget (``requeue_budget``) unless one is set."""
        values = {}
        for layer in self.layers:
            values.update(layer.for_run(script, cfg))
        res = dataclasses.replace(Resources(), **values)
        module = importlib.import_module(script)
        if getattr(module, "ONE_PROCESS", None):  # one rank of the node the layers asked for: its share of mem too
            res = dataclasses.replace(res, nodes=1, tasks=1, gpus=min(res.gpus, 1),
                                      mem=share(res.mem, min(res.gpus, 1) / res.gpus if res.gpus > 1 else 1.0))
        copy = getattr(module, "copies", None) is not None and module.copies(cfg)
        if copy:  # a file copy: nothing to resume either
            res = dataclasses.replace(res, **COPY_JOB, time=min(res.time, COPY_MINUTES))
        from common.cost import a100_hours, load_times

        if self._times is None:
            self._times = load_times()
        hours = 0.0 if copy else a100_hours(script, cfg, self._times)
        budget = requeue_budget(res, hours, 0.0 if not hours else
                                self._times.hours(cfg.dataset, cfg.model) * max(self._times.step_cost.values()),
                                getattr(cfg, "checkpoint_every_minutes", 0.0), script)
        return res if res.max_requeues is not None else dataclasses.replace(res, max_requeues=budget)


def share(mem: str | None, fraction: float) -> str | None:
    """``fraction`` of sbatch's ``--mem`` value ``mem`` (``"256G"`` x 1/8: ``"32G"``), rounded up to a whole number of
    its unit; as given when it is not a plain size."""
    m = re.fullmatch(r"(\d+)([KMGT]?)", mem or "")
    if m is None or fraction >= 1:
        return mem
    return f"{max(1, math.ceil(int(m.group(1)) * fraction))}{m.group(2)}"


def requeue_budget(res: Resources, a100_hours: float, epoch_a100_hours: float, checkpoint_minutes: float,
                   what: str = "the run") -> int:
    """The requeues a run of ``a100_hours`` (estimated on one A100) needs to finish in jobs of ``res``, with a margin.

    A job computes ``res.ranks x res.speed`` A100s' worth. Of each job's ``time`` minutes, the last
    ``signal_delay_s`` are given up (the job stops at the warning) and, as a margin, so is the work since the run's
    last checkpoint, at most one checkpoint interval (``checkpoint_minutes``, the run's --checkpoint-every-minutes) or
    one epoch (``epoch_a100_hours``: a bound on an epoch of the run), whichever is shorter (a job that acts on its
    warning checkpoints at its next step and loses nothing: ``slurm.jobs``; one killed without it loses that). Legs = ceil(run hours / usable hours per job); the budget is the legs plus
    ``REQUEUE_SPARE`` plus ``REQUEUE_SLACK`` of the legs. A time limit that leaves nothing usable is a one-line error.
    """
    rate = res.ranks * res.speed
    epoch_min = epoch_a100_hours / rate * 60
    lost = min(checkpoint_minutes, epoch_min) if checkpoint_minutes > 0 else epoch_min
    usable_min = res.time - lost - res.signal_delay_s / 60
    if usable_min <= 0:
        between = (f"one checkpoint interval ({checkpoint_minutes:g} min, --checkpoint-every-minutes)"
                   if 0 < checkpoint_minutes <= epoch_min else
                   f"one epoch (~{epoch_min:.0f} min estimated, checkpointed at its end; --checkpoint-every-minutes "
                   f"{checkpoint_minutes:g})")
        raise UserError(f"{what}: the time limit of {res.time} min per job is not longer than {between} plus the "
                        f"signal delay ({res.signal_delay_s} s, signal_delay_s), so a requeued job would stop before "
                        f"its next checkpoint and the run would never advance; raise --time (time = ... in the "
                        f"resource file, {ENV_PREFIX}TIME) or lower --checkpoint-every-minutes")
    legs = math.ceil(a100_hours / rate * 60 / usable_min)
    return legs + REQUEUE_SPARE + math.ceil(REQUEUE_SLACK * legs)


def resolve(path: str | os.PathLike | None = None, env=None, **flags) -> Resources:
    """The settings for every run from the table, the file, ``PRUNING_SLURM_*`` variables and ``flags`` (None = not
    given), the per-run sections apart (``Choice.for_run`` adds them)."""
    return Choice(path, env, **flags).base()


def add_flags(parser) -> None:
    """The resource flags of ``python -m slurm.submit`` (each overrides the files and the environment)."""
    group = parser.add_argument_group(
        "resources", "each flag overrides, for every run, the resource files (slurm/resources.toml: per model size "
                     "and script; --resources) and the PRUNING_SLURM_* variables; a default below holds where none of "
                     "them sets the key")
    group.add_argument("--resources", default=None, help=f"your resource file, layered over slurm/{DEFAULT_FILE.name} "
                                                         f"(default: {ENV_PREFIX}CONFIG, else none)")
    for f in fields(Resources):
        tp = {int: int, float: float, Optional[int]: int}.get(HINTS[f.name], str)
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=tp, default=None,
                           help=f"{f.metadata['help']} (default: {f.default})")


def from_args(ns) -> Choice:
    return Choice(ns.resources, **{f.name: getattr(ns, f.name) for f in fields(Resources)})
