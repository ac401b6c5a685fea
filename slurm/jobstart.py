"""How a job's Python starts: ``python -u -m slurm.jobstart -u -m submitit.core._submit FOLDER`` (submitit's own
command after this module's name, ``submit.executor``'s ``python``).

A stop signal (``STOP_SIGNALS``: the time-limit warning USR2, a preemption's SIGTERM) that reaches a Python process
before any handler is set ends it at once, and the job ends without a result and without a requeue. Before submitit
has loaded the job (which imports torch: seconds) there is no handler, and a job that starts near its time limit's
warning (the warning comes on the controller's time-limit checks, every 30 s) can be in that window. So this module,
which imports nothing heavy, holds those signals first: one that comes is noted in the environment (``EARLY_SIGNAL``)
and raised again once the job's own handlers are set (``jobs.Job.act_on_an_early_stop_signal``). Then it runs
submitit's entry point as ``python -m`` would.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys

EARLY_SIGNAL = "PRUNING_EARLY_STOP_SIGNAL"  # the name of the first stop signal that came before the job's handlers
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)  # the time-limit warning / a preemption; SIGTERM: preemption as well


def hold(signum, frame) -> None:
    os.environ.setdefault(EARLY_SIGNAL, signal.Signals(signum).name)


def main(argv: list[str]) -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, hold)
    args = list(argv)
    while args[:1] == ["-u"]:  # the interpreter's flag, repeated in submitit's command: ours has it
        args.pop(0)
    if len(args) < 2 or args[0] != "-m":
        sys.exit(f"usage: python -u -m slurm.jobstart -u -m MODULE [ARGS...], not {argv}")
    sys.argv = [args[1], *args[2:]]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
