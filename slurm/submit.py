"""Submit runs to Slurm: one run from the command line, or a figure's missing runs as job arrays.

    python -m slurm.submit gmp.prune --target-sparsity 0.9                  # one run, resources from the file/env
    python -m slurm.submit --partition gpu --gpus 4 --time 240 gmp.prune --preset imagenet-resnet50
    python -m slurm.submit --wait common.pretrain --model mlp                 # ... and wait for its result
    python -m slurm.submit --dry-run gmp.prune --preset imagenet-resnet50     # the sbatch scripts; submits nothing
    make fig-gmp-vs-oneshot CLUSTER=slurm                                     # the figure's missing runs, arrays

Resource flags go before the script name, the script's own flags after it. Each run's resources follow its model's
size and its script (``slurm.resources``: the table slurm/resources.toml, the user's file, PRUNING_SLURM_*, the
flags), its requeue budget its estimated length; runs that wait for the same runs and ask for the same resources are
one array. Each job runs ``slurm.jobs.Job``: the code snapshot taken at submission (``slurm.snapshot``), the run
store's ``execute`` (a done run is never recomputed, an interrupted one resumes), requeue on timeout or preemption.
Logs: ``slurm_logs/<time>-<label>/`` (or ``PRUNING_SLURM_LOGS``); results: the run store, as for local runs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import config as C
from common.data import data_root
from common.errors import UserError
from common.store import JOB_FILE, Run
from slurm import resources as R
from slurm.snapshot import snapshot


def log_root() -> Path:
    """Where the jobs log and their code snapshots live (``PRUNING_SLURM_LOGS``): its path goes into the job scripts,
    quoted, so any printable character goes through; a control character is refused."""
    root = os.environ.get("PRUNING_SLURM_LOGS", "slurm_logs")
    R.check_one_line(root, "PRUNING_SLURM_LOGS")
    return Path(root).resolve()


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise UserError("CLUSTER=slurm needs Slurm's sbatch on PATH, and there is none here; run this on a Slurm "
                        "login node, or use CLUSTER=local (a local process pool) or CLUSTER=none")


def partitions() -> dict[str, str]:
    """{partition: its generic resources} as sinfo reports them; the default partition is also under ''."""
    proc = subprocess.run(["sinfo", "-h", "-o", "%P %G"], capture_output=True, text=True, timeout=30)
    out = {}
    for line in proc.stdout.splitlines():
        name, _, gres = line.strip().partition(" ")
        if name.endswith("*"):
            name = name[:-1]
            out[""] = out.get("", "") + "," + gres
        out[name] = out.get(name, "") + "," + gres
    return out


def check(res: R.Resources, known: dict[str, str] | None = None) -> None:
    """Refuse before submitting what the cluster cannot run: GPUs asked on a partition without any, or GPUs of a
    type its nodes lack (``known``: ``partitions()``, when already asked)."""
    if res.gpus > 0:
        gres = (partitions() if known is None else known).get(res.partition or "")
        name = res.partition or "the default partition"
        if gres is not None and "gpu" not in gres:
            raise UserError(f"{res.gpus} GPU(s) asked on partition '{name}', which has no GPUs (sinfo lists no "
                            f"gres/gpu); choose a GPU partition (--partition / partition = ...) or set gpus = 0")
        if gres is not None and res.gpu_type and not re.search(rf"(^|,)gpu:{re.escape(res.gpu_type)}(:|\(|,|$)", gres):
            have = ", ".join(sorted({g.split("(")[0] for g in gres.split(",") if g.startswith("gpu")}))
            raise UserError(f"{res.gpus} GPU(s) of type '{res.gpu_type}' asked on partition '{name}', whose nodes "
                            f"have {have} (sinfo %G); set gpu_type to one of those types, or another partition; "
                            "nothing submitted")


def place(cfg):
    """The config with its folders made absolute: jobs start in the code snapshot, not in this directory."""
    return C.replace(cfg, runs_dir=str(Path(cfg.runs_dir).resolve()), data_dir=str(Path(cfg.data_dir).resolve()))


def parameters(res: R.Resources, label: str, code: Path, after=()) -> dict:
    """What submitit's SlurmExecutor is given for a job of ``res`` that starts in the code snapshot ``code`` once the
    jobs ``after`` have succeeded (Slurm cancels it if one of those fails). srun gets ``--cpus-per-task`` itself:
    since Slurm 22.05 it no longer takes it from the job, and where tasks are bound to CPUs each rank would get one."""
    optional = {k: getattr(res, k) for k in ("partition", "account", "qos", "constraint", "mem")
                if getattr(res, k) is not None}
    if after:
        optional["dependency"] = "afterok:" + ":".join(after)
    gpus = f"{res.gpu_type}:{res.gpus}" if res.gpu_type else res.gpus
    return dict(
        time=res.time, nodes=res.nodes, ntasks_per_node=res.tasks_per_node, cpus_per_task=res.cpus,
        signal_delay_s=res.signal_delay_s, array_parallelism=res.max_parallel, job_name=label,
        **({"gpus_per_node": gpus} if res.gpus else {}), **optional,
        setup=[f"export OMP_NUM_THREADS={res.cpus}"], srun_args=["--cpus-per-task", str(res.cpus), *res.srun],
        additional_parameters={**dict(res.sbatch), "chdir": str(code), "requeue": True,
                               **({"kill-on-invalid-dep": "yes"} if after else {})})


# how a job's Python starts: stop signals held from its first line (slurm/jobstart.py), then submitit's entry point
JOB_PYTHON = f"{shlex.quote(sys.executable)} -u -m slurm.jobstart"


def executor(res: R.Resources, label: str, folder: Path, code: Path, after=(), max_requeues: int = 0):
    """A submitit executor for jobs of ``res`` (``parameters``) that logs to ``folder``. submitit stops requeuing a
    job after ``max_requeues`` timeouts (the largest budget of its jobs); each ``Job`` stops at its own budget first."""
    import submitit

    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues, python=JOB_PYTHON)
    ex.update_parameters(**parameters(res, label, code, after))
    return ex


def preview(res: R.Resources, label: str, folder: Path, code: Path, after, n: int) -> str:
    """The sbatch script ``executor`` would submit for ``n`` runs (a job array when more than one), as submitit
    writes it; needs no Slurm here."""
    import submitit

    class Preview(submitit.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # submitit's check that srun exists: nothing is submitted
            return 1

    ex = Preview(folder=folder, python=JOB_PYTHON)
    ex.update_parameters(**parameters(res, label, code, after))
    if n > 1:
        ex.parameters["map_count"] = n  # as submitit's own submission of an array
    return ex._make_submission_file_text(ex._submitit_command_str, "")


# sbatch's words when no slurmctld answers (it is down, or SLURM_CONF / slurm.conf names the wrong host or port)
UNREACHABLE = re.compile(r"Unable to contact slurm controller|Socket timed out|Could not establish a configuration "
                         r"source|Zero Bytes were transmitted")


# sbatch's words when a limit on the jobs a user (or account, or QOS) may have queued is reached: MaxSubmitJobs
SUBMIT_LIMIT = re.compile(r"job submit limit|MaxSubmitJob", re.I)


def _submitted(fn, before=()):
    """Run a submission; sbatch's refusal becomes one line (submitit's echo of sbatch's stderr is kept back).
    ``before``: the jobs this submission queued already (named when a MaxSubmitJobs limit stops it)."""
    from submitit.core.utils import FailedJobError

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return fn()
    except FailedJobError as exc:
        lines = [ln.split("error:", 1)[1].strip() for ln in str(exc).splitlines() if "error:" in ln]
        said = "; ".join(lines) or " ".join(str(exc).split())[-300:]
        if UNREACHABLE.search(str(exc)):
            raise UserError(f"no Slurm controller answers ({said}); check it with `scontrol ping` and `sinfo` "
                            "(is slurmctld running? does SLURM_CONF or slurm.conf name its host?)") from None
        if SUBMIT_LIMIT.search(str(exc)):
            queued = (f"the {len(before)} job(s) it queued before stay queued (jobs {before[0].job_id}.."
                      f"{before[-1].job_id}) and are not submitted again" if before else "nothing was submitted")
            raise UserError(f"sbatch refused the job: {said}: the cluster's MaxSubmitJobs limit (the jobs a user, "
                            f"account or QOS may have queued; each array task counts) is reached; {queued}; cap a "
                            "submission with max_submit = N (--max-submit, PRUNING_SLURM_MAX_SUBMIT) below that limit "
                            "less your queued jobs (squeue --me), and run the same command again once jobs end"
                            ) from None
        raise UserError(f"sbatch refused the job: {said}; check the partition/account/qos/resources "
                        "(python -m slurm.submit --help)") from None


@contextlib.contextmanager
def _tidy_on_failure(folder: Path, submitted: list):
    """If the submission fails before anything was ``submitted``, remove its log ``folder``, and the log root too
    when this submission made it (the code snapshots of a root that was already there stay: identical code reuses
    them). Jobs already queued keep the folder they log to."""
    made = [p for p in (log_root(), folder) if not p.exists()]
    try:
        yield
    except BaseException:
        if not submitted:
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
        raise


def queued_jobs(runs) -> dict[str, str]:
    """{run dir: id of the pending or running job already submitted for it}, for those of ``runs`` that have one:
    the ids kept in their ``slurm_job`` files that ``squeue`` still lists (one call for all of them)."""
    marked = {}
    for run in runs:
        with contextlib.suppress(OSError):
            job = (run.dir / JOB_FILE).read_text().strip()
            if re.fullmatch(r"\d+(_\d+)?", job):
                marked[str(run.dir)] = job
    if not marked or shutil.which("squeue") is None:  # no Slurm here (a dry run): nothing is queued
        return {}
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(sorted(set(marked.values())))],
                          capture_output=True, text=True, timeout=60)
    listed = set(proc.stdout.split()) if proc.returncode == 0 else set()  # it fails when it lists none of them
    return {d: job for d, job in marked.items() if job in listed}


def dependencies(script: str, cfg) -> list[tuple[str, object]]:
    """The runs that ``script`` executes on ``cfg`` before its own computation: its module's ``dependencies(cfg)``
    (none when it declares none)."""
    declared = getattr(importlib.import_module(script), "dependencies", None)
    return list(declared(cfg)) if declared is not None else []


@dataclass
class Batch:
    """Runs submitted together (one job, or a job array) that wait for the same runs and ask for the same resources."""
    level: int  # 0: waits for nothing; k: waits for runs of levels < k (or for jobs already queued)
    needs: tuple[str, ...]  # the directories of the runs it waits for
    res: R.Resources | None = None  # what each of its jobs asks for (all but the requeue budget)
    rows: list = field(default_factory=list)  # [(script, cfg)]
    requeues: list = field(default_factory=list)  # each row's requeue budget (its Resources.max_requeues)
    after: tuple[str, ...] = ()  # the ids of the jobs it waits for, once submitted (afterok)
    jobs: list = field(default_factory=list)  # the submitit jobs of its rows, once submitted
    script: str = ""  # a dry run: the sbatch script it would be submitted with


def plan(rows, queued=queued_jobs, resources=None) -> tuple[list[Batch], dict[str, str]]:
    """What to submit for ``rows`` [(script, cfg)]: the batches of the missing ones and of their missing
    dependencies (transitively), in submission order, and {run dir: job id} of those that a job in the queue
    already computes (``queued``), which are not submitted again (nor what only they need). ``resources(script,
    cfg)`` gives each run's resources (default: ``slurm.resources.Choice().for_run``); a batch is the runs of one
    level that wait for the same runs and ask for the same resources."""
    found: dict[str, tuple] = {}  # run dir -> (script, cfg, [dirs of its missing dependencies]), missing runs only
    done: set[str] = set()
    frontier = [(script, place(cfg)) for script, cfg in rows]
    while frontier:
        script, cfg = frontier.pop(0)
        key = str(Run(script, cfg).dir)
        if key in found or key in done:
            continue
        if Run(script, cfg).done:
            done.add(key)
            continue
        deps = [(s, place(c)) for s, c in dependencies(script, cfg)]
        found[key] = (script, cfg, [str(Run(s, c).dir) for s, c in deps])
        frontier += deps
    already = queued([Run(script, cfg) for script, cfg, _ in found.values()])
    todo, stack = [], [str(Run(script, place(cfg)).dir) for script, cfg in rows]
    while stack:  # what to submit: the missing runs reached from rows without going through a queued one
        key = stack.pop()
        if key in found and key not in already and key not in todo:
            todo.append(key)
            stack += found[key][2]
    level: dict[str, int] = {}

    def level_of(key: str, path=()) -> int:
        if key not in level:
            if key in path:
                raise UserError(f"the declared dependencies of {key} lead back to it; fix the script's "
                                "dependencies()")
            level[key] = 1 + max((level_of(d, (*path, key)) for d in found[key][2] if d in todo), default=-1)
        return level[key]

    resources = resources or R.Choice().for_run
    batches: dict[tuple, Batch] = {}
    for key in sorted((k for k in found if k in todo), key=level_of):  # found's order: rows first, then deps
        script, cfg, deps = found[key]
        needs = tuple(sorted(d for d in set(deps) if d in found))
        res = resources(script, cfg)
        batch = batches.setdefault((level[key], needs, res.per_job()), Batch(level[key], needs, res.per_job()))
        batch.rows.append((script, cfg))
        batch.requeues.append(res.max_requeues)
    return list(batches.values()), already


def submit_runs(rows, choice: R.Choice, label: str, dry_run: bool = False):
    """Submit ``rows`` [(script, cfg)] and their missing dependencies in dependency order (``plan``), each batch as
    one job or a job array with ``--dependency=afterok`` on what it needs and the resources ``choice`` gives its
    runs; returns (the batches, their log folder, {run dir: id of the job already queued for it}). ``dry_run``:
    each batch's sbatch script in its ``script``, the ids of earlier batches' jobs shown as JOB1, JOB2_0, ...;
    nothing submitted, written or copied, and no Slurm needed here."""
    from slurm.jobs import Job

    if not dry_run:
        require_sbatch()
    batches, already = plan(rows, resources=choice.for_run)
    if not batches:
        return [], None, already
    batches = capped(batches, choice.base().max_submit)
    asked = any(b.res.gpus for b in batches) and (not dry_run or shutil.which("sinfo"))
    known = partitions() if asked else {}
    options = R.sbatch_options() if any(b.res.sbatch for b in batches) else None
    for batch in batches:
        check(batch.res, known)
        R.check_sbatch_keys(batch.res, options)
    folder = log_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}"
    ids, submitted = dict(already), []
    if dry_run:
        code = snapshot(log_root() / "code", copy=False)
        for k, batch in enumerate(batches, 1):
            batch.after = tuple(sorted({ids[d] for d in batch.needs}))
            batch.script = preview(batch.res, label, folder, code, batch.after, len(batch.rows))
            for j, (script, cfg) in enumerate(batch.rows):
                ids[str(Run(script, cfg).dir)] = f"JOB{k}_{j}" if len(batch.rows) > 1 else f"JOB{k}"
        return batches, folder, already
    with _tidy_on_failure(folder, submitted):
        code = snapshot(log_root() / "code")
        for batch in batches:
            batch.after = tuple(sorted({ids[d] for d in batch.needs}))
            jobs = [Job(script, cfg, n) for (script, cfg), n in zip(batch.rows, batch.requeues)]
            ex = executor(batch.res, label, folder, code, batch.after, max(batch.requeues))
            batch.jobs = _submitted(lambda: [ex.submit(jobs[0])] if len(jobs) == 1 else ex.submit_array(jobs),
                                    submitted)
            submitted += batch.jobs
            for job, (script, cfg) in zip(batch.jobs, batch.rows):
                run = Run(script, cfg)
                run.dir.mkdir(parents=True, exist_ok=True)
                (run.dir / JOB_FILE).write_text(str(job.job_id) + "\n")
                ids[str(run.dir)] = str(job.job_id)
    return batches, folder, already


def capped(batches: list[Batch], cap: int | None) -> list[Batch]:
    """The first ``cap`` runs of ``batches`` in submission order (the last batch kept cut short; what comes after it
    waits for the next submission, which finds these queued), with one line saying so; all of them without a cap."""
    total = sum(len(b.rows) for b in batches)
    if cap is None or total <= cap:
        return batches
    kept, left = [], cap
    for batch in batches:
        if left <= 0:
            break
        batch.rows, batch.requeues = batch.rows[:left], batch.requeues[:left]
        kept.append(batch)
        left -= len(batch.rows)
    print(f"  max_submit = {cap}: {cap} of the {total} run(s) to submit are submitted now (dependencies first); run "
          "the same command again later for the rest (the queued ones are not submitted twice)", flush=True)
    return kept


def print_dry_run(batches) -> None:
    """A dry run's batches: for each, what it holds and asks for, then its sbatch script."""
    for k, batch in enumerate(batches, 1):
        low, high = min(batch.requeues), max(batch.requeues)
        print(f"# --- JOB{k}: {len(batch.rows)} run(s) [{asks(batch.res)}, {low if low == high else f'{low}-{high}'} "
              f"requeues]" + (f", after {', '.join(batch.after)}" if batch.after else ""))
        for script, cfg in batch.rows:
            print(f"#     {script} -> {Run(script, cfg).dir}")
        print(batch.script, flush=True)
    print(f"# dry run: {len(batches)} sbatch script(s) for {sum(len(b.rows) for b in batches)} run(s); nothing "
          "submitted (JOBk: the id the k-th would get)", flush=True)


def asks(res: R.Resources) -> str:
    """What a job asks for, in words."""
    nodes = f"{res.nodes} nodes x " if res.nodes > 1 else ""
    gpus = f"{res.gpus} {res.gpu_type}" if res.gpu_type and res.gpus else f"{res.gpus}"
    return (f"partition {res.partition or 'default'}, {nodes}{gpus} GPU(s), {res.tasks_per_node} task(s) x "
            f"{res.cpus} CPU(s){f', {res.mem} memory' if res.mem else ''}, {res.time} min per job")


def reason(job) -> str:
    """The exception line of a failed job ("ValueError: ..."), read from the text of its stderr log: submitit's own
    record of the error is a pickle, and nothing in a shared log folder is unpickled here."""
    path = Path(job.paths.stderr)
    try:
        if not path.is_file():
            return f"ended without a result (no log at {path})"
        with path.open("rb") as f:  # the last 64 kB hold the traceback's end
            f.seek(max(0, path.stat().st_size - (1 << 16)))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError as exc:
        return f"ended without a result (its log {path} is unreadable: {exc.strerror})"
    errors = [ln.strip() for ln in lines if re.match(r"\s*[\w.]+(Error|Exception|Diverged|RunFailed|RunLocked): ", ln)]
    return (errors or lines or ["ended without a result"])[-1][:300]


def in_queue(job_id: str) -> bool:
    """Whether Slurm still lists the job as pending, running, completing or being requeued."""
    proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def wait(batches, poll: float = 2.0) -> list[str]:
    """Block until every job of ``batches`` ended; returns one line per run that did not finish."""
    pending = [(job, Run(script, cfg), batch.after, 0)
               for batch in batches for job, (script, cfg) in zip(batch.jobs, batch.rows)]
    failures, failed = [], set()
    while pending:
        time.sleep(poll)
        still = []
        for job, run, after, gone in pending:
            if run.done:
                continue
            if job.paths.result_pickle.exists():
                failures.append(f"job {job.job_id} ({run.dir}): {reason(job)}; log {job.paths.stderr}")
                failed.add(str(job.job_id))
                continue
            gone = 0 if in_queue(job.job_id) else gone + 1
            if gone > 2:  # out of the queue for three polls in a row, and no result at all
                cause = sorted(failed.intersection(after))
                failures.append(f"job {job.job_id} ({run.dir}) was cancelled by Slurm: job {cause[0]} it waits for "
                                "failed" if cause else
                                f"job {job.job_id} ({run.dir}) ended without a result (killed by Slurm?); "
                                f"see scontrol show job {job.job_id} and {job.paths.stderr}")
                failed.add(str(job.job_id))
            else:
                still.append((job, run, after, gone))
        pending = still
    return failures


def main(argv=None) -> int:
    from common.errors import exit_code

    parser = C.OneLineParser(prog="python -m slurm.submit", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             usage="%(prog)s [resource flags] [--wait] SCRIPT [script flags]")
    R.add_flags(parser)
    parser.add_argument("--wait", action="store_true", help="wait until the jobs end and print the result")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the sbatch scripts that would be submitted; submit nothing (needs no Slurm)")
    parser.add_argument("script", help="the script module, e.g. gmp.prune or common.pretrain")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's flags (see python -m SCRIPT --help)")
    ns = parser.parse_args(argv)

    def action():
        try:
            module = importlib.import_module(ns.script)
        except ImportError:
            module = None
        if module is None or not hasattr(module, "compute"):
            raise UserError(f"'{ns.script}' is not a run script (a module with Config and compute); "
                            "e.g. gmp.prune or common.pretrain")
        cfg = C.parse_args(module.Config, ns.args, presets=getattr(module, "PRESETS", None),
                           prog=f"python -m slurm.submit ... {ns.script}")
        if getattr(module, "validate", None):
            module.validate(cfg)  # the script's own checks, before anything is queued
        if hasattr(cfg, "data_dir"):
            data_root(cfg.data_dir)  # a file given as --data-dir: the job would look for the data elsewhere
        choice = R.from_args(ns)
        choice.for_run(module.SCRIPT, cfg)  # the resource files, and whether the time limit leaves time to compute
        log_root()  # a usable log folder name
        from common.store import Run

        run = Run(module.SCRIPT, place(cfg))
        if run.done:
            print(f"already done, nothing submitted: {run.dir}/result.json")
            return
        batches, folder, already = submit_runs([(module.SCRIPT, cfg)], choice, module.SCRIPT.replace(".", "-"),
                                               ns.dry_run)
        if ns.dry_run and batches:
            return print_dry_run(batches)
        if str(run.dir) in already:
            print(f"already queued as job {already[str(run.dir)]}, nothing submitted: {run.dir}")
            return
        for batch in batches:  # the run's missing dependencies first, the run last
            for job, (script, c), n in zip(batch.jobs, batch.rows, batch.requeues):
                print(f"submitted job {job.job_id}: {script} -> {Run(script, c).dir} [{asks(batch.res)}, {n} "
                      f"requeues]" + (f" (once job {', '.join(batch.after)} succeeded)" if batch.after else ""),
                      flush=True)
        print(f"logs: {folder}", flush=True)
        if ns.wait:
            failures = wait(batches)
            if failures:
                raise UserError(f"the job failed: {failures[0]}")
            if not run.done:  # max_submit left the run itself for a later submission
                raise UserError(f"its dependencies are done, the run itself was not submitted (max_submit): submit "
                                f"it again to compute {run.dir}")
            print(f"done: {run.dir}/result.json")

    return exit_code(action)


if __name__ == "__main__":
    raise SystemExit(main())
