"""A run's dependencies are data: the store executes what a script's ``dependencies(cfg)`` declares before its
``compute``, which reads them through ``run.dependency(script, cfg)`` and can reach nothing else -- so the declared
list (what Slurm submissions queue ahead of a run) is what a run uses."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from common import config as C
from common import store
from common.cli import Runtime
from common.store import Run, UndeclaredDependency, execute
from tests.conftest import ROOT, single_thread

METHOD_FOLDERS = ("bip", "gmp", "seqattn", "posttrain")


@dataclass
class Cfg(Runtime):
    x: int = C.opt(0, "a value")


class Base:
    SCRIPT = "fake.base"

    @staticmethod
    def compute(cfg, run):
        return {"value": cfg.x}


class Declares:
    SCRIPT = "fake.declares"

    @staticmethod
    def dependencies(cfg):
        return [(Base, C.replace(cfg, x=cfg.x + 1))]

    @staticmethod
    def compute(cfg, run):
        return {"value": run.dependency(Base.SCRIPT, C.replace(cfg, x=cfg.x + 1)).result()["value"]}


class ReadsUndeclared(Declares):
    SCRIPT = "fake.reads_undeclared"

    @staticmethod
    def compute(cfg, run):
        return {"value": run.dependency(Base.SCRIPT, C.replace(cfg, x=cfg.x + 2)).result()["value"]}


class ExecutesItself:
    SCRIPT = "fake.executes_itself"

    @staticmethod
    def compute(cfg, run):
        return execute(Base, cfg)


def test_declared_dependencies_are_executed_first_and_handed_to_compute(tmp_path):
    cfg = Cfg(x=1, runs_dir=str(tmp_path))
    assert execute(Declares, cfg)["value"] == 2
    assert Run(Base.SCRIPT, C.replace(cfg, x=2)).done


@pytest.mark.parametrize("script,needs", [(ReadsUndeclared, "fake.base"), (ExecutesItself, "fake.base")])
def test_compute_cannot_reach_an_undeclared_dependency(script, needs, tmp_path):
    cfg = Cfg(x=1, runs_dir=str(tmp_path))
    with pytest.raises(UndeclaredDependency, match=rf"{script.SCRIPT}'s compute (reads|executes) {needs}"):
        execute(script, cfg)
    assert not Run(script.SCRIPT, cfg).done
    assert not Run(Base.SCRIPT, C.replace(cfg, x=3)).done and not Run(Base.SCRIPT, cfg).done  # never computed


def test_a_real_script_reads_only_what_it_declares(tmp_path, monkeypatch):
    """gmp.prune with its declaration taken away: its compute is refused when it reads the dense run, before any
    training, and no dense run is computed."""
    from gmp import prune

    monkeypatch.setattr(prune, "dependencies", lambda cfg: [])
    cfg = C.parse_args(prune.Config, ["--model", "mlp", "--pretrain.epochs", "1", "--epochs", "1",
                                      "--stabilize-epochs", "0", "--prune-epochs", "1", "--device", "cpu",
                                      "--progress", "off", "--runs-dir", str(tmp_path)])
    with single_thread(), pytest.raises(UndeclaredDependency, match=r"gmp.prune's compute reads common.pretrain "
                                                                    r"[0-9a-f]{16}, which its dependencies\(cfg\)"):
        execute(prune, cfg)
    assert not (tmp_path / "common.pretrain").exists()


CLOCK = [0.0]


class Slow(Base):
    SCRIPT = "fake.slow"

    @staticmethod
    def compute(cfg, run):
        CLOCK[0] += 100.0
        return {"value": cfg.x}


class NeedsSlow:
    SCRIPT = "fake.needs_slow"

    @staticmethod
    def dependencies(cfg):
        return [(Slow, C.replace(cfg, x=0))]

    @staticmethod
    def compute(cfg, run):
        CLOCK[0] += 7.0
        return {"value": cfg.x}


def test_a_dependency_computed_by_this_call_is_in_wall_time_not_run_time(tmp_path, monkeypatch):
    monkeypatch.setattr(store.time, "time", lambda: CLOCK[0])
    first = execute(NeedsSlow, Cfg(x=1, runs_dir=str(tmp_path)))
    assert (first["wall_time"], first["run_time"]) == (107.0, 7.0)
    assert execute(Slow, Cfg(x=0, runs_dir=str(tmp_path)))["run_time"] == 100.0  # read: its own time
    second = execute(NeedsSlow, Cfg(x=2, runs_dir=str(tmp_path)))  # its dependency is done: read, no time
    assert (second["wall_time"], second["run_time"]) == (7.0, 7.0)


def test_no_method_file_executes_a_run_itself():
    """The method folders' code reads its dependencies (``run.dependency``, ``load_dense``, ``load_rewind``); only
    the store, the command line, the figures' pipeline and Slurm jobs call ``execute``."""
    calls = re.compile(r"\bexecute\s*\(|import[^\n]*\bexecute\b(?!_)")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for folder in METHOD_FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if calls.search(line)]
    assert not found, found
    assert calls.search("    pruned = execute(prune, pcfg)") and calls.search("from common.store import Run, execute")
    assert not calls.search("from common.store import Run, execute_dependencies")
