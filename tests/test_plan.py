"""`python -m figures plan`: the runs a figure needs, their state in the store and their cost, computing nothing."""
import re

import pandas as pd
import pytest
import torch

from common.errors import UserError
from common.store import Run
from figures import cost, pipeline
from figures.bip import runs as bip_runs
from figures.gmp import fig_gmp_schedule as gmp_schedule
from common.store import JOB_FILE
from tests.conftest import one_error_line, run_main


def quiet(*_):
    pass


def test_the_paper_profile_fits_in_ten_thousand_gpu_hours(tmp_path):
    lines = []
    hours = cost.plan(list(pipeline.FIGURES), "paper", {"runs_dir": str(tmp_path)}, echo=lines.append)
    assert 0 < hours["total"] <= 10_000
    assert hours["total"] < sum(v for k, v in hours.items() if k != "total")  # shared runs are charged once
    # plan all also states the disk, the checkpoint writes and the critical path (the longest chain, GPU-days)
    disk, path, *chain = lines[-1].splitlines()
    kept, writes = re.search(r"disk: ([\d.]+) GB kept.*checkpoint writes ([\d.]+) TB", disk).groups()
    assert 50 < float(kept) < 400 and 1 < float(writes) < 20, disk  # epoch ends gated at 10 min: not ~60 TB
    days, runs = re.search(r"critical path: ([\d.]+) A100 GPU-days over (\d+) runs", path).groups()
    assert 1 < float(days) < hours["total"] / 24 and int(runs) == len(chain) >= 2
    # the chain starts at a dense model and each later run waits for the one before it
    assert chain[0].split()[0].startswith("common.pretrain/") and all(c.split()[0] == "->" for c in chain[1:])
    link_days = [float(d) for d in re.findall(r", ([\d.]+) GPU-days\)", "\n".join(chain))]
    assert sum(link_days) == pytest.approx(float(days), abs=0.05 * len(chain))


def test_the_plan_prints_its_critical_path_a_chain_of_three_not_a_wide_layer(tmp_path, monkeypatch):
    """A chain dense -> rewind -> IMP of 2 + 1 + 4 GPU-days beside ten 3-day runs that wait only for the dense
    model (30 GPU-days, but 5 along their path): the plan prints the chain, 7 GPU-days."""
    import dataclasses
    import sys
    import types

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        name: str
        epochs: float
        after: tuple = ()
        dataset: str = "digits"
        model: str = "mlp"
        runs_dir: str = dataclasses.field(default=str(tmp_path / "runs"), metadata={"hash": False})

    cfgs = {c.name: c for c in [Cfg("dense", 2), Cfg("rewind", 1, ("dense",)), Cfg("imp", 4, ("rewind",)),
                                *(Cfg(f"wide{k}", 3, ("dense",)) for k in range(10))]}
    script = types.ModuleType("plan_chain")
    script.dependencies = lambda cfg: [("plan_chain", cfgs[name]) for name in cfg.after]
    script.planned_epochs = lambda cfg, times: cfg.epochs * times.step("dense")
    monkeypatch.setitem(sys.modules, "plan_chain", script)
    monkeypatch.setattr(pipeline, "planned_runs", lambda name, profile, runtime: [
        ("plan_chain", c) for c in cfgs.values() if c.name != "dense"])  # the dense model comes as a dependency
    table = tmp_path / "times.toml"  # one epoch = one A100 GPU-day
    table.write_text('[epoch_hours]\n"digits/mlp" = 24.0\n[step_cost]\ndense = 1.0\n[train_samples]\n'
                     'digits = 1437\n[checkpoint_copies]\nplan_chain = 2\n[kept_copies]\nplan_chain = 1\n')
    lines = []
    hours = cost.plan(["fig-chain"], "paper", {}, times_path=table, echo=lines.append)
    assert hours["total"] == 24 * (2 + 1 + 4 + 10 * 3)
    text = "\n".join(lines)
    assert "critical path: 7.0 A100 GPU-days over 3 runs" in text, text
    run = {name: f"plan_chain/{Run('plan_chain', c).hash}" for name, c in cfgs.items()}
    assert (f"       {run['dense']} (digits / mlp, 2.0 GPU-days)\n"
            f"    -> {run['rewind']} (digits / mlp, 1.0 GPU-days)\n"
            f"    -> {run['imp']} (digits / mlp, 4.0 GPU-days)") in text, text
    assert not any(run[f"wide{k}"] in text for k in range(10))
    # once the dense model and its rewinding point are done, the chain left is the IMP run alone
    for name in ("dense", "rewind"):
        Run("plan_chain", cfgs[name]).dir.mkdir(parents=True)
        (Run("plan_chain", cfgs[name]).dir / "result.json").write_text("{}")
    lines.clear()
    cost.plan(["fig-chain"], "paper", {}, times_path=table, echo=lines.append)
    assert "critical path: 4.0 A100 GPU-days over 1 run," in "\n".join(lines)


def test_the_critical_path_is_the_longest_chain_and_orders_the_pool(tmp_path):
    from figures import launch

    costs = {"dense": 2.0, "a": 1.0, "b": 5.0, "c": 1.0, "alone": 3.0}  # dense -> a -> c, dense -> b
    needs = {"dense": set(), "a": {"dense"}, "b": {"dense"}, "c": {"a"}, "alone": set()}
    assert cost.critical_paths(costs, needs) == {"dense": 7.0, "a": 2.0, "b": 5.0, "c": 1.0, "alone": 3.0}
    assert cost.critical_chain(costs, needs) == ["dense", "b"] and cost.critical_chain({}, {}) == []
    rows = pipeline.planned_runs("fig-gmp-wd", "tiny", {"runs_dir": str(tmp_path)})
    work = cost.items(rows, cost.load_times())
    prio = {key: p for key, *_, p in launch.schedule(rows)}
    assert cost.critical_path(work) == pytest.approx(max(prio.values()))


def test_checkpoint_writes_follow_the_time_gates():
    gated = type("Cfg", (), {"checkpoint_epoch_minutes": 10.0, "checkpoint_every_minutes": 30.0})
    every = type("Cfg", (), {"checkpoint_epoch_minutes": 0.0, "checkpoint_every_minutes": 30.0})
    cifar = (200 * 0.004, 200)  # 200 epochs of ~15 s
    assert cost.checkpoint_writes(*cifar, every) == 200
    assert cost.checkpoint_writes(*cifar, gated) == 4  # every 42nd epoch's end
    imagenet = (90 * 0.5, 90)  # 90 epochs of 30 min: each end, and once within each
    assert cost.checkpoint_writes(*imagenet, gated) == 90
    assert cost.checkpoint_writes(90 * 0.75, 90, gated) == 180


def test_states_come_from_the_run_directories(tmp_path):
    runtime = {"runs_dir": str(tmp_path)}
    rows = pipeline.planned_runs("fig-gmp-wd", "tiny", runtime)
    work = cost.items(rows, cost.load_times())
    assert all(i.state == "missing" for i in work)
    done, job, locked, started = (Run(s, c) for s, c in cost.with_dependencies(rows)[:4])
    for run, name, text in ((done, "result.json", "{}"), (job, JOB_FILE, "123_4\n"), (locked, "lock", ""),
                            (started, "checkpoint.pt", "")):
        run.dir.mkdir(parents=True)
        (run.dir / name).write_text(text)
    states = {i.hash: (i.state, i.why) for i in cost.items(rows, cost.load_times())}
    assert states[done.hash] == ("done", "") and states[job.hash] == ("queued", "job 123_4")
    assert states[locked.hash] == ("queued", "lock") and states[started.hash] == ("queued", "checkpoint")
    assert sum(s == "missing" for s, _ in states.values()) == len(states) - 4


def test_dense_models_and_imp_rounds_are_counted_as_the_store_computes_them(tmp_path):
    rows = pipeline.planned_runs("fig-bip-trajectory", "paper", {"runs_dir": str(tmp_path)})
    work = cost.items(rows, cost.load_times())
    assert len({(i.script, i.hash) for i in work}) == len(work)
    imagenet = [i for i in work if i.setup == "imagenet / resnet50"]
    assert [i.script for i in imagenet].count("common.pretrain") == 1  # one dense model for BiP and IMP, one seed
    imp = next(i for i in imagenet if i.script == "bip.magnitude")
    assert imp.epochs == 11 * 60  # the chain to the highest plotted point: 11 rounds of 60 epochs
    bip = [i for i in imagenet if i.script == "bip.prune"]
    assert len(bip) == len(bip_runs.SETUP_GRID_N["resnet50 / imagenet"]) and bip[0].epochs == 60 * 2


def test_the_gmp_schedule_is_drawn_from_its_config_alone_at_the_paper_profile(tmp_path):
    assert gmp_schedule.runs("paper") == []
    cfg = gmp_schedule.schedule_config("paper")
    assert cfg.scope == "layer" and cfg.target_sparsity == 0.88  # SparseML's per-layer recipe
    paths = gmp_schedule.draw(pd.DataFrame(), "paper", tmp_path / "sched")
    table = pd.read_csv(next(p for p in paths if p.suffix == ".csv"))
    assert table["target_sparsity"].is_monotonic_increasing and table["target_sparsity"].iloc[-1] == pytest.approx(0.88)
    assert table["step"].iloc[-1] == 40 * gmp_schedule.steps_per_epoch(cfg)  # the pruning stage's last update


def test_curves_are_the_tables_own_runs_on_a_fixed_training_subset(tmp_path):
    from seqattn.prune import CURVE_SAMPLES, CurveSubset

    runtime = {"runs_dir": str(tmp_path)}
    table = {Run(s, c).hash for s, c in pipeline.planned_runs("tab-seqattn-blocks", "paper", runtime)}
    curves = pipeline.planned_runs("fig-seqattn-curves", "paper", runtime)
    assert {Run(s, c).hash for s, c in curves} <= table and all(c.curve_every > 0 for _, c in curves)

    class Split:
        num_samples, batch_size = 25_000, 4096

        def take(self, idx):
            return idx, idx

    subset = CurveSubset(Split(), CURVE_SAMPLES, 0)
    again = CurveSubset(Split(), CURVE_SAMPLES, 0)
    batches = list(subset.epoch(0))
    assert subset.num_samples == CURVE_SAMPLES == sum(len(x) for x, _ in batches)
    assert torch.equal(subset.indices, again.indices) and len(set(subset.indices.tolist())) == CURVE_SAMPLES
    assert CurveSubset(type("Small", (Split,), {"num_samples": 300})(), CURVE_SAMPLES, 0).num_samples == 300


def test_plan_prints_each_figure_and_the_total(tmp_path):
    proc = run_main("figures", "plan", "fig-gmp-wd", "fig-gmp-vs-oneshot", "--profile", "tiny", "--runs-dir", tmp_path,
                    "--runs")
    assert proc.returncode == 0, proc.stderr
    assert "fig-gmp-wd [tiny]:" in proc.stdout and "A100-h" in proc.stdout and "missing" in proc.stdout
    assert "kept once done" in proc.stdout and "checkpoint writes" in proc.stdout and "critical path" in proc.stdout
    assert "all 2 figures [tiny]" in proc.stdout and not (tmp_path / "gmp.prune").exists()  # nothing computed


@pytest.mark.parametrize("args, message", [
    (("plan", "fig-nope"), "unknown figure 'fig-nope'"),
    (("plan", "fig-gmp-wd", "--profile", "huge"), "unknown profile 'huge'"),
    (("plan",), "plan needs the figures to plan"),
])
def test_bad_plans_are_one_line_errors(tmp_path, args, message):
    proc = run_main("figures", *args, "--runs-dir", tmp_path)
    assert proc.returncode == 2 and message in one_error_line(proc)


def test_a_table_without_an_entry_is_a_user_error(tmp_path):
    table = tmp_path / "times.toml"
    text = '[epoch_hours]\n"digits/cnn" = 0.1\n[step_cost]\ndense = 1.0\n[train_samples]\ndigits = 1437\n'
    table.write_text(text)
    rows = pipeline.planned_runs("fig-gmp-wd", "tiny", {"runs_dir": str(tmp_path)})
    with pytest.raises(UserError, match="no \\[kept_copies\\] entry for 'common.pretrain'"):
        cost.items(rows, cost.load_times(table))
    table.write_text(text + '[checkpoint_copies]\n"common.pretrain" = 2\n[kept_copies]\n"common.pretrain" = 1\n')
    with pytest.raises(UserError, match="no step cost for 'gmp'"):
        cost.items(rows, cost.load_times(table))
    table.write_text("[epoch_hours\n")
    with pytest.raises(UserError, match="not valid TOML"):
        cost.load_times(table)


def test_published_dense_weights_variant_drops_the_dense_runs_and_says_what_it_saves(tmp_path):
    """The opt-in plan variant: runs that prune an ImageNet ResNet-50 start from torchvision's published weights
    (their dense runs leave the plan); runs that rewind keep their dense training; the default plan is unchanged."""
    from common import config as C
    from figures.cost import PUBLISHED, plan, with_published_dense
    from gmp import prune as gmp

    cfg = C.build(gmp.Config, dataset="imagenet", model="resnet50")
    (script, published), = with_published_dense([("gmp.prune", cfg)])
    assert published.dense_weights == PUBLISHED[("imagenet", "resnet50")]
    assert not [d for d, _ in gmp.dependencies(published) if d == "common.pretrain"]
    assert [d for d, _ in gmp.dependencies(cfg) if d == "common.pretrain"]
    digits = C.build(gmp.Config)
    assert with_published_dense([("gmp.prune", digits)])[0][1] is digits  # no published weights for this setup

    said = []
    runtime = {"runs_dir": str(tmp_path / "runs")}
    faithful = plan(["fig-gmp-wd"], "paper", runtime, echo=lambda *a: None)
    variant = plan(["fig-gmp-wd"], "paper", runtime, echo=said.append, published=True)
    assert variant["total"] < faithful["total"]
    assert f"instead of {faithful['total']:.1f}" in said[-1] and "saved" in said[-1]
