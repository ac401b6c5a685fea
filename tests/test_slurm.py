"""Slurm: resource settings, code snapshots and one-line errors (always), then real jobs on a real cluster.

The cluster tests use the Slurm cluster that answers ``sinfo`` (CI brings up a single-node one with
``slurm/local_cluster.py up --install`` in ``.ci/run``); as root with the packages installed they start it themselves
and stop afterwards only what they started. Without either they skip.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from common import config as C
from common import pretrain
from common.errors import UserError
from common.store import Run, read_log
from slurm import local_cluster, resources, snapshot
from tests.conftest import ROOT, one_error_line, one_thread_pretrain, run_cli, run_main

TINY = ["--model", "mlp", "--train.epochs", "3", "--progress", "off"]


# ---------------------------------------------------------------------------------------------------- no cluster
def test_resources_layer_file_then_environment_then_flags(tmp_path):
    f = tmp_path / "res.toml"
    f.write_text('partition = "gpu"\ntime = 240\ngpus = 4\nmem = "64G"\n')
    res = resources.resolve(f, env={"PRUNING_SLURM_TIME": "30", "PRUNING_SLURM_QOS": "high"}, gpus=2)
    assert (res.partition, res.time, res.gpus, res.mem, res.qos, res.cpus) == ("gpu", 30, 2, "64G", "high", 1)
    assert res.tasks_per_node == 2
    assert resources.resolve(None, env={}) == resources.Resources()
    with pytest.raises(UserError, match="PRUNING_SLURM_GPUS: 'gpus' must be a whole number"):
        resources.resolve(f, env={"PRUNING_SLURM_GPUS": "four"})


def test_malformed_resource_config_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("partition = gpu\n")  # an unquoted string is not TOML
    proc = run_main("slurm.submit", "--resources", bad, "common.pretrain", *TINY, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2 and "malformed resource config" in one_error_line(proc)
    bad.write_text('[paper]\ngpus = 4\n')
    proc = run_main("slurm.submit", "--resources", bad, "common.pretrain", *TINY, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2 and "unknown key 'paper' (a [section]?)" in one_error_line(proc)
    bad.write_text('time = "two hours"\n')
    with pytest.raises(UserError, match="'time' must be a whole number"):
        resources.resolve(bad, env={})
    assert not (tmp_path / "runs").exists()


def test_cluster_slurm_without_sbatch_is_one_line_error(tmp_path):
    env = {"PATH": str(tmp_path / "empty-bin")}  # no sbatch (nor anything else) on PATH
    proc = run_main("figures", "fig-gmp-schedule", "--cluster", "slurm", "--runs-dir", tmp_path / "runs", env=env)
    assert proc.returncode == 2 and "needs Slurm's sbatch on PATH" in one_error_line(proc)
    proc = run_main("slurm.submit", "common.pretrain", *TINY, "--runs-dir", tmp_path / "runs", env=env)
    assert proc.returncode == 2 and "needs Slurm's sbatch on PATH" in one_error_line(proc)
    assert not list((tmp_path / "runs").rglob("result.json"))


@pytest.fixture
def no_controller(tmp_path):
    """An environment in which no Slurm controller answers: a slurm.conf naming a port nothing listens on (sbatch
    gives up after MessageTimeout=2 tries, about a second). Without Slurm's sbatch here, a stand-in that fails as the
    real one does then."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=down\nSlurmctldHost=localhost\nSlurmctldPort={port}\nMessageTimeout=2\n"
                    "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=debug Nodes=localhost Default=YES\n")
    env = {"SLURM_CONF": str(conf), "PRUNING_SLURM_LOGS": str(tmp_path / "slurm_logs")}
    if shutil.which("sbatch") is None:
        (tmp_path / "bin").mkdir()
        fake = tmp_path / "bin" / "sbatch"
        fake.write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Unable to contact slurm "
                        "controller (connect failure)' >&2\nexit 1\n")
        fake.chmod(0o755)
        env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    return env


def test_submit_when_no_controller_answers_is_one_line_error_and_leaves_nothing(no_controller, tmp_path):
    logs = tmp_path / "slurm_logs"
    args = ["slurm.submit", "common.pretrain", *TINY, "--runs-dir", tmp_path / "runs"]
    proc = run_main(*args, env=no_controller)
    line = one_error_line(proc)
    assert proc.returncode == 2 and "no Slurm controller answers" in line and "scontrol ping" in line, line
    assert "partition" not in line and len(proc.stderr.splitlines()) == 1, proc.stderr  # nor sbatch's own echo
    assert not logs.exists() and not (tmp_path / "runs").exists()
    (logs / "code" / "0123456789abcdef").mkdir(parents=True)  # a log root that earlier submissions made stays
    proc = run_main(*args, env=no_controller)
    assert proc.returncode == 2 and "no Slurm controller answers" in one_error_line(proc)
    assert [p.name for p in logs.iterdir()] == ["code"], list(logs.iterdir())


def test_snapshot_freezes_the_code_at_submission(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("VALUE = 1\n")
    (repo / "notes.txt").write_text("not code\n")
    first = snapshot.snapshot(tmp_path / "code", root=repo)
    assert (first / "pkg" / "mod.py").read_text() == "VALUE = 1\n" and not (first / "notes.txt").exists()
    (repo / "pkg" / "mod.py").write_text("VALUE = 2\n")  # editing the checkout after submitting
    assert (first / "pkg" / "mod.py").read_text() == "VALUE = 1\n"
    second = snapshot.snapshot(tmp_path / "code", root=repo)
    assert second != first and (second / "pkg" / "mod.py").read_text() == "VALUE = 2\n"
    assert snapshot.snapshot(tmp_path / "code", root=repo) == second  # same code, same folder


@dataclass
class Node:
    name: str = C.opt("", "which run of GRAPH")
    runs_dir: str = C.opt("runs", "store", hash=False)
    data_dir: str = C.opt("data", "data", hash=False)


# what each run of a fake script executes first: two dense models, a rewinding point, a mask, an IMP chain, ...
GRAPH = {"dense0": (), "dense1": (), "rewind": ("dense0",), "mask": ("dense0",), "imp": ("dense0", "rewind"),
         "retrain": ("mask", "rewind"), "g0": ("dense0",), "g1": ("dense1",), "loop": ("loop2",), "loop2": ("loop",)}


@pytest.fixture
def fake_script(monkeypatch):
    module = types.ModuleType("fake_chain")
    module.SCRIPT = "fake_chain"
    module.dependencies = lambda cfg: [("fake_chain", C.replace(cfg, name=n)) for n in GRAPH[cfg.name]]
    monkeypatch.setitem(sys.modules, "fake_chain", module)
    return module


def same_resources(script, cfg):
    """The fake script's runs have no model and no cost accounting: one set of resources for all."""
    return resources.Resources(max_requeues=3)


def test_plan_submits_dependencies_first_and_leaves_out_done_and_queued_runs(tmp_path, fake_script):
    from slurm.submit import place, plan

    def row(name):
        return ("fake_chain", Node(name, str(tmp_path / "runs")))

    def d(name):
        return str(Run("fake_chain", place(row(name)[1])).dir)

    def shape(batches):
        return sorted((b.level, b.needs, sorted(d(c.name) for _, c in b.rows)) for b in batches)

    batches, already = plan([row(n) for n in ("g0", "g1", "retrain", "imp", "g0")], queued=lambda runs: {},
                            resources=same_resources)
    assert [b.level for b in batches] == sorted(b.level for b in batches)  # what others need is submitted first
    assert shape(batches) == sorted([
        (0, (), sorted([d("dense0"), d("dense1")])),
        (1, (d("dense0"),), sorted([d("g0"), d("rewind"), d("mask")])),
        (1, (d("dense1"),), [d("g1")]),
        (2, tuple(sorted([d("dense0"), d("rewind")])), [d("imp")]),
        (2, tuple(sorted([d("mask"), d("rewind")])), [d("retrain")])]) and already == {}
    # a done dependency is left out; a queued one is not submitted again: its dependents wait for its job
    Path(d("dense1")).mkdir(parents=True)
    (Path(d("dense1")) / "result.json").write_text("{}")
    batches, already = plan([row("g0"), row("g1")], queued=lambda runs: {d("dense0"): "41_0"},
                            resources=same_resources)
    assert already == {d("dense0"): "41_0"}
    assert shape(batches) == [(0, (), [d("g1")]), (0, (d("dense0"),), [d("g0")])]
    with pytest.raises(UserError, match="lead back to it"):
        plan([row("loop")], queued=lambda runs: {}, resources=same_resources)


# ------------------------------------------------------------------------------- resources per run, requeue budget
def paper_rows(tmp_path, figure):
    from figures import pipeline

    return pipeline.planned_runs(figure, "paper", {"runs_dir": str(tmp_path / "runs")})


def test_a_paper_figure_is_submitted_as_arrays_whose_resources_follow_the_table(tmp_path):
    from slurm.submit import plan

    rows = paper_rows(tmp_path, "fig-bip-trajectory") + paper_rows(tmp_path, "fig-gmp-vs-oneshot")
    batches, _ = plan(rows, queued=lambda runs: {}, resources=resources.Choice(env={}).for_run)
    seen = set()
    for b in batches:
        for script, cfg in b.rows:
            setup = f"{cfg.dataset}/{cfg.model}"
            seen.add((script, setup))
            if script == "bip.prune":  # one process, whatever the model: one GPU, one task
                assert (b.res.nodes, b.res.gpus, b.res.tasks_per_node) == (1, 1, 1), (script, setup, b.res)
            elif script == "bip.rewind":  # a file copy: no GPU, one CPU, minutes
                assert (b.res.gpus, b.res.cpus, b.res.tasks_per_node, b.res.time) == (0, 1, 1, 30), b.res
            elif setup == "imagenet/resnet50":  # a node: 8 GPUs, one DDP rank each
                assert (b.res.gpus, b.res.tasks_per_node, b.res.cpus, b.res.time) == (8, 8, 8, 240), (script, b.res)
            else:
                assert cfg.dataset in ("cifar10", "cifar100", "tinyimagenet") and b.res.gpus == 1, (script, b.res)
    assert {("gmp.prune", "imagenet/resnet50"), ("common.pretrain", "imagenet/resnet50"),
            ("bip.prune", "imagenet/resnet50"), ("bip.magnitude", "cifar10/resnet18")} <= seen
    # the ImageNet BiP runs and the rewinding point wait for the same dense model, yet are two arrays (1 vs 0 GPUs)
    split = [b for b in batches if any(c.dataset == "imagenet" for _, c in b.rows) and b.level == 1]
    assert sorted(b.res.gpus for b in split if {s for s, _ in b.rows} <= {"bip.prune", "bip.rewind"}) == [0, 1]
    assert len({(b.level, b.needs, b.res) for b in batches}) == len(batches)  # one array per (level, needs, res)


def test_resource_layers_override_the_table_but_not_a_one_process_script(tmp_path):
    rows = paper_rows(tmp_path, "fig-bip-trajectory")
    bip = next(c for s, c in rows if s == "bip.prune" and c.dataset == "imagenet")
    cifar = next(c for s, c in rows if s == "bip.magnitude" and c.dataset == "cifar10")
    mine = tmp_path / "mine.toml"
    mine.write_text('partition = "a100"\n[setup.cifar10]\ncpus = 2\n[setup."imagenet/resnet50"]\ngpus = 4\n'
                    '[script."bip.magnitude"]\ntime = 600\n')
    choice = resources.Choice(mine, env={})
    magnitude = choice.for_run("bip.magnitude", cifar)
    assert (magnitude.partition, magnitude.gpus, magnitude.cpus, magnitude.time) == ("a100", 1, 2, 600)
    gmp = next(c for s, c in paper_rows(tmp_path, "fig-gmp-vs-oneshot") if s == "gmp.prune" and c.dataset == "imagenet")
    assert (choice.for_run("gmp.prune", gmp).gpus, resources.Choice(env={}).for_run("gmp.prune", gmp).gpus) == (4, 8)
    env = {"PRUNING_SLURM_CPUS": "6", "PRUNING_SLURM_GPUS": "2"}
    assert (resources.Choice(mine, env=env).for_run("bip.magnitude", cifar).cpus,
            resources.Choice(mine, env=env, cpus=3).for_run("bip.magnitude", cifar).cpus) == (6, 3)
    one = resources.Choice(mine, env=env, gpus=8, tasks=8, nodes=2).for_run("bip.prune", bip)
    assert (one.nodes, one.gpus, one.tasks_per_node, one.partition) == (1, 1, 1, "a100")
    assert (one.mem, resources.Choice(env={}).for_run("bip.prune", bip).mem) == ("32G", "32G")  # 1/8 of 256G
    assert resources.share("100G", 0.125) == "13G" and resources.share("2T", 1.0) == "2T"
    bad = tmp_path / "bad.toml"
    bad.write_text('[setup.cifar10]\ngpus = "one"\n')
    with pytest.raises(UserError, match=r'bad.toml in \[setup."cifar10"\]: .gpus. must be a whole number'):
        resources.Choice(bad, env={})


def test_a_rewinding_point_is_a_file_copy_job_and_each_setup_asks_for_memory(tmp_path):
    from bip import rewind
    from common.pretrain import SCRIPT as DENSE
    from slurm.submit import place

    from figures.cost import with_dependencies

    rows = with_dependencies(paper_rows(tmp_path, "fig-bip-trajectory"))
    cfg = place(next(c for s, c in rows if s == "bip.rewind" and c.dataset == "imagenet"))
    choice = resources.Choice(env={})
    res = choice.for_run("bip.rewind", cfg)  # the dense run will keep the weights: a copy, not an 8-GPU node for 4 h
    assert (res.gpus, res.cpus, res.nodes, res.tasks_per_node, res.time, res.mem, res.max_requeues) == \
        (0, 1, 1, 1, 30, "4G", 2), res
    dense = Run(DENSE, rewind._dense_config(cfg))
    dense.dir.mkdir(parents=True)
    (dense.dir / "result.json").write_text("{}")  # done, without the snapshot: the rewind replays its training
    assert choice.for_run("bip.rewind", cfg).gpus == 8
    (dense.dir / "snapshots").mkdir()
    (dense.dir / "snapshots" / f"epoch{cfg.epoch}.pt").write_bytes(b"")
    assert choice.for_run("bip.rewind", cfg).gpus == 0
    script, criteo = next((s, c) for s, c in paper_rows(tmp_path, "tab-seqattn-blocks") if c.dataset == "criteo")
    mem = {d: choice.for_run(script, C.replace(criteo, dataset=d, model=m)).mem for d, m in
           [("criteo", criteo.model), ("cifar10", "resnet18"), ("imagenet", "resnet50")]}
    assert mem == {"criteo": "32G", "cifar10": "16G", "imagenet": "256G"}  # Criteo's first parse peaks at ~17 GB


def test_criteos_runs_wait_for_one_prepare_data_job(tmp_path):
    from slurm.submit import plan

    rows = [(s, c) for s, c in paper_rows(tmp_path, "tab-seqattn-blocks") if c.dataset == "criteo"]
    batches, _ = plan(rows, queued=lambda runs: {}, resources=resources.Choice(env={}).for_run)
    first, then = batches
    assert [s for s, _ in first.rows] == ["common.prepare"] and (first.res.gpus, first.res.mem) == (0, "32G")
    assert len(rows) == len(then.rows) == 24 and then.needs == (str(Run(*first.rows[0]).dir),)
    assert (then.res.gpus, then.res.mem) == (1, "32G")


def fake_slurm(tmp_path, monkeypatch, gres="(null)", refuse_after=None) -> Path:
    """sbatch, srun and sinfo stand-ins on PATH: sbatch --help lists a few options, a submission prints the next job
    id (from 100; with ``refuse_after`` = k, the k+1-th is refused for a MaxSubmitJobs limit as Slurm words it);
    sinfo lists partitions 'debug' (no gres) and 'gpu' (``gres``). Returns the file counting the submissions."""
    bin_dir, count = tmp_path / "fake-bin", tmp_path / "submissions"
    bin_dir.mkdir()
    limit = (f'if [ "$n" -ge {100 + refuse_after} ]; then echo "sbatch: error: Batch job submission failed: Job '
             'violates accounting/QOS policy (job submit limit, user\'s size and/or time limits)" >&2; exit 1; fi\n'
             if refuse_after is not None else "")
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nif [ "$1" = --help ]; then printf "  -A, --account=name\\n      --exclusive\\n'
        '      --mail-type=type\\n      --comment=name\\n"; exit 0; fi\n'
        f'n=$(cat {count} 2>/dev/null || echo 100)\n{limit}echo $((n + 1)) > {count}\necho "Submitted batch job $n"\n')
    (bin_dir / "sinfo").write_text(f'#!/bin/sh\necho "debug* (null)"\necho "gpu {gres}"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PRUNING_SLURM_LOGS", str(tmp_path / "logs"))
    return count


def test_free_form_sbatch_options_typed_gpus_and_srun_arguments_from_the_resource_file(tmp_path, monkeypatch):
    from slurm import submit

    count = fake_slurm(tmp_path, monkeypatch, gres="gpu:a100:4(S:0-1),nvme:1")
    monkeypatch.setattr(submit, "snapshot", lambda root, copy=True: tmp_path / "code")
    mine = tmp_path / "mine.toml"
    mine.write_text('partition = "gpu"\ngpus = 1\ngpu_type = "a100"\nsrun = ["--mpi=none"]\n'
                    'sbatch = {exclusive = true, mail-type = "END", comment = "pruning"}\n')
    cfg = C.parse_args(pretrain.Config, [*TINY, "--runs-dir", str(tmp_path / "runs")])
    batches, _, _ = submit.submit_runs([(pretrain.SCRIPT, cfg)], resources.Choice(mine, env={}), "site")
    text = batches[0].jobs[0].paths.submission_file.read_text()
    for line in ("#SBATCH --exclusive", "#SBATCH --mail-type=END", "#SBATCH --comment=pruning",
                 "#SBATCH --gpus-per-node=a100:1", "#SBATCH --partition=gpu"):
        assert line in text.splitlines(), text
    srun = next(ln for ln in text.splitlines() if ln.startswith("srun "))
    assert " --cpus-per-task 1 --mpi=none " in srun, srun
    assert resources.resolve(None, env={"PRUNING_SLURM_SBATCH": "exclusive mail-type=END"}).sbatch == \
        (("exclusive", True), ("mail-type", "END"))
    assert count.read_text() == "101\n"


@pytest.mark.parametrize("toml, said", [
    ('sbatch = {mail-typo = "END"}', "'sbatch' option 'mail-typo' is not an option of this cluster's sbatch "
                                     "(sbatch --help); did you mean 'mail-type'?; nothing submitted"),
    ('sbatch = {time = 30}', "'sbatch' option 'time' is set by the key 'time'; use that, not 'sbatch'"),
    ('gpus = 1\ngpu_type = "h100"', "1 GPU(s) of type 'h100' asked on partition 'gpu', whose nodes have gpu:a100:4 "
                                    "(sinfo %G); set gpu_type to one of those types, or another partition"),
    ('srun = "--cpus-per-task=4"', "'srun' argument '--cpus-per-task=4': srun is given the key 'cpus' already")])
def test_a_bad_sbatch_option_gres_or_srun_argument_is_one_line_and_submits_nothing(toml, said, tmp_path,
                                                                                   monkeypatch):
    count = fake_slurm(tmp_path, monkeypatch, gres="gpu:a100:4(S:0-1)")
    mine = tmp_path / "mine.toml"
    mine.write_text(f'partition = "gpu"\n{toml}\n')
    proc = run_main("slurm.submit", "--resources", mine, "common.pretrain", *TINY, "--runs-dir", tmp_path / "runs")
    line = one_error_line(proc)
    assert proc.returncode == 2 and said in line, line
    assert not count.exists() and not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()


def test_a_max_submit_jobs_refusal_is_named_and_a_submission_can_be_capped(tmp_path, monkeypatch, capsys):
    from figures import pipeline
    from slurm import submit

    count = fake_slurm(tmp_path, monkeypatch, refuse_after=1)  # the site lets one more submission through
    monkeypatch.setattr(submit, "snapshot", lambda root, copy=True: tmp_path / "code")
    rows = pipeline.planned_runs("fig-gmp-wd", "tiny", {"runs_dir": str(tmp_path / "runs")})
    with pytest.raises(UserError, match=r"sbatch refused the job: .*job submit limit.*: the cluster's MaxSubmitJobs "
                                        r"limit .* is reached; the 3 job\(s\) it queued before stay queued \(jobs "
                                        r"100_0..100_2\) and are not submitted again; cap a submission with "
                                        r"max_submit = N"):
        submit.submit_runs(rows, resources.Choice(env={}), "limit")
    assert count.read_text() == "101\n"
    capsys.readouterr()
    count.unlink()
    batches, _, already = submit.submit_runs(rows, resources.Choice(env={}, max_submit=5), "capped", dry_run=True)
    assert [len(b.rows) for b in batches] == [3, 2] and not count.exists()  # the 3 queued before are not in squeue
    assert "max_submit = 5: 5 of the 21 run(s) to submit are submitted now" in capsys.readouterr().out


def test_a_job_prints_its_cpus_and_one_progress_line_per_epoch(tmp_path, monkeypatch, capsys):
    """The job's task bound to one core while the job says 8 CPUs per task: it computes on one thread and says so;
    its run prints a line per epoch into the log even when it was asked for no progress (TINY: --progress off)."""
    from common import store
    from slurm.jobs import Job

    monkeypatch.setattr(store, "LOCK_WAIT", store.LOCK_WAIT)  # a job sets it: restored afterwards
    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "1",
                        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "localhost",
                        "SLURM_CPUS_PER_TASK": "8"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    cfg = C.parse_args(pretrain.Config, [*TINY, "--runs-dir", str(tmp_path / "runs")])
    threads = torch.get_num_threads()
    try:
        Job(pretrain.SCRIPT, cfg)()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert "job 7 task 0: cpus: 1 (affinity 0; SLURM_CPUS_PER_TASK 8): 1 torch threads, --workers auto = 1" in out
    assert [ln.split()[2] for ln in err.splitlines() if ln.startswith("[pretrain] epoch")] == ["1/3", "2/3", "3/3"]


def test_requeue_budget_follows_the_estimated_run_length_and_the_time_limit(tmp_path):
    from common.cost import a100_hours, load_times

    node = resources.Resources(time=240, gpus=8, signal_delay_s=120)
    # 45 A100-h on 8 GPUs: 337.5 min; an epoch bound of 1 A100-h is 7.5 min there, less than the 30-min interval:
    # 240 - 7.5 - 2 = 230.5 usable minutes per job, 2 legs, + 2 spare + a quarter of the legs
    assert resources.requeue_budget(node, 45.0, 1.0, 30.0) == 2 + 2 + 1
    one = resources.Resources(time=240, gpus=1)  # 60 A100-h on one GPU: 208 usable minutes per job, 18 legs
    assert resources.requeue_budget(one, 60.0, 1.0, 30.0) == 18 + 2 + 5
    assert resources.requeue_budget(dataclasses.replace(one, speed=0.5), 60.0, 1.0, 30.0) == 35 + 2 + 9
    assert resources.requeue_budget(one, 0.0, 0.0, 30.0) == 2  # digits: nothing to resume
    bip = next(c for s, c in paper_rows(tmp_path, "fig-bip-trajectory") if s == "bip.prune" and c.dataset == "imagenet")
    times = load_times()
    hours = a100_hours("bip.prune", bip, times)
    res = resources.Choice(env={}).for_run("bip.prune", bip)
    assert res.max_requeues == resources.requeue_budget(res, hours, 0.5 * 2.0, 30.0) > 3 and hours > 24
    assert resources.Choice(env={}, max_requeues=7).for_run("bip.prune", bip).max_requeues == 7  # as set


@pytest.mark.parametrize("every, between", [
    (30.0, "one checkpoint interval (30 min, --checkpoint-every-minutes)"),
    (0.0, "one epoch (~60 min estimated, checkpointed at its end; --checkpoint-every-minutes 0)")])
def test_a_time_limit_that_leaves_no_time_to_compute_is_a_user_error(every, between):
    res = resources.Resources(time=32, gpus=1)
    with pytest.raises(UserError, match=re.escape(f"the time limit of 32 min per job is not longer than {between} "
                                                  f"plus the signal delay (120 s, signal_delay_s)")):
        resources.requeue_budget(res, 60.0, 1.0, every)
    assert resources.requeue_budget(dataclasses.replace(res, time=33), 0.5, 1.0, 30.0) == 30 + 2 + 8  # 1 usable minute


def test_submit_with_too_short_a_time_limit_is_one_line_error(tmp_path):
    proc = run_main("slurm.submit", "--time", "20", "--gpus", "1", "gmp.prune", "--preset", "imagenet-resnet50",
                    "--runs-dir", tmp_path / "runs", env={"PRUNING_SLURM_LOGS": str(tmp_path / "logs")})
    line = one_error_line(proc)
    assert proc.returncode == 2, proc.stderr
    assert "time limit of 20 min per job" in line and "(30 min, --checkpoint-every-minutes)" in line, line
    assert "signal delay (120 s" in line and "raise --time" in line and "lower --checkpoint-every-minutes" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()


def test_submitted_jobs_carry_their_resources_and_requeue_budget(tmp_path, monkeypatch):
    """Through submitit to a stand-in sbatch: the batch scripts and the pickled jobs it would run."""
    import submitit

    from common.cost import a100_hours, load_times
    from slurm import submit
    from slurm.jobs import Job

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nn=$(cat {tmp_path}/n 2>/dev/null || echo 100)\n'
                                    f'echo $((n + 1)) > {tmp_path}/n\necho "Submitted batch job $n"\n')
    for name in ("srun", "sinfo"):
        (bin_dir / name).write_text("#!/bin/sh\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PRUNING_SLURM_LOGS", str(tmp_path / "logs"))
    monkeypatch.setattr(submit, "snapshot", lambda root: tmp_path / "code")
    gmp = next(r for r in paper_rows(tmp_path, "fig-gmp-vs-oneshot") if r[0] == "gmp.prune" and
               r[1].dataset == "imagenet")
    bip = next(r for r in paper_rows(tmp_path, "fig-bip-trajectory") if r[0] == "bip.prune" and
               r[1].dataset == "imagenet")
    batches, folder, _ = submit.submit_runs([gmp, bip], resources.Choice(env={}), "test")
    times = load_times()
    shapes = set()
    for b in batches:
        for job, (script, cfg), n in zip(b.jobs, b.rows, b.requeues):
            delayed = submitit.core.utils.DelayedSubmission.load(job.paths.submitted_pickle)
            assert isinstance(delayed.function, Job) and delayed.function.max_requeues == n
            assert n == resources.requeue_budget(b.res, a100_hours(script, cfg, times), 1.0, 30.0) > 3
            assert delayed._timeout_countdown == max(b.requeues)  # submitit's own count never stops it first
            sbatch = job.paths.submission_file.read_text()
            gpus = re.search(r"#SBATCH --gpus-per-node=(\d+)", sbatch).group(1)
            tasks = re.search(r"#SBATCH --ntasks-per-node=(\d+)", sbatch).group(1)
            assert "#SBATCH --time=240" in sbatch
            cpus = re.search(r"#SBATCH --cpus-per-task=(\d+)", sbatch).group(1)
            srun = next(ln for ln in sbatch.splitlines() if ln.startswith("srun "))
            assert f" --cpus-per-task {cpus} " in srun, srun  # srun (Slurm >= 22.05) does not take it from the job
            shapes.add((script, int(gpus), int(tasks)))
    assert shapes == {("common.pretrain", 8, 8), ("gmp.prune", 8, 8), ("bip.prune", 1, 1)}, shapes


def test_every_requeue_counts_toward_the_budget_those_slurm_made_too(monkeypatch):
    """A preemption that Slurm requeues itself starts the job as submitted (its own count at 0): SLURM_RESTART_COUNT
    still counts it."""
    from slurm.jobs import Job

    job = Job(pretrain.SCRIPT, None, max_requeues=3)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    assert job.checkpoint() is None and job.requeues == 0
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert job.checkpoint() is not None and job.requeues == 2
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    assert job.checkpoint() is not None and job.requeues == 3 and job.checkpoint() is None


PROBE = """import os, sys
from slurm import jobstart
print("ready", flush=True)
sys.stdin.readline()  # the stop signal comes meanwhile, before any handler of the job's own
print(os.environ.get(jobstart.EARLY_SIGNAL), sys.argv[1:], flush=True)
"""


@pytest.mark.parametrize("start", [[], ["-u", "-m", "slurm.jobstart", "-u"]], ids=["plain", "jobstart"])
def test_a_stop_signal_in_a_jobs_first_seconds_is_held_and_noted_not_fatal(start, tmp_path):
    """A job's Python starts through slurm.jobstart (submit.JOB_PYTHON): a USR2 that comes before the job has set any
    handler is noted in the environment for the job's handlers; a Python started plainly dies of it."""
    import signal

    from slurm import submit

    assert submit.JOB_PYTHON.endswith(" -u -m slurm.jobstart")
    (tmp_path / "probe.py").write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    proc = subprocess.Popen([sys.executable, *start, "-m", "probe", "FOLDER"], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGUSR2)
    time.sleep(0.2)
    out, err = proc.communicate("go\n", timeout=60)
    if start:
        assert proc.returncode == 0 and out == "SIGUSR2 ['FOLDER']\n", err
    else:
        assert proc.returncode == -signal.SIGUSR2


@contextlib.contextmanager
def submitits_requeue_stood_in_for():
    """Inside: USR2's handler records the signals it gets (a list, yielded), standing in for submitit's
    checkpoint-and-requeue. Afterwards: the process's handlers, the alarm and the stop flag as they were."""
    import signal

    from common import train

    requeued = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGALRM)}
    signal.signal(signal.SIGUSR2, lambda signum, frame: requeued.append(signum))
    try:
        yield requeued
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        train.clear_stop()


def test_a_stop_signal_noted_before_the_jobs_handlers_is_acted_on_once_they_are_set(monkeypatch):
    import signal

    from slurm import jobs, jobstart

    monkeypatch.setenv(jobstart.EARLY_SIGNAL, "SIGUSR2")
    with submitits_requeue_stood_in_for() as requeued:
        job = jobs.Job(pretrain.SCRIPT, None)
        job.catch_stop_signals()
        assert not requeued
        job.act_on_an_early_stop_signal()  # no training loop yet: requeued now
        assert requeued == [signal.SIGUSR2] and jobstart.EARLY_SIGNAL not in os.environ
        job.act_on_an_early_stop_signal()
        assert requeued == [signal.SIGUSR2]


def test_a_stop_signal_sets_the_flag_in_a_loop_and_requeues_at_once_outside_one(monkeypatch):
    import signal

    from common import train
    from slurm import jobs

    with submitits_requeue_stood_in_for() as requeued:
        jobs.Job(pretrain.SCRIPT, None).catch_stop_signals()
        monkeypatch.setattr(train, "in_loop", lambda: True)
        os.kill(os.getpid(), signal.SIGTERM)  # a preemption without USR2: no longer ignored
        assert train.stop_requested() and not requeued
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= jobs.STOP_GRACE_S  # the fallback, armed
        train.clear_stop()
        monkeypatch.setattr(train, "in_loop", lambda: False)
        os.kill(os.getpid(), signal.SIGUSR2)  # nothing to stop at a step boundary: requeued now, as before
        assert requeued == [signal.SIGUSR2] and not train.stop_requested()


@pytest.mark.parametrize("bad", ["\n", "\r", "\t", "\x00", "\x1b", "\x85"])
def test_a_control_character_in_any_resource_value_is_refused(bad, tmp_path):
    """A newline in a value would end its #SBATCH line and start another directive or a shell command: every value,
    from a flag, the environment or a resource file, is one line of plain text."""
    for field in dataclasses.fields(resources.Resources):
        value = f"x{bad}#SBATCH --qos=high"
        message = rf"'{field.name}' = .* holds a control character \({re.escape(repr(bad))}\); give it as one line"
        with pytest.raises(UserError, match="^command line: " + message):
            resources.resolve(None, env={}, **{field.name: value})
        with pytest.raises(UserError, match=f"^PRUNING_SLURM_{field.name.upper()}: " + message):
            resources.resolve(None, env={f"PRUNING_SLURM_{field.name.upper()}": value})
        f = tmp_path / "res.toml"
        f.write_text(f"[script.\"gmp.prune\"]\n{field.name} = {json.dumps(value)}\n")
        with pytest.raises(UserError, match=rf"^resource config {re.escape(str(f))} in \[script.\"gmp.prune\"\]: "
                                            + message):
            resources.resolve(f, env={})


def test_a_control_character_is_one_error_line_before_anything_is_submitted(tmp_path):
    proc = run_main("slurm.submit", "--account", "proj\necho pwned", "common.pretrain", *TINY,
                    "--runs-dir", tmp_path / "runs", env={"PRUNING_SLURM_LOGS": str(tmp_path / "logs")})
    assert proc.returncode == 2
    assert one_error_line(proc) == "error: command line: 'account' = 'proj\\necho pwned' holds a control character " \
                                   "('\\n'); give it as one line of plain text"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()
    proc = run_main("slurm.submit", "common.pretrain", *TINY, "--runs-dir", tmp_path / "runs",
                    env={"PRUNING_SLURM_LOGS": str(tmp_path / "logs\nx")})
    assert proc.returncode == 2 and "PRUNING_SLURM_LOGS" in one_error_line(proc)
    afile = tmp_path / "data.txt"
    afile.write_text("")
    proc = run_main("slurm.submit", "common.pretrain", *TINY, "--runs-dir", tmp_path / "runs", "--data-dir", afile)
    assert proc.returncode == 2 and f"--data-dir {afile} is a file, not a folder" in one_error_line(proc)
    assert not (tmp_path / "runs").exists()


def test_paths_with_shell_characters_reach_the_job_unexpanded(tmp_path, monkeypatch):
    """Log, code and run folders whose names hold spaces, $(...), backticks and ';': the job script submitit writes
    quotes them, so sbatch reads each directive's value whole and the shell runs no part of a name. The script is run
    here with a stand-in srun that records its arguments."""
    import shlex

    from slurm import submit

    odd = "a b $(touch PWNED1) `touch PWNED2`; touch PWNED3 'q' \"d\""
    work = tmp_path / "work"
    (work / "bin").mkdir(parents=True)
    (work / "bin" / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 42"\n')
    (work / "bin" / "srun").write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > {work}/srun.args\n')
    (work / "bin" / "sinfo").write_text("#!/bin/sh\n")
    for f in (work / "bin").iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}")
    logs, code = tmp_path / f"logs {odd}", tmp_path / f"code {odd}"
    monkeypatch.setenv("PRUNING_SLURM_LOGS", str(logs))
    monkeypatch.setattr(submit, "snapshot", lambda root: code)
    cfg = C.parse_args(pretrain.Config, [*TINY, "--runs-dir", str(tmp_path / f"runs {odd}")])
    batches, folder, _ = submit.submit_runs([(pretrain.SCRIPT, cfg)], resources.Choice(env={}), "odd")
    job = batches[0].jobs[0]
    text = job.paths.submission_file.read_text()
    directives = dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines()
                      if line.startswith("#SBATCH --") and "=" in line)
    assert shlex.split(directives["chdir"]) == [str(code)]
    assert shlex.split(directives["output"])[0].startswith(str(folder))
    proc = subprocess.run(["bash", str(job.paths.submission_file)], cwd=work, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = (work / "srun.args").read_text().split("\0")[:-1]
    assert args[-1] == str(folder) and args[args.index("--output") + 1].startswith(str(folder))
    assert not list(tmp_path.rglob("PWNED*"))  # no part of a name ran as a command
    assert (Run(pretrain.SCRIPT, submit.place(cfg)).dir / "slurm_job").read_text() == "42\n"


def test_dry_run_prints_the_sbatch_scripts_and_submits_nothing(tmp_path):
    env = {"PATH": str(tmp_path / "empty-bin"), "PRUNING_SLURM_LOGS": str(tmp_path / "logs")}  # no Slurm here at all
    proc = run_main("slurm.submit", "--dry-run", "--cpus", "2", "common.pretrain", *TINY, "--runs-dir",
                    tmp_path / "runs", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("#!/bin/bash") == 1 and "#SBATCH --cpus-per-task=2" in proc.stdout, proc.stdout
    srun = next(ln for ln in proc.stdout.splitlines() if ln.startswith("srun "))
    assert " --cpus-per-task 2 " in srun and "nothing submitted" in proc.stdout
    proc = run_main("figures", "fig-gmp-wd", "--profile", "tiny", "--cluster", "slurm", "--dry-run", "--runs-dir",
                    tmp_path / "runs", "--out", tmp_path / "out", env=env)
    assert proc.returncode == 0, proc.stderr
    # 3 dense models (one array), then each one's 6 runs as an array waiting for its task
    assert proc.stdout.count("#!/bin/bash") == 4 and "#SBATCH --array=0-2%3" in proc.stdout, proc.stdout
    assert {f"#SBATCH --dependency=afterok:JOB1_{i}" for i in range(3)} <= set(proc.stdout.splitlines())
    assert not any(p.exists() for p in (tmp_path / "runs", tmp_path / "logs", tmp_path / "out"))
    proc = run_main("figures", "fig-gmp-wd", "--profile", "tiny", "--dry-run", "--cluster", "local", env=env)
    assert proc.returncode == 2 and "use it with --cluster slurm" in one_error_line(proc)
    if shutil.which("make"):
        make = subprocess.run(["make", "-n", "fig-gmp-wd", "PROFILE=tiny", "CLUSTER=slurm", "DRY_RUN=1"],
                              cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)
        assert "-m figures fig-gmp-wd --profile tiny --cluster slurm" in make.stdout and "--dry-run" in make.stdout


# ---------------------------------------------------------------------------------------------------- the cluster
@pytest.fixture(scope="module")
def cluster():
    if local_cluster.usable():
        yield
        return
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip("no Slurm cluster answers sinfo; start one with `python3 slurm/local_cluster.py up --install`")
    folder = Path(os.environ.get("PRUNING_SLURM_DIR", "/var/tmp/pruning-slurm"))
    local_cluster.up(folder, do_install=False)
    yield
    local_cluster.down(folder)


@pytest.fixture
def logs(tmp_path, monkeypatch):
    folder = tmp_path / "slurm_logs"
    monkeypatch.setenv("PRUNING_SLURM_LOGS", str(folder))
    return folder


def job_id(proc) -> str:
    return re.search(r"submitted job (\d+)", proc.stdout).group(1)


def local_result(args, runs: Path):
    """The same run computed in this process, uninterrupted, one thread (as the job)."""
    return one_thread_pretrain(args, runs)


def same_model(a: Run, b: Run) -> bool:
    ma, mb = (torch.load(r.dir / "model.pt", weights_only=True) for r in (a, b))
    return ma.keys() == mb.keys() and all(torch.allclose(ma[k], mb[k], atol=1e-6) for k in ma)


def test_submitted_run_completes_and_equals_the_local_run(cluster, logs, tmp_path):
    proc = run_cli("slurm.submit", "--wait", "--time", "5", "common.pretrain", *TINY,
                   "--runs-dir", tmp_path / "slurm-runs", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"logs: {logs}" in proc.stdout
    remote = next((tmp_path / "slurm-runs" / "common.pretrain").iterdir())
    out = next(logs.glob(f"*/{job_id(proc)}_0_log.out")).read_text()
    assert f"code {logs / 'code'}" in out  # the job ran the snapshot, not the checkout
    result, local = local_result(TINY, tmp_path / "local-runs")
    assert remote.name == local.hash
    slurm_result = json.loads((remote / "result.json").read_text())
    assert slurm_result["test_acc"] == result["test_acc"]
    assert slurm_result["test_loss"] == pytest.approx(result["test_loss"], rel=1e-6)
    assert same_model(Run(pretrain.SCRIPT, local.cfg, tmp_path / "slurm-runs"), local)
    again = run_main("slurm.submit", "common.pretrain", *TINY, "--runs-dir", tmp_path / "slurm-runs")
    assert again.returncode == 0 and "already done, nothing submitted" in again.stdout


def test_a_two_cpu_jobs_task_runs_on_two_cpus_and_sizes_its_threads_by_them(cluster, logs, tmp_path):
    """srun is given the job's --cpus-per-task: where tasks are bound to CPUs (local_cluster.py: task/affinity), a
    task of a 2-CPU job runs on 2 CPUs, not one, and its torch threads and DataLoader workers follow them."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the node has one CPU")
    proc = run_cli("slurm.submit", "--wait", "--time", "5", "--cpus", "2", "common.pretrain", *TINY,
                   "--runs-dir", tmp_path / "runs", timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = next(logs.glob(f"*/{job_id(proc)}_0_log.out")).read_text()
    line = re.search(r"task 0: (cpus: .*)", out).group(1)
    listed = re.search(r"\(affinity ([\d,-]+);", line).group(1)
    cpus = sum(int(b) - int(a) + 1 for a, _, b in (span.partition("-") if "-" in span else (span, "", span)
                                                      for span in listed.split(",")))
    assert cpus == 2 and "SLURM_CPUS_PER_TASK 2): 2 torch threads, --workers auto = 1" in line, line


def test_unknown_partition_and_gpus_without_gpus_are_one_line_errors(cluster, logs, tmp_path):
    args = ["common.pretrain", *TINY, "--runs-dir", tmp_path / "runs"]
    proc = run_main("slurm.submit", "--partition", "no-such-partition", *args)
    line = one_error_line(proc)
    assert proc.returncode == 2 and "sbatch refused the job" in line and "partition" in line.lower()
    proc = run_main("slurm.submit", "--gpus", "1", *args)
    line = one_error_line(proc)
    assert proc.returncode == 2 and "which has no GPUs" in line and "gpus = 0" in line
    assert not list((tmp_path / "runs").rglob("result.json"))


def test_figure_runs_are_submitted_in_dependency_order_then_the_figure_is_drawn(cluster, logs, tmp_path, monkeypatch,
                                                                               capsys):
    from common.pretrain import dense_config
    from figures import pipeline
    from figures.gmp import fig_gmp_wd
    from figures.gmp import runs as gmp_runs
    from slurm import submit

    small = {"model": "mlp", "exclude": ("last",), "pretrain.epochs": 3, "epochs": 4, "stabilize_epochs": 1,
             "prune_epochs": 2, "finetune_lr.milestones": (1.0,)}
    monkeypatch.setitem(gmp_runs.SETUPS, "tiny", [small])
    monkeypatch.setattr(gmp_runs, "SEEDS", (0, 1))
    monkeypatch.setitem(fig_gmp_wd.SPARSITIES, "tiny", (0.9,))
    monkeypatch.setenv("PRUNING_SLURM_MAX_PARALLEL", "2")
    monkeypatch.setenv("PRUNING_SLURM_TIME", "10")
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    out = tmp_path / "out"
    assert pipeline.make("fig-gmp-wd", "tiny", "slurm", runtime, out_root=out) == []  # submitted, not drawn
    printed = capsys.readouterr().out
    # 4 runs, 2 dense models (one per seed) they need but that are missing: the dense models first, as one array,
    # then the runs of each dense model as an array that waits for its task
    dense = re.search(r"submitted 2 run\(s\) as Slurm job array (\d+) \(at most 2 at once[^;]*;[^;]*requeues\)\n",
                      printed).group(1)
    waiting = re.findall(r"submitted 2 run\(s\) as Slurm job array (\d+) .*pending until job\(s\) (\S+) succeeded",
                         printed)
    assert sorted(task for _, task in waiting) == [f"{dense}_0", f"{dense}_1"], printed
    assert f"logs: {logs}" in printed
    seen, deadline = set(), time.time() + 30
    while len(seen) < 4 and time.time() < deadline:  # each dependent pends, for the reason Dependency
        queue = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(a for a, _ in waiting), "-o", "%i %T %r"],
                               capture_output=True, text=True).stdout
        seen |= {ln.split()[0] for ln in queue.splitlines() if ln.split()[1:] == ["PENDING", "Dependency"]}
        time.sleep(0.5)
    assert len(seen) == 4, queue
    # a further run of a queued dense model waits for that model's job instead of submitting it again
    extra = [(s, C.replace(c, **runtime)) for s, c in gmp_runs.grid("tiny", sparsities=(0.5,), seeds=(0,))]
    batches, already = submit.plan(extra)
    dense_dir = str(Run("common.pretrain", submit.place(dense_config(extra[0][1]))).dir)
    assert list(already) == [dense_dir] and already[dense_dir] in (f"{dense}_0", f"{dense}_1")
    assert [(b.level, b.needs) for b in batches] == [(0, (dense_dir,))]
    rows = pipeline.planned_runs("fig-gmp-wd", "tiny", runtime)
    deadline = time.time() + 300
    while pipeline.missing_runs(rows) and time.time() < deadline:
        time.sleep(2)
    assert not pipeline.missing_runs(rows), printed
    for run in (tmp_path / "runs" / "common.pretrain").iterdir():  # each dense model computed once, by its job
        assert [r["epoch"] for r in read_log(run)] == [1, 2, 3]
    assert not any("waiting:" in p.read_text() for p in logs.glob("*/*_log.err"))  # no job waited for a lock
    paths = pipeline.make("fig-gmp-wd", "tiny", "slurm", runtime, out_root=out)  # everything done: drawn
    assert {p.suffix for p in paths} == {".png", ".pdf", ".csv"}
    assert "4 runs, 0 to compute" in capsys.readouterr().out


def test_job_that_finds_its_run_locked_by_another_live_process_fails_at_once(cluster, logs, tmp_path):
    cfg = C.parse_args(pretrain.Config, [*TINY, "--runs-dir", str(tmp_path / "runs")])
    run = Run(pretrain.SCRIPT, cfg)
    run.dir.mkdir(parents=True)
    holder = {"host": "other-node", "pid": 4242, "job": "999", "since": time.time(), "token": "feed"}
    (run.dir / "lock").write_text(json.dumps(holder) + "\n")  # heartbeat: now, so alive for 5 minutes
    t0 = time.time()
    proc = run_cli("slurm.submit", "--wait", "--time", "5", "common.pretrain", *TINY, "--runs-dir",
                   tmp_path / "runs", timeout=300)
    line = one_error_line(proc)
    assert proc.returncode == 2 and "RunLocked" in line and "host other-node pid 4242 (Slurm job 999)" in line, line
    assert time.time() - t0 < 120 and not run.done and not (run.dir / "log.jsonl").exists()
