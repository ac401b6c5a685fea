"""The figures pipeline end to end, on shrunken profile tables (same code path as `make fig-...`)."""
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from figures import FIGURES, pipeline
from figures.__main__ import main as figures_main
from figures.gmp import fig_gmp_wd as gmp_wd
from figures.gmp import runs as gmp_runs
from tests.conftest import ROOT, one_error_line, run_cli

SMALL = {"model": "mlp", "exclude": ("last",), "pretrain.epochs": 3, "epochs": 4, "stabilize_epochs": 1,
         "prune_epochs": 2, "finetune_lr.milestones": (1.0,)}


@pytest.fixture
def small_profile(monkeypatch):
    monkeypatch.setitem(gmp_runs.SETUPS, "tiny", [SMALL])
    monkeypatch.setattr(gmp_runs, "SEEDS", (0, 1))
    monkeypatch.setitem(gmp_runs.SPARSITIES, "tiny", (0.5, 0.9))
    monkeypatch.setitem(gmp_wd.SPARSITIES, "tiny", (0.9,))


def check_long(folder, name: str, rows: int | None = None) -> pd.DataFrame:
    """The long CSV of target ``name`` in ``folder``: a ``seed`` column, one row per (run, reported point) -- the arm
    columns its module states with the seed tell every row apart (``rows``: how many there must be) -- and, where the
    target writes a summary of mean columns, each mean equal to the long table's mean over the seeds of its arm."""
    module = pipeline.figure_module(name)
    long = pd.read_csv(folder / f"{name}.csv")
    arms = list(module.ARMS)
    assert list(long.columns[:len(arms) + 1]) == [*arms, "seed"], name
    assert not long.duplicated([*arms, "seed"]).any(), name
    if "run" in long:
        assert not long.duplicated(["run", *arms]).any(), name
    if rows is not None:
        assert len(long) == rows, name
    path = folder / f"{name}-summary.csv"
    means = [v for v in module.VALUES if path.exists() and f"{v}_mean" in pd.read_csv(path, nrows=0).columns]
    if means:
        summary = pd.read_csv(path)
        grouped = long.groupby(arms, dropna=False)[means].mean().reset_index()
        both = summary.merge(grouped, on=arms, how="outer", indicator=True)
        assert (both["_merge"] == "both").all(), name
        for v in means:
            assert np.allclose(both[f"{v}_mean"], both[v], rtol=1e-4, equal_nan=True), (name, v)
        if "seeds" in summary:
            assert summary["seeds"].sum() == len(long), name
    return long


def test_plot_helpers_long_summary_interval_and_axis(tmp_path):
    from figures import plot

    long = pd.DataFrame({"method": ["a", "a", "b", "b", "a", "b"], "sparsity": [0.5] * 4 + [0.9] * 2,
                         "seed": [0, 1, 0, 1, 0, 0], "acc": [90.0, 92.0, 85.0, 88.0, 70.0, 60.0]})
    paths = plot.save_long(long, tmp_path / "tiny" / "x", ["method", "sparsity"], ["acc"])
    assert [p.name for p in paths] == ["x.csv", "x-summary.csv"]
    summary = pd.read_csv(paths[1])
    assert list(summary["acc_mean"]) == [91.0, 70.0, 86.5, 60.0] and list(summary["seeds"]) == [2, 1, 2, 1]
    d = plot.paired(long, "method", "a", "b", "acc", ["sparsity"])
    assert list(d["diff"]) == [5.0, 4.0, 10.0] and list(d["seed"]) == [0, 1, 0]
    mean, lo, hi = plot.t_interval([5.0, 4.0])
    assert mean == 4.5 and hi - mean == pytest.approx(12.7062 * 0.5, rel=1e-4)  # sd 0.707 / sqrt(2)
    assert np.isnan(plot.t_interval([3.0])[1])
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    grid = [100 * (1 - 0.8 ** n) for n in range(1, 8)]
    plot.sparsity_axis(ax, grid)
    pos = ax.transData.transform([[x, 0] for x in grid])[:, 0]
    assert np.allclose(np.diff(pos), np.diff(pos)[0])  # the 0.8^n grid is evenly spaced
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "79"
    plt.close(fig)


def test_tiny_outputs_say_they_are_a_smoke_test(tmp_path):
    from figures import plot

    import matplotlib.pyplot as plt

    for profile in ("tiny", "smoke", "small", "paper"):
        fig, _ = plt.subplots()
        plot.save_figure(fig, tmp_path / profile / "f")
        smoke = profile in ("tiny", "smoke")
        assert any(plot.SMOKE in t.get_text() for t in fig.texts) == smoke
        plot.save_table(pd.DataFrame({"a": [1]}), tmp_path / profile / "t", "caption")
        for suffix in (".md", ".tex"):
            assert (plot.SMOKE in (tmp_path / profile / f"t{suffix}").read_text()) == smoke


def test_gmp_figures_are_drawn_from_the_run_store(small_profile, tmp_path, capsys):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    out = tmp_path / "out"
    for name in ("fig-gmp-vs-oneshot", "fig-gmp-wd", "fig-gmp-schedule"):
        paths = pipeline.make(name, "tiny", runtime=runtime, out_root=out)
        assert {p.suffix for p in paths} == {".png", ".pdf", ".csv"}
        assert all(p.stat().st_size > 0 for p in paths)
    vs = check_long(out / "tiny", "fig-gmp-vs-oneshot", rows=2 * 2 * 2)  # method x sparsity x seed
    assert set(vs["method"]) == {"gmp", "oneshot"} and set(vs["sparsity"]) == {0.5, 0.9}
    assert set(vs["seed"]) == {0, 1} and vs["acc"].between(50, 100).all() and (vs["dense_acc"] > 80).all()
    summary = pd.read_csv(out / "tiny" / "fig-gmp-vs-oneshot-summary.csv")
    assert (summary["seeds"] == 2).all() and (summary["acc_min"] <= summary["acc_mean"]).all()
    wd = check_long(out / "tiny", "fig-gmp-wd", rows=2 * 2)  # weight decay x seed
    assert list(wd["sparsity"].unique()) == [0.9] and wd["finetune_wd"].nunique() == 2 and 0.0 in set(wd["finetune_wd"])
    sched = check_long(out / "tiny", "fig-gmp-schedule")
    assert sched["target_sparsity"].is_monotonic_increasing and sched["target_sparsity"].iloc[-1] == pytest.approx(0.9)
    capsys.readouterr()
    pipeline.make("fig-gmp-wd", "tiny", runtime=runtime, out_root=out)  # everything cached now
    assert "4 runs, 0 to compute" in capsys.readouterr().out

    # `python -m figures ... --out DIR` (make's OUT=DIR) draws there, leaving figures/out as it was
    committed = {p: p.read_bytes() for p in (ROOT / "figures" / "out").rglob("*") if p.is_file()}
    elsewhere = tmp_path / "elsewhere"
    assert figures_main(["fig-gmp-wd", "--profile", "tiny", "--cluster", "none", "--runs-dir", runtime["runs_dir"],
                         "--progress", "off", "--out", str(elsewhere)]) == 0
    assert sorted(p.name for p in (elsewhere / "tiny").iterdir()) == ["fig-gmp-wd-summary.csv", "fig-gmp-wd.csv",
                                                                      "fig-gmp-wd.pdf", "fig-gmp-wd.png"]
    assert (elsewhere / "tiny" / "fig-gmp-wd.csv").read_bytes() == (out / "tiny" / "fig-gmp-wd.csv").read_bytes()
    assert {p: p.read_bytes() for p in (ROOT / "figures" / "out").rglob("*") if p.is_file()} == committed


def test_make_passes_out_and_defaults_to_figures_out():
    assert pipeline.OUT == ROOT / "figures" / "out"
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    # a make of its own, not a sub-make of the `make test` that may be running this test
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PROFILE", "CLUSTER", "RUNS", "DATA", "DEVICE", "OUT")}
    for args, out in (((), "figures/out"), (("OUT=/somewhere/else",), "/somewhere/else")):
        proc = subprocess.run([make, "--no-print-directory", "-n", "fig-gmp-wd", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        commands = [line for line in proc.stdout.splitlines() if " -m figures fig-gmp-wd " in line]
        assert len(commands) == 1, proc.stdout
        assert commands[0].endswith(f" -m figures fig-gmp-wd --profile small --cluster auto "
                                    f"--runs-dir runs --data-dir data --device auto --out {out}")


def test_each_figure_is_found_in_its_papers_package():
    papers = ("bip", "seqattn", "gmp", "posttrain", "compare", "claims", "speed")  # claims: the scoreboard, tab-claims
    assert len(FIGURES) == 23 and not [*(ROOT / "figures").glob("fig_*.py"), *(ROOT / "figures").glob("tab_*.py")]
    for name, module in FIGURES.items():
        paper = "speed" if name == "fig-sparse-speed" else name.split("-")[1]  # speed/: sparse execution's speed
        assert paper in papers and module == f"figures.{paper}.{name.replace('-', '_')}"
        assert pipeline.figure_module(name).__name__ == module


def test_unknown_figure_and_profile_are_one_line_errors(tmp_path):
    proc = run_cli("figures", "fig-nope", "--runs-dir", tmp_path)
    assert proc.returncode == 2 and "unknown figure 'fig-nope'" in one_error_line(proc)
    proc = run_cli("figures", "fig-gmp-wd", "--profile", "huge", "--runs-dir", tmp_path)
    assert proc.returncode == 2 and "unknown profile 'huge'" in one_error_line(proc)


def test_local_pool_computes_missing_runs(small_profile, tmp_path):
    runtime = {"runs_dir": str(tmp_path / "runs"), "progress": "off"}
    rows = pipeline.planned_runs("fig-gmp-wd", "tiny", runtime)
    from figures.launch import launch

    assert launch(rows, "local") == []
    assert pipeline.missing_runs(rows) == []


def test_small_profile_is_fashion_mnist_with_three_seeds_and_grids_that_reach_where_methods_part():
    """Every small figure runs 3 seeds or more, but the points and the two figures whose contrasts the tables cut to 2
    seeds (not testable at this scale: the IG term, LeNet-5's filters) and those of one run or one seed."""
    from figures.bip import runs as bip_runs

    one_run = ("fig-gmp-schedule", "fig-seqattn-schedule", "fig-seqattn-curves",  # a point
               "fig-compare", "fig-compare-structured")  # one seed: the other figures' runs at seed 0 and its own
    two = {"fig-bip-ig": bip_runs.IG_SEEDS["small"], "fig-bip-structured": bip_runs.STRUCTURED_SEEDS["small"]}
    for name in FIGURES:
        rows = pipeline.planned_runs(name, "small", {})
        assert {cfg.dataset for _, cfg in rows} <= {"fashionmnist"}, name
        assert {cfg.model for _, cfg in rows} <= {"mlp", "lenet5"}, name
        draws = {getattr(cfg, "sample_seed", None) if s == "posttrain.prune" else cfg.seed for s, cfg in rows}
        if name in two:
            assert draws == set(two[name]) and len(draws) == 2, name
        elif rows and name not in one_run:
            assert {0, 1, 2} <= draws, name
    assert max(bip_runs.sparsities("small")) >= 0.988 and max(gmp_runs.SPARSITIES["small"]) >= 0.99


def test_the_profile_tables_extra_arms_are_planned_where_the_tables_have_them():
    """The small profile's extra arms (one-shot attention at other temperatures, the rewinding point retrained for the
    dense length, BiP's longer arm, the repeated timings) are planned there, and only where a table has them."""
    from figures.bip import runs as bip_runs
    from figures.posttrain import runs as post_runs
    from figures.seqattn import runs as seqattn_runs

    for profile in ("tiny", "small", "paper"):
        oneshot = pipeline.planned_runs("fig-seqattn-oneshot", profile, {})
        temps, blocks, seeds = seqattn_runs.ONESHOT_TEMPERATURES.get(profile, ((), (), ()))
        tempered = {(c.temperature, c.block, c.seed) for _, c in oneshot if c.score == "attention"
                    and c.temperature != 1.0}
        assert tempered == {(t, b, s) for t in temps for b in blocks for s in seeds}, profile
        rewind = [c for s, c in pipeline.planned_runs("fig-bip-rewind", profile, {}) if s == "bip.retrain"]
        full = [c for c in rewind if c.retrain_epochs != c.epochs]
        assert all(c.retrain_epochs == c.pretrain.epochs for c in full), profile
        assert bool(full) == (profile in bip_runs.REWIND_FULL), profile
        trajectory = pipeline.planned_runs("fig-bip-trajectory", profile, {})
        epochs = {}  # per setup, the epochs of its BiP runs: two where BiP has its longer arm
        for s, c in trajectory:
            if s == "bip.prune" and c.method == "bip":
                epochs.setdefault((c.model, c.dataset), set()).add(c.epochs)
        assert any(len(e) > 1 for e in epochs.values()) == (profile in bip_runs.LONG), profile
        timed = pipeline.planned_runs("fig-posttrain-time", profile, {})
        draws = post_runs.TIME_DRAWS.get(profile, (0,))
        assert len(timed) == 2 * len(post_runs.TIME_RATIOS[profile]) * len(draws), profile
        assert {c.sample_seed for _, c in timed} == set(draws), profile


def test_small_profile_end_to_end_on_idx_files(monkeypatch, tmp_path):
    """The small profile's code path (Fashion-MNIST files found in --data-dir, LeNet-300-100) with reduced epochs."""
    from common import data as D
    from tests.test_fashionmnist import write_fashion

    monkeypatch.setattr(D, "FASHION_DEBIAN", tmp_path / "no-debian")
    write_fashion(tmp_path / "data" / "FashionMNIST" / "raw", n_train=200, n_test=100)
    setup = dict(gmp_runs.SETUPS["small"][0], **{"pretrain.epochs": 1, "epochs": 3, "stabilize_epochs": 1,
                                                 "prune_epochs": 1, "finetune_lr.milestones": (1.0,),
                                                 "update_every": 1, "update_unit": "steps"})  # 2 steps an epoch
    monkeypatch.setitem(gmp_runs.SETUPS, "small", [setup])
    monkeypatch.setattr(gmp_runs, "SEEDS", (0,))
    monkeypatch.setitem(gmp_runs.SPARSITIES, "small", (0.9,))
    runtime = {"runs_dir": str(tmp_path / "runs"), "data_dir": str(tmp_path / "data"), "progress": "off"}
    paths = pipeline.make("fig-gmp-vs-oneshot", "small", runtime=runtime, out_root=tmp_path / "out")
    assert (tmp_path / "out" / "small" / "fig-gmp-vs-oneshot.png") in paths
    vs = check_long(tmp_path / "out" / "small", "fig-gmp-vs-oneshot", rows=2)
    assert set(vs["method"]) == {"gmp", "oneshot"} and set(vs["setup"]) == {"mlp / fashionmnist"}


def test_sparse_speed_is_one_row_per_measurement(monkeypatch, tmp_path, one_thread):
    from figures.speed import fig_sparse_speed as S

    for name, value in (("MODELS", ("mlp",)), ("SPARSITIES", (0.8, 0.95)), ("FORMATS", (("csr", 0),)),
                        ("EXPORTED", ()), ("BATCHES", (1,)), ("THREADS", (1,)), ("ROUNDS", 1), ("REPEATS", 2)):
        monkeypatch.setattr(S, name, value)
    paths = pipeline.make("fig-sparse-speed", "tiny", runtime={"runs_dir": str(tmp_path / "runs")},
                          out_root=tmp_path / "out")
    assert {p.name for p in paths} >= {"fig-sparse-speed.csv", "fig-sparse-speed.png", "fig-sparse-speed-payoff.md"}
    data = check_long(tmp_path / "out" / "tiny", "fig-sparse-speed", rows=2)
    assert set(data["seed"]) == {0} and (data["speedup"] > 0).all()
