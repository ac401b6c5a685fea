"""Submit runs to Slurm: one run from the command line, or a figure's missing runs as one job array.

    python -m slurm.submit gmp.prune --target-sparsity 0.9                  # one run, resources from the file/env
    python -m slurm.submit --partition gpu --gpus 4 --time 240 gmp.prune --preset imagenet-resnet50
    python -m slurm.submit --wait common.pretrain --model mlp                 # ... and wait for its result
    make fig-gmp-vs-oneshot CLUSTER=slurm                                     # the figure's missing runs, an array

Resource flags go before the script name, the script's own flags after it. Each job runs ``slurm.jobs.Job``: the
code snapshot taken at submission (``slurm.snapshot``), the run store's ``execute`` (a done run is never recomputed,
an interrupted one resumes), requeue on timeout or preemption. Logs: ``slurm_logs/<time>-<label>/`` (or
``PRUNING_SLURM_LOGS``); results: the run store, as for local runs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from common import config as C
from common.errors import UserError
from slurm import resources as R
from slurm.snapshot import snapshot


def log_root() -> Path:
    return Path(os.environ.get("PRUNING_SLURM_LOGS", "slurm_logs")).resolve()


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


def check(res: R.Resources) -> None:
    """Refuse before submitting what the cluster cannot run: GPUs asked on a partition without any."""
    if res.gpus > 0:
        gres = partitions().get(res.partition or "")
        if gres is not None and "gpu" not in gres:
            name = res.partition or "the default partition"
            raise UserError(f"{res.gpus} GPU(s) asked on partition '{name}', which has no GPUs (sinfo lists no "
                            f"gres/gpu); choose a GPU partition (--partition / partition = ...) or set gpus = 0")


def place(cfg):
    """The config with its folders made absolute: jobs start in the code snapshot, not in this directory."""
    return C.replace(cfg, runs_dir=str(Path(cfg.runs_dir).resolve()), data_dir=str(Path(cfg.data_dir).resolve()))


def executor(res: R.Resources, label: str, folder: Path):
    """A submitit executor that logs to ``folder`` and starts its jobs in a code snapshot."""
    import submitit

    code = snapshot(log_root() / "code")
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=res.max_requeues)
    optional = {k: getattr(res, k) for k in ("partition", "account", "qos", "constraint", "mem")
                if getattr(res, k) is not None}
    ex.update_parameters(
        time=res.time, nodes=res.nodes, ntasks_per_node=res.tasks_per_node, cpus_per_task=res.cpus,
        signal_delay_s=res.signal_delay_s, array_parallelism=res.max_parallel, job_name=label,
        **({"gpus_per_node": res.gpus} if res.gpus else {}), **optional,
        setup=[f"export OMP_NUM_THREADS={res.cpus}"],
        additional_parameters={"chdir": str(code), "requeue": True})
    return ex


# sbatch's words when no slurmctld answers (it is down, or SLURM_CONF / slurm.conf names the wrong host or port)
UNREACHABLE = re.compile(r"Unable to contact slurm controller|Socket timed out|Could not establish a configuration "
                         r"source|Zero Bytes were transmitted")


def _submitted(fn):
    """Run a submission; sbatch's refusal becomes one line (submitit's echo of sbatch's stderr is kept back)."""
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
        raise UserError(f"sbatch refused the job: {said}; check the partition/account/qos/resources "
                        "(python -m slurm.submit --help)") from None


@contextlib.contextmanager
def _tidy_on_failure(folder: Path):
    """If the submission fails, remove its log ``folder``, and the log root too when this submission made it (the
    code snapshots of a root that was already there stay: identical code reuses them)."""
    made = [p for p in (log_root(), folder) if not p.exists()]
    try:
        yield
    except BaseException:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        raise


JOB_FILE = "slurm_job"  # in a run's directory: the id of the job that computes it


def queued_job(run) -> str | None:
    """The id of a pending or running job already submitted for ``run``, if any."""
    path = run.dir / JOB_FILE
    if not path.exists():
        return None
    job = path.read_text().strip()
    proc = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return job if proc.returncode == 0 and proc.stdout.strip() else None


def submit_runs(rows, res: R.Resources, label: str):
    """Submit ``rows`` [(script, cfg)] as one job (one row) or a job array, leaving out runs that a queued job
    already computes; returns (jobs, log folder, {run dir: id of the job already queued for it})."""
    from common.store import Run
    from slurm.jobs import Job

    require_sbatch()
    check(res)
    rows = [(script, place(cfg)) for script, cfg in rows]
    already = {}
    for script, cfg in rows:
        job = queued_job(Run(script, cfg))
        if job:
            already[str(Run(script, cfg).dir)] = job
    rows = [(s, c) for s, c in rows if str(Run(s, c).dir) not in already]
    if not rows:
        return [], None, already
    jobs = [Job(script, cfg, res.max_requeues) for script, cfg in rows]
    folder = log_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}"
    with _tidy_on_failure(folder):
        ex = executor(res, label, folder)
        submitted = _submitted(lambda: [ex.submit(jobs[0])] if len(jobs) == 1 else ex.submit_array(jobs))
    for job, (script, cfg) in zip(submitted, rows):
        run = Run(script, cfg)
        run.dir.mkdir(parents=True, exist_ok=True)
        (run.dir / JOB_FILE).write_text(str(job.job_id) + "\n")
    return submitted, folder, already


def reason(job) -> str:
    """The exception line of a failed job ("ValueError: ..."), from the error submitit recorded."""
    lines = str(job.exception() or "ended without a result").strip().splitlines()
    errors = [ln.strip() for ln in lines if re.match(r"\s*[\w.]+(Error|Exception|Diverged|RunFailed): ", ln)]
    return (errors or lines)[-1][:300]


def in_queue(job_id: str) -> bool:
    """Whether Slurm still lists the job as pending, running, completing or being requeued."""
    proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def wait(jobs, rows, poll: float = 2.0) -> list[str]:
    """Block until every job ended; returns one line per run that did not finish."""
    from common.store import Run

    pending = [(job, Run(script, place(cfg)), 0) for job, (script, cfg) in zip(jobs, rows)]
    failures = []
    while pending:
        time.sleep(poll)
        still = []
        for job, run, gone in pending:
            if run.done:
                continue
            if job.paths.result_pickle.exists():
                failures.append(f"job {job.job_id} ({run.dir}): {reason(job)}; log {job.paths.stderr}")
                continue
            gone = 0 if in_queue(job.job_id) else gone + 1
            if gone > 2:  # out of the queue for three polls in a row, and no result at all
                failures.append(f"job {job.job_id} ({run.dir}) ended without a result (killed by Slurm?); "
                                f"see scontrol show job {job.job_id} and {job.paths.stderr}")
            else:
                still.append((job, run, gone))
        pending = still
    return failures


def main(argv=None) -> int:
    from common.cli import exit_code

    parser = C.OneLineParser(prog="python -m slurm.submit", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             usage="%(prog)s [resource flags] [--wait] SCRIPT [script flags]")
    R.add_flags(parser)
    parser.add_argument("--wait", action="store_true", help="wait until the job ends and print its result")
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
        res = R.from_args(ns)
        from common.store import Run

        run = Run(module.SCRIPT, place(cfg))
        if run.done:
            print(f"already done, nothing submitted: {run.dir}/result.json")
            return
        rows = [(module.SCRIPT, cfg)]
        jobs, folder, already = submit_runs(rows, res, module.SCRIPT.replace(".", "-"))
        if already:
            print(f"already queued as job {already[str(run.dir)]}, nothing submitted: {run.dir}")
            return
        print(f"submitted job {jobs[0].job_id}: {module.SCRIPT} -> {run.dir}", flush=True)
        print(f"logs: {folder}", flush=True)
        if ns.wait:
            failures = wait(jobs, rows)
            if failures:
                raise UserError(f"the job failed: {failures[0]}")
            print(f"done: {run.dir}/result.json")

    return exit_code(action)


if __name__ == "__main__":
    raise SystemExit(main())
