"""Cross-paper comparison (beyond the papers): every unstructured method on one model, data set and sparsity grid.

Left: test accuracy vs sparsity (mean over seeds, min-max band) of BiP, Hydra, IMP, OMP (BiP paper), GMP, ACDC and
SequentialAttention++ with B=1 (unstructured), the dense model dashed. Middle and right, at one sparsity (86.58%):
accuracy vs the forward+backward work in epoch-equivalents (dense pretraining included) and vs the measured wall time
(dense training + the method). The CSV holds every run at every grid point (long, with its seed), its costs and its
budget in words; ``fig-compare-summary.csv`` the mean and spread over seeds per method and grid point (``COLUMNS``).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter

from common.store import read_log
from figures.bip import runs as R
from figures.compare import runs as X
from figures.plot import band, save_figure, save_long, sparsity_axis

PAPER = ("Beyond the papers (cross-paper comparison): BiP / Hydra / IMP / OMP, GMP, ACDC and "
         "SequentialAttention++ (B=1) on one model, grid and budget")
ARMS = ("setup", "method", "sparsity")  # the long CSV: arms, seed, values (then the costs and the budget in words)
VALUES = ("acc", "dense_acc", "total_ep", "total_s")
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")
COLUMNS = ["setup", "method", "label", "sparsity", "acc_mean", "acc_std", "acc_min", "acc_max", "seeds", "dense_acc",
           "dense_ep", "method_ep", "total_ep", "method_s", "dense_s", "total_s", "budget"]


def runs(profile: str):
    return X.unstructured(profile)


def tidy(df: pd.DataFrame, profile: str) -> pd.DataFrame:
    """One row per (run, reported point) on the grid: setup, method, seed, x (sparsity %), acc, costs."""
    dense = df[df["script"] == "common.pretrain"]
    dense_s = {(R.setup_label(r), r["config.seed"]): r["wall_time"] for _, r in dense.iterrows()}
    dense_acc = {(R.setup_label(r), r["config.seed"]): 100 * r["test_acc"] for _, r in dense.iterrows()}
    rows = []
    for _, r in df[df["script"] != "common.pretrain"].iterrows():
        r = r.to_dict()
        key = (R.setup_label(r), r["config.seed"])
        grid = r.get("target_sparsity") if r["script"] == "bip.magnitude" and r.get("round") == r.get("round") \
            else r.get("config.target_sparsity", r.get("config.sparsity"))
        if grid != grid or grid is None:
            grid = r["config.sparsity"]
        cost = X.epoch_equivalents(r)
        start = read_log(r["run_dir"])[0]["time"] if r["script"] == "gmp.prune" else None
        method_s = X.method_seconds(r, start)
        d_s = dense_s.get(key, float("nan")) if cost["dense_ep"] else 0.0
        rows.append({"setup": key[0], "seed": key[1], "method": X.method_of(r), "x": round(100 * float(grid), 2),
                     "acc": 100 * r["test_acc"], "dense_acc": dense_acc.get(key, float("nan")), **cost,
                     "method_s": method_s, "dense_s": d_s, "total_s": method_s + d_s, "run": r["hash"]})
    out = pd.DataFrame(rows)
    grid = {round(100 * s, 2) for s in R.sparsities(profile)}
    return out[out["x"].isin(grid)].reset_index(drop=True) if len(out) else out


def summarize(t: pd.DataFrame) -> pd.DataFrame:
    """Mean / spread over seeds per (setup, method, sparsity), with the mean costs and the budget in words."""
    g = t.groupby(["setup", "method", "x"], sort=False)
    out = g["acc"].agg(acc_mean="mean", acc_std="std", acc_min="min", acc_max="max", seeds="count").reset_index()
    out["acc_std"] = out["acc_std"].fillna(0.0)
    means = g[["dense_acc", "dense_ep", "method_ep", "total_ep", "method_s", "dense_s", "total_s"]].mean()
    out = out.merge(means.reset_index(), on=["setup", "method", "x"])
    out = out.merge(g["budget"].first().reset_index(), on=["setup", "method", "x"])
    out = out.rename(columns={"x": "sparsity"}).assign(label=lambda d: d["method"].map(X.LABELS))
    order = {m: i for i, m in enumerate(X.UNSTRUCTURED_METHODS)}
    out = out.assign(_o=out["method"].map(order)).sort_values(["setup", "_o", "sparsity"])
    return out[COLUMNS].reset_index(drop=True)


def budget_label(rows: pd.DataFrame) -> str:
    """A method's label with its total work in epoch-equivalents (a range for IMP, whose work grows per round)."""
    lo, hi = rows["total_ep"].min(), rows["total_ep"].max()
    return f"{rows['label'].iloc[0]} [{lo:.3g}{'' if lo == hi else f'-{hi:.3g}'} ep-eq]"


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    runs_ = tidy(df, profile)
    stats = summarize(runs_)
    at = round(100 * X.cost_sparsity(profile), 2)
    setups = list(dict.fromkeys(stats["setup"]))
    fig, axes = plt.subplots(len(setups), 3, figsize=(15, 4.2 * len(setups)), squeeze=False)
    for (ax, ax_ep, ax_s), setup in zip(axes, setups):
        s = stats[stats["setup"] == setup]
        for method in X.UNSTRUCTURED_METHODS:
            m = s[s["method"] == method].sort_values("sparsity")
            if len(m):
                band(ax, m["sparsity"], m.rename(columns={"acc_mean": "mean", "acc_min": "min", "acc_max": "max"}),
                     budget_label(m), X.COLORS[method])
        dense = s["dense_acc"].mean()
        ax.axhline(dense, color="k", ls="--", lw=1, label=f"dense ({dense:.2f}%)")
        sparsity_axis(ax, s["sparsity"])
        ax.set(title=f"{setup}: accuracy vs sparsity", ylabel="test accuracy (%)")
        point = s[s["sparsity"] == at]
        for a, col, xlabel in ((ax_ep, "total_ep", "forward+backward work (epoch-equivalents, dense included)"),
                               (ax_s, "total_s", "wall time (s, dense training + method)")):
            for _, p in point.iterrows():
                a.errorbar(p[col], p["acc_mean"], yerr=[[p["acc_mean"] - p["acc_min"]], [p["acc_max"] - p["acc_mean"]]],
                           fmt="o", ms=8, color=X.COLORS[p["method"]],
                           label=p["label"], capsize=3)
            a.set(title=f"{setup}: at {at}% sparsity", xlabel=xlabel, ylabel="test accuracy (%)", xscale="log")
            a.xaxis.set_major_formatter(PLAIN)
            a.xaxis.set_minor_formatter(PLAIN)
            a.tick_params(axis="x", which="minor", labelsize=6)
        ax.grid(alpha=0.3)
        for a in (ax_ep, ax_s):
            a.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("cross-paper comparison, unstructured (mean over seeds, min-max); [total forward+backward work in "
                 "epoch-equivalents, dense pretraining included]; ACDC / SA++ train from scratch for the same total work",
                 fontsize=9)
    fig.tight_layout()
    long = runs_.rename(columns={"x": "sparsity"})
    return [*save_figure(fig, base), *save_long(long, base, ARMS, VALUES, summary=stats)]
