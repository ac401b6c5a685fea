"""The local worker pool: runs start once what they need is done, the longest critical path first, and a failed run's
dependents are reported, not started."""
from common import config as C
from common.store import Run
from figures.bip import runs as R
from figures.launch import run_pool, schedule

SETUP = (None, {"model": "mlp", "pretrain.epochs": 1}, 1)


def rows(tmp_path, **runtime):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off", **runtime}
    bip = [("bip.prune", C.replace(R.prune_config(SETUP, "bip", target_sparsity=s, seed=0), **runtime))
           for s in (0.5, 0.9)]
    imp = [("bip.magnitude", C.replace(R.magnitude_config(SETUP, "imp", target_sparsity=0.9, seed=0), **runtime))]
    return bip + imp


def test_schedule_orders_dependencies_first_and_ranks_by_critical_path(tmp_path):
    plan = schedule(rows(tmp_path))
    position = {key: i for i, (key, *_) in enumerate(plan)}
    priority = {key: p for key, *_, p in plan}
    dense = [key for key, script, *_ in plan if script == "common.pretrain"]
    assert len(plan) == 4 and len(dense) == 1  # the three runs share one dense model, planned once
    for key, script, cfg, needs, p in plan:
        assert all(position[n] < position[key] for n in needs)
        assert all(priority[n] > p for n in needs)  # what others wait on goes first
        assert needs == (set(dense) if script != "common.pretrain" else set())
    imp = next(key for key, script, *_ in plan if script == "bip.magnitude")
    assert priority[imp] == max(p for key, *_, p in plan if key not in dense)  # IMP's rounds: the longest run


def test_a_failed_run_leaves_its_dependents_unstarted_and_named(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    todo = rows(tmp_path, data_dir=str(not_a_folder))
    failures = run_pool(todo)
    dense = next(k for k in failures if k[0] == "common.pretrain")
    assert "is a file" in failures[dense] or "not a folder" in failures[dense], failures[dense]
    started = {k for k, v in failures.items() if "not started" not in v}
    assert started == {dense}
    assert {k for k in failures if k != dense} == {(s, Run(s, c).hash) for s, c in todo}
    for key in failures.keys() - {dense}:
        assert failures[key] == f"{key[0]} {key[1]}: not started, a run it needs failed"
