"""The callable a Slurm job runs: one run of the store, checkpointable so that it survives timeouts and preemption.

On the job's time-limit warning or a preemption signal (USR2, ``signal_delay_s`` before the end), submitit calls
``checkpoint()``; it hands back the same job, which Slurm requeues. The requeued job calls ``execute`` again, and the
store resumes the run from its last checkpoint (written every epoch, and every --checkpoint-every-minutes); after
``max_requeues`` requeues, timeouts and preemptions together (per run: ``slurm.resources.requeue_budget`` sizes it
from the run's estimated length unless it is set), the job gives up (the run keeps its checkpoint; submitting again
resumes it). ``execute`` returns a finished run without computing
anything and holds the run's lock, so two jobs never compute the same run.
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

import sys
from pathlib import Path

import submitit


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

        store.LOCK_WAIT = False  # a locked run (or dependency) ends the job with RunLocked instead of waiting
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
        with distributed.group(env.global_rank, env.num_tasks, env.local_rank, env.hostnames[0]):
            result = execute(self.script, cfg)
        print(f"job {env.job_id}: finished {run.dir}", flush=True)
        return {k: v for k, v in result.items() if not isinstance(v, (list, dict))}

    def checkpoint(self, *args, **kwargs):
        """Requeue (the run store holds the state) unless this job has been requeued ``max_requeues`` times."""
        if self.requeues >= self.max_requeues:
            print(f"not requeued: {self.requeues} requeues already (max_requeues); submit again to resume",
                  file=sys.stderr, flush=True)
            return None
        self.requeues += 1
        return submitit.helpers.DelayedSubmission(self)
