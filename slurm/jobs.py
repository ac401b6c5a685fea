"""The callable a Slurm job runs: one run of the store, checkpointable so that it survives timeouts and preemption.

On the job's time-limit warning or a preemption signal (USR2, ``signal_delay_s`` before the end; SIGTERM where a
preemption sends no USR2) the job only sets a flag (``common.train.request_stop``): the run checkpoints at its next
step boundary (or epoch end) and stops, and the job then calls ``checkpoint()``, which hands back the same job, and
requeues it (submitit's handler). A signal that no training loop can act on (none running, or none reaching a step
boundary within ``STOP_GRACE_S``) requeues at once, from the last checkpoint. The requeued job calls ``execute``
again, and the store resumes the run from that checkpoint. Every requeue counts, a preemption that Slurm requeued
by itself too (``SLURM_RESTART_COUNT``): after ``max_requeues`` of them (per run: ``slurm.resources.requeue_budget``
sizes it from the run's estimated length unless it is set), the job gives up (the run keeps its checkpoint;
submitting again resumes it). ``execute`` returns a finished run without computing
anything and holds the run's lock, so two jobs never compute the same run; it executes the run's declared dependencies
before its ``compute``, which the submission queued ahead of this job, so it only reads them.
A job never waits for a lock while it holds its GPU: ``slurm.submit`` queues it only once the runs it needs are done,
and if it still finds its run, or a dependency, being computed by another live process (a job of another
submission, a run started by hand), it fails at once with ``RunLocked`` naming that process (every DDP rank
together), which frees the GPU and makes Slurm cancel its own dependents; submitting again once that process is
done picks up from there. A requeue would not know when to come back, and would take a GPU again each time only to
find the run still locked.
With several tasks (one per GPU) every task joins one DistributedDataParallel process group; rank 0 writes the store.
Each task sets torch's threads to its CPUs (``common.data.process_cpus``: its CPU affinity) and prints them; the
run prints one progress line per epoch into the job's log (``--progress lines``, whatever was asked).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import submitit

from slurm import jobstart
from slurm.jobstart import STOP_SIGNALS  # defined where a job's Python starts: held there from its first line
STOP_GRACE_S = 45.0  # a stop no training loop acted on within this many seconds requeues the job from its checkpoint


class Job(submitit.helpers.Checkpointable):
    def __init__(self, script: str, cfg, max_requeues: int = 3):
        self.script, self.cfg = script, cfg
        self.max_requeues, self.requeues = max_requeues, 0

    def __call__(self) -> dict:
        import torch

        from common import config as C
        from common import distributed, store
        from common.data import describe_cpus, process_cpus
        from common.store import Run, execute
        from common.train import Stopped

        store.LOCK_WAIT = False  # a locked run (or dependency) ends the job with RunLocked instead of waiting
        requeue = self.catch_stop_signals()
        env = submitit.JobEnvironment()
        torch.set_num_threads(process_cpus())  # the task's CPU affinity: what srun --cpus-per-task gave it
        cfg = self.cfg
        if getattr(cfg, "progress", "lines") != "lines":  # one line per epoch in the job's log: no bar, not silent
            cfg = C.replace(cfg, progress="lines")
        run = Run(self.script, cfg)
        code = Path(sys.modules["common.store"].__file__).resolve().parents[1]
        print(f"job {env.job_id} task {env.global_rank}/{env.num_tasks} requeue {self.requeues}: "
              f"{self.script} {run.dir} ({'done' if run.done else 'computing'}); code {code}", flush=True)
        print(f"job {env.job_id} task {env.global_rank}: {describe_cpus()}", flush=True)
        self.act_on_an_early_stop_signal()
        try:
            with distributed.group(env.global_rank, env.num_tasks, env.local_rank, env.hostnames[0]):
                result = execute(self.script, cfg)
        except Stopped as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            print(f"job {env.job_id}: {exc}", flush=True)
            requeue(env.global_rank)
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # the fallback of a stop the run finished before acting on
        print(f"job {env.job_id}: finished {run.dir}", flush=True)
        return {k: v for k, v in result.items() if not isinstance(v, (list, dict))}

    def catch_stop_signals(self):
        """Make :data:`STOP_SIGNALS` set the stop flag of the training loops (``common.train.request_stop``) in
        place of submitit's requeue-at-once, which stays the fallback (no loop running, or none stopping within
        :data:`STOP_GRACE_S`: SIGALRM). Returns ``requeue(rank)``, which requeues the job the way submitit does."""
        from common import train

        train.clear_stop()
        at_once = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue (inside a submitit job)
        at_once = at_once if callable(at_once) else None

        requeued = []

        def requeue(rank: int, signum: int = signal.SIGUSR2, frame=None) -> None:
            if at_once is None or requeued:  # once: the signals of the requeue itself change nothing
                return
            requeued.append(signum)
            if rank:  # rank 0 requeues the job, which ends every task
                time.sleep(STOP_GRACE_S)
                sys.exit(-1)
            try:
                at_once(signum, frame)
            except subprocess.CalledProcessError as exc:  # scontrol requeue refused: cancelled, or Slurm requeues it
                print(f"not requeued by this job ({exc}); exiting", file=sys.stderr, flush=True)
                sys.exit(-1)

        def on_signal(signum, frame):
            name = signal.Signals(signum).name
            if train.stop_requested() or requeued:  # stopping already (USR2 and SIGTERM both, at a preemption)
                return
            if not train.in_loop():
                print(f"{name}: no training loop to stop at a step boundary; requeuing now", flush=True)
                requeue(int(os.environ.get("SLURM_PROCID", "0") or 0), signum, frame)
                return
            print(f"{name}: checkpointing at the next step boundary, then requeuing", flush=True)
            train.request_stop(name)
            signal.setitimer(signal.ITIMER_REAL, STOP_GRACE_S)

        for signum in STOP_SIGNALS:
            signal.signal(signum, on_signal)
        signal.signal(signal.SIGALRM, lambda signum, frame: requeue(
            int(os.environ.get("SLURM_PROCID", "0") or 0), signal.SIGUSR2, frame))
        return requeue

    @staticmethod
    def act_on_an_early_stop_signal() -> None:
        """A stop signal that came while this job's Python started (``slurm.jobstart`` held it) is raised again, to
        the handlers :meth:`catch_stop_signals` set."""
        early = os.environ.pop(jobstart.EARLY_SIGNAL, None)
        if early:
            signal.raise_signal(signal.Signals[early])

    def checkpoint(self, *args, **kwargs):
        """Requeue (the run store holds the state) unless this job has been requeued ``max_requeues`` times: by
        itself, or by Slurm (a preemption's requeue starts from the job as submitted; ``SLURM_RESTART_COUNT``
        counts every requeue)."""
        from common.store import slurm_restarts

        done = max(self.requeues, slurm_restarts())
        if done >= self.max_requeues:
            print(f"not requeued: {done} requeues already (max_requeues); submit again to resume",
                  file=sys.stderr, flush=True)
            return None
        self.requeues = done + 1
        return submitit.helpers.DelayedSubmission(self)
