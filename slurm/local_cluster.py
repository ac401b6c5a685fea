"""A real single-node Slurm cluster on this host, for the Slurm tests and for trying the submit path.

    python3 slurm/local_cluster.py up [--install]   # (install slurmctld slurmd slurm-client munge,) configure, start
    python3 slurm/local_cluster.py status           # is a cluster answering? (exit 0 if the node is usable)
    python3 slurm/local_cluster.py down             # stop the daemons this script started, nothing else

This host becomes controller and compute node of a cluster with one partition (``debug``), no accounting, and its
state, spool, logs and pid files under ``--dir`` (default ``/var/tmp/pruning-slurm``). ``up`` waits until ``sinfo``
shows the node idle. Daemons that were already running (a munged, a real cluster) are used, never restarted or
stopped: ``started.json`` in ``--dir`` lists what this script started, and ``down`` stops exactly those.
The config is written to ``/etc/slurm/slurm.conf`` when there is none (so plain ``sbatch`` finds it); an existing
one is left alone and ours is used through ``SLURM_CONF``. Needs root (the daemons) and only the standard library,
so it runs before the project's virtual environment exists.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
ETC_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by slurm/local_cluster.py"
PARTITION = "debug"


class ClusterError(Exception):
    pass


def sh(*cmd, check=True, timeout=60, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc


# ------------------------------------------------------------------------------------------------ checks
def node_state(env=None) -> str | None:
    """The state sinfo reports for the cluster's nodes ('idle', 'mixed', ...), or None when no cluster answers."""
    if shutil.which("sinfo") is None:
        return None
    try:
        proc = sh("sinfo", "-h", "-o", "%T", check=False, timeout=15, env=env)
    except subprocess.TimeoutExpired:
        return None
    states = proc.stdout.split()
    return states[0].rstrip("*~#") if proc.returncode == 0 and states else None


def usable(env=None) -> bool:
    return node_state(env) in ("idle", "mixed", "allocated", "completing")


def munge_works() -> bool:
    if shutil.which("munge") is None or shutil.which("unmunge") is None:
        return False
    cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
    return cred.returncode == 0 and subprocess.run(["unmunge"], input=cred.stdout, capture_output=True,
                                                   timeout=10).returncode == 0


# ------------------------------------------------------------------------------------------------ setup
def install() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sh("apt-get", "update", "-q", timeout=600, env=env)
    sh("apt-get", "install", "-y", "-q", *PACKAGES, timeout=1200, env=env)


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10  # leave the OS a tenth
    return 1024


def slurm_conf(d: Path, host: str, cpus: int) -> str:
    return f"""{MARK}: a single-node cluster for tests
ClusterName=pruning-local
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again once its old credential expired (default 120 s): short, for fast requeue tests
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
# bind each task to the CPUs of its step, as most sites do: a task that srun did not give the job's --cpus-per-task
# runs on one CPU (Slurm >= 22.05), which the tests would see
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# schedule every 2 s: a requeued job restarts as soon as it may (~10 s after its requeue), not on the 30-s cadence
# of the time-limit checks (a job started on such a check can get or lose its USR2 warning before it runs)
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName={host} CPUs={cpus} RealMemory={memory_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def read_pid(path: Path, timeout: float = 10.0) -> int:
    """The pid a daemon writes once it has forked: its file may not exist yet, or exist still empty, right after the
    command that started it returned."""
    deadline = time.time() + timeout
    while True:
        text = path.read_text().strip() if path.exists() else ""
        if text.isdigit():
            return int(text)
        if time.time() > deadline:
            raise ClusterError(f"{path} holds no pid {timeout:.0f} s after the daemon started; see the logs beside it")
        time.sleep(0.1)


def start_munge(started: dict) -> None:
    if munge_works():
        return
    for path in ("/run/munge", "/var/log/munge", "/var/lib/munge", "/etc/munge"):
        os.makedirs(path, exist_ok=True)
        shutil.chown(path, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        sh("runuser", "-u", "munge", "--", "mungekey", "--create")  # the Debian package normally makes it
    sh("runuser", "-u", "munge", "--", "munged")
    for _ in range(50):
        if munge_works():
            break
        time.sleep(0.2)
    else:
        raise ClusterError("munged started but munge -n | unmunge fails; see /var/log/munge/munged.log")
    pid = Path("/run/munge/munged.pid")
    started["munged"] = int(pid.read_text()) if pid.exists() else None


def up(d: Path, do_install: bool, timeout: float = 120) -> dict:
    """Start (and configure) the cluster unless one already answers; returns the environment to reach it."""
    env = {}
    if usable():
        print(f"a Slurm cluster is already up (node {node_state()}); nothing started")
        return env
    if os.geteuid() != 0:
        raise ClusterError("starting the Slurm daemons needs root; run this as root (or use your cluster)")
    if do_install:
        install()
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(b) is None]
    if missing:
        raise ClusterError(f"{', '.join(missing)} not installed; run with --install (apt-get install "
                           f"{' '.join(PACKAGES)})")
    d.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (d / sub).mkdir(exist_ok=True)
    started = {"dir": str(d)}
    host = socket.gethostname().split(".")[0]
    text = slurm_conf(d, host, os.cpu_count() or 1)
    conf = d / "slurm.conf"
    conf.write_text(text)
    if not ETC_CONF.exists() or ETC_CONF.read_text().startswith(MARK):
        ETC_CONF.parent.mkdir(parents=True, exist_ok=True)
        ETC_CONF.write_text(text)
        started["etc_conf"] = str(ETC_CONF)
    else:
        env["SLURM_CONF"] = str(conf)
        os.environ["SLURM_CONF"] = str(conf)
    start_munge(started)
    daemon_env = dict(os.environ, SLURM_CONF=str(conf))
    sh("slurmctld", env=daemon_env)  # daemonizes; -c would wipe saved state, not needed on a fresh dir
    started["slurmctld"] = read_pid(d / "slurmctld.pid")
    sh("slurmd", env=daemon_env)
    started["slurmd"] = read_pid(d / "slurmd.pid")
    (d / "started.json").write_text(json.dumps(started))
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = node_state(daemon_env)
        if state == "idle":
            break
        if state in ("down", "drained", "drain"):  # a node left down by an earlier run: bring it back
            sh("scontrol", "update", f"nodename={host}", "state=resume", check=False, env=daemon_env)
        time.sleep(1)
    else:
        raise ClusterError(f"the node did not become idle within {timeout:.0f} s (sinfo: {node_state(daemon_env)});"
                           f" see {d}/slurmctld.log and {d}/slurmd.log")
    print(f"Slurm cluster up: node {host} idle, partition {PARTITION}, logs in {d}")
    if env:
        print(f"export SLURM_CONF={env['SLURM_CONF']}")
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def down(d: Path) -> None:
    """Stop what ``up`` started (recorded in started.json), in reverse order, and nothing else."""
    record = d / "started.json"
    if not record.exists():
        print("nothing was started by local_cluster.py; nothing stopped")
        return
    started = json.loads(record.read_text())
    for name in ("slurmd", "slurmctld", "munged"):
        pid = started.get(name)
        if not pid or not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.1)
        print(f"stopped {name} (pid {pid})")
    if started.get("etc_conf") and ETC_CONF.exists() and ETC_CONF.read_text().startswith(MARK):
        ETC_CONF.unlink()
    record.unlink()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 slurm/local_cluster.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", default=os.environ.get("PRUNING_SLURM_DIR", "/var/tmp/pruning-slurm"),
                        help="state, spool, logs, pid files and the record of what was started")
    parser.add_argument("--install", action="store_true", help="apt-get install the packages if missing")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the node to be idle")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            up(Path(args.dir), args.install, args.timeout)
        elif args.action == "down":
            down(Path(args.dir))
        else:
            state = node_state()
            print(f"node {state}" if state else "no Slurm cluster answers")
            return 0 if usable() else 1
    except (ClusterError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
