"""BiP paper, Fig. 8: time to reach each sparsity, per method, log scale, in GPU-seconds.

BiP / Hydra / OMP: each run's own time (``method_time``: after the shared dense model exists); IMP: the cumulative
time of its rounds up to that sparsity; the dense training's time as a dashed line; below, BiP minus IMP per seed
with the mean's 95% t-interval. Every time is charged as GPU-seconds, wall time x the GPUs the run computed on
(``devices``: from its result.json's ``provenance.hardware``; a CPU run: x its processes, one unless it ran DDP), so
that a run on 8 GPUs is compared like for like with one on 1 GPU (ImageNet: IMP's dense model and rounds on a node,
BiP on one GPU). The CSV holds every run's time (long, one row per run and point, with its seed; the dense trainings
as method "dense"): ``gpu_seconds``, its ``wall_time``, ``gpus`` (0 on the CPU) and ``ranks`` (its processes);
``fig-bip-time-summary.csv`` their mean and spread per method and sparsity, and ``fig-bip-time-bounds.csv`` the
speed bounds, in GPU-seconds: BiP's max/min time over the grid (of the seed means, and of the fastest seed at each
sparsity, the estimate least disturbed by other load on the machine), and IMP/BiP at each BiP grid point (IMP: its
first round at or above that sparsity) plus the row "to 89%", of the seed means and of the fastest seeds. BiP's
longer arm (``R.LONG``, method "bip-long"), where the profile table has it, is drawn with its own colour and label.
The paper's minutes (profile paper) are drawn as the seconds of one GPU.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import pandas as pd

from common.store import read_result
from figures.bip import runs as R
from figures.bip.fig_bip_trajectory import METHODS, _epochs, differences, long
from figures.plot import PAIRED_NOTE, band, mean_spread, paired_panel, save_csv, save_figure, save_long, sparsity_axis

PAPER = "BiP (Zhang et al. 2022) Fig. 8: time to reach each sparsity, BiP vs IMP/OMP/Hydra"
TIMED = True  # its runs' wall times are its subject: `python -m figures all` makes it first
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "bip_fig8_time.csv"
ARMS, VALUES = ("setup", "method", "sparsity"), ("gpu_seconds",)  # long CSV; dense training: method dense, sparsity 0


def runs(profile: str):
    rows = R.trajectory(profile)
    return rows + R.dense_runs(rows)


def devices(run_dir) -> tuple[int, int]:
    """(GPUs, processes) the run in ``run_dir`` computed on, from its result.json's ``provenance.hardware``
    (``common.store.hardware``): each DDP rank drives one GPU, so on CUDA its GPUs are its world size; on the CPU
    (``--device cpu``, or no GPU seen) none. A result written before that record counts as one process on the CPU."""
    hardware = ((read_result(run_dir) or {}).get("provenance") or {}).get("hardware") or {}
    ranks = int(hardware.get("world_size") or 1)
    on_gpu = bool(hardware.get("gpus")) and str(hardware.get("device") or "auto").split(":")[0] != "cpu"
    return (ranks if on_gpu else 0), ranks


def charged(rows: pd.DataFrame, runs: dict) -> pd.DataFrame:
    """``rows`` (a ``time`` column of wall seconds, ``run`` its hash) with the run's ``gpus`` and ``ranks`` (``runs``:
    {hash: ``devices``}), its ``wall_time`` and ``gpu_seconds``: wall time x GPUs, or x processes on the CPU."""
    gpus = rows["run"].map({h: g for h, (g, _) in runs.items()})
    ranks = rows["run"].map({h: n for h, (_, n) in runs.items()})
    return rows.rename(columns={"time": "wall_time"}).assign(gpu_seconds=rows["time"] * ranks, gpus=gpus, ranks=ranks)


def time_label(gpus: pd.Series) -> str:
    """The time axis of a panel whose runs computed on ``gpus`` GPUs each (0: on the CPU)."""
    if (gpus > 0).all():
        return "GPU-seconds (wall time x GPUs)"
    if (gpus == 0).all():
        return "CPU process-seconds (wall time x processes)"
    return "GPU-seconds (wall time x GPUs; CPU runs x processes)"


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    runs = {h: devices(d) for h, d in df.drop_duplicates("hash")[["hash", "run_dir"]].itertuples(index=False)}
    dense_rows = df[df["script"] == "common.pretrain"]
    data = charged(long(df), runs)
    dense_long = charged(pd.DataFrame({
        "setup": dense_rows.apply(R.setup_label, axis=1), "method": "dense", "sparsity": 0.0,
        "seed": dense_rows["config.seed"], "time": dense_rows["wall_time"], "run": dense_rows["hash"]}),
        runs) if len(dense_rows) else None
    dense = (mean_spread(dense_long, ["setup"], "gpu_seconds") if dense_long is not None
             else pd.DataFrame(columns=["setup"]))
    every = pd.concat([data, dense_long], ignore_index=True) if dense_long is not None else data
    stats = mean_spread(data.rename(columns={"sparsity": "x"}), ["setup", "method", "x"], "gpu_seconds")
    diffs = differences(data, "gpu_seconds", others=("imp",))
    setups = list(dict.fromkeys(data["setup"]))
    cols = min(4, len(setups))
    rows = -(-len(setups) // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(4.6 * cols, 6.6 * rows), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2] * rows})
    ref = pd.read_csv(REFERENCE) if profile == "paper" else None
    summary = []
    for i, setup in enumerate(setups):
        ax, dax = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        for method in METHODS:
            s = stats[(stats["setup"] == setup) & (stats["method"] == method)].sort_values("x")
            if len(s):
                band(ax, s["x"], s, R.LABELS[method] + (" (cumulative rounds)" if method == "imp" else "")
                     + _epochs(setup, method), R.COLORS[method])
        d = dense[dense["setup"] == setup]
        if len(d):
            ax.axhline(d["mean"].iloc[0], color="k", ls="--", lw=1, label="dense training")
        if ref is not None and (ref["setup"] == setup).any():
            r = ref[ref["setup"] == setup]
            imp = r[r["method"] == "imp"]
            ax.plot(imp["sparsity"], 60 * imp["minutes"], "ks", mfc="none", label="paper IMP")
            for _, row in r[r["method"] != "imp"].iterrows():
                ax.axhline(60 * row["minutes"], color=R.COLORS.get(row["method"], "gray"), ls=":", lw=1)
        grid = data[(data["setup"] == setup) & (data["method"] != "imp")]["sparsity"]
        for a in (ax, dax):
            sparsity_axis(a, grid)
        unit = time_label(every.loc[every["setup"] == setup, "gpus"])
        ax.set(title=setup, ylabel=unit, yscale="log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=6)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        dax.sharex(ax)
        paired_panel(dax, diffs[diffs["setup"] == setup], "sparsity", series="vs", colors=R.COLORS,
                     labels={"imp": "BiP - IMP (cumulative)"}, ylabel=f"BiP - IMP, {unit.split(' (')[0]} (claim: < 0)")
        dax.set_title(PAIRED_NOTE, fontsize=7)
        summary += _bounds(stats[stats["setup"] == setup], setup)
    for k in range(len(setups), rows * cols):
        axes[2 * (k // cols), k % cols].axis("off")
        axes[2 * (k // cols) + 1, k % cols].axis("off")
    fig.suptitle("time to reach each sparsity: wall time x the GPUs each run computed on (CPU: its processes)\n"
                 "mean over seeds, min-max band; IMP: cumulative over rounds; below: BiP minus IMP per seed", fontsize=9)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(every, base, ARMS, VALUES),
            save_csv(pd.DataFrame(summary), base.with_name(base.name + "-bounds"))]


def _bounds(stats: pd.DataFrame, setup: str) -> list[dict]:
    """Per BiP grid point: IMP's cumulative time at its first round reaching that sparsity, and the ratio; then the
    row ``"to 89%"``: BiP's first grid point >= 89% against IMP's first round >= 89% (its 10th at 20% per round):
    the speed comparison of the README's speed table."""
    bip = stats[stats["method"] == "bip"].set_index("x")["mean"].sort_index()
    imp = stats[stats["method"] == "imp"].set_index("x")["mean"].sort_index()
    if bip.empty:
        return []
    flat = bip.max() / bip.min()
    # per sparsity, the least disturbed seed: a timing only ever gains from other load on the machine (one stall of
    # ~0.4 s doubles a 0.25 s MLP run), so the fastest of the seeds is the estimate of a run's own cost
    fastest = stats[stats["method"] == "bip"].set_index("x")["min"]
    imp_fastest = stats[stats["method"] == "imp"].set_index("x")["min"]
    flat_min = fastest.max() / fastest.min()

    def row(kind, x_bip, x_imp):
        return {"setup": setup, "row": kind, "bip_sparsity": x_bip, "bip_time": bip[x_bip], "imp_sparsity": x_imp,
                "imp_time": imp[x_imp], "imp_over_bip": imp[x_imp] / bip[x_bip], "bip_time_max_over_min": flat,
                "bip_fastest_seed_max_over_min": flat_min,
                "imp_over_bip_fastest_seeds": imp_fastest[x_imp] / fastest[x_bip]}

    rows = [row("grid", x, imp.index[imp.index >= x - 0.01].min()) for x in bip.index if (imp.index >= x - 0.01).any()]
    if (bip.index >= 89).any() and (imp.index >= 89).any():
        rows.append(row("to 89%", bip.index[bip.index >= 89].min(), imp.index[imp.index >= 89].min()))
    return rows or [{"setup": setup, "bip_time_max_over_min": flat, "bip_fastest_seed_max_over_min": flat_min}]
