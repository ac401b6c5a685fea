"""Cross-paper comparison (beyond the papers): structured and block pruning on one model and data set.

BiP filter-wise / channel-wise (BiP paper), post-training structured pruning (ours of that paper), and the block
methods of the SequentialAttention++ paper (SA++, ACDC, block magnitude; BxB blocks on the conv layers). Accuracy vs
RP (parameters original / pruned: nonzero entries for masked models, so a zero block or filter counts as removed),
vs RF (FLOPs original / pruned, zero weights not counted) and vs the measured CPU speedup of the final model
(dense latency / pruned latency, one thread, batch 1 and batch 64; each a median of repeats, the dense model of the
same seed measured alternately with it). As a model runs, with dense tensors, a masked or block-sparse model's
measured speedup is ~1x: only post-training pruning removes channels physically. So every run is also measured as
its sparse export (``figures.speed.exports``: BSR in the run's BxB blocks for the block methods, CSR for BiP's
filters / channels, each layer sparse only where it measured faster; post-training: its physically smaller model):
``sparse_format`` and ``sparse_speedup_b64`` (batch 64, one thread), the last panel. The CSV holds every run (long,
with its seed); ``fig-compare-structured-summary.csv`` the mean and spread over seeds per method and knob (``COLUMNS``).
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from common.data import dataset_info
from common.export import final_model
from common.metrics import paired_latency_ms
from figures.bip import runs as R
from figures.compare import runs as X
from figures.compare.fig_compare import budget_label
from figures.plot import save_figure, save_long
from figures.speed.exports import export_speed

PAPER = ("Beyond the papers (cross-paper comparison): BiP filter/channel, post-training pruning, "
         "SA++ / ACDC / block magnitude with blocks")
BATCHES = (1, 64)
REPEATS = 15
ROUNDS = 3
COLUMNS = ["setup", "method", "label", "knob", "acc_mean", "acc_std", "acc_min", "acc_max", "seeds", "dense_acc",
           "RP", "RF", "latency_b1_ms", "latency_b64_ms", "dense_latency_b1_ms", "dense_latency_b64_ms",
           "speedup_b1", "speedup_b64", "sparse_layers", "sparse_latency_b64_ms", "sparse_speedup_b64", "dense_ep",
           "method_ep", "total_ep", "method_s", "dense_s", "total_s", "sparse_format", "budget"]
ARMS = ("setup", "method", "knob")  # the long CSV: arms, seed, values (then latencies, costs, formats)
VALUES = ("acc", "dense_acc", "RP", "RF", "speedup_b1", "speedup_b64", "sparse_speedup_b64")
TEXT = ("sparse_format", "budget")  # one value per group (the same for every seed)


def runs(profile: str):
    return X.structured(profile)


def load_model(row) -> torch.nn.Module:
    """The final model of a run, from its ``model.pt`` (post-training: the physically smaller architecture)."""
    run_dir = Path(row["run_dir"])
    return final_model(run_dir, json.loads((run_dir / "config.json").read_text()))[0]


def latencies(model, dense, input_shape) -> dict:
    """Median CPU latencies (ms, one thread) of ``model`` and the dense model at each batch size, measured alternately
    ``ROUNDS`` times (median of the rounds' medians, so that load from other processes hits both alike)."""
    out = {}
    for b in BATCHES:
        t = paired_latency_ms({"": model, "dense_": dense}, input_shape, batch_size=b, rounds=ROUNDS,
                              repeats=REPEATS, warmup=3)
        out.update({f"{prefix}latency_b{b}_ms": ms for prefix, ms in t.items()})
        out[f"speedup_b{b}"] = out[f"dense_latency_b{b}_ms"] / out[f"latency_b{b}_ms"]
    return out


def reductions(row) -> dict:
    """RP and RF of a run: post-training reports them (physical removal); masked models count nonzero weights."""
    if row["script"] == "posttrain.prune":
        return {"RP": row["RP"], "RF": row["RF"]}
    return {"RP": row["params"] / row["nonzero_params"], "RF": row["flops"] / row["effective_flops"]}


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: setup, seed, method, knob (sparsity or channel ratio), acc, RP, RF, latencies, costs."""
    dense = df[df["script"] == "common.pretrain"]
    dense_rows = {(R.setup_label(r), r["config.seed"]): r.to_dict() for _, r in dense.iterrows()}
    dense_models = {}
    rows = []
    for _, r in df[df["script"] != "common.pretrain"].iterrows():
        r = r.to_dict()
        setup, seed = R.setup_label(r), r["config.seed"]
        shape = dataset_info(r["config.dataset"]).input_shape
        d = dense_rows.get((setup, seed))
        if (setup, seed) not in dense_models and d is not None:
            dense_models[setup, seed] = load_model(d)
        cost = X.epoch_equivalents(r)
        method_s = X.method_seconds(r)
        dense_s = d["wall_time"] if d is not None and cost["dense_ep"] else 0.0
        knob = r.get("config.ratio") if r["script"] == "posttrain.prune" else \
            r.get("config.target_sparsity") if r["script"] == "bip.prune" else r.get("config.sparsity")
        lat = latencies(load_model(r), dense_models[setup, seed], shape)
        exported = export_speed(r["run_dir"], dense_models[setup, seed], ROUNDS, REPEATS)
        rows.append({"setup": setup, "seed": seed, "method": X.method_of(r), "knob": float(knob),
                     "acc": 100 * r["test_acc"], "dense_acc": 100 * d["test_acc"] if d is not None else float("nan"),
                     **reductions(r), **lat, **exported,
                     **cost, "method_s": method_s, "dense_s": dense_s, "total_s": method_s + dense_s,
                     "run": r["hash"]})
    return pd.DataFrame(rows)


def summarize(t: pd.DataFrame) -> pd.DataFrame:
    g = t.groupby(["setup", "method", "knob"], sort=False)
    out = g["acc"].agg(acc_mean="mean", acc_std="std", acc_min="min", acc_max="max", seeds="count").reset_index()
    out["acc_std"] = out["acc_std"].fillna(0.0)
    numeric = [c for c in COLUMNS[9:] if c in t and c not in TEXT]
    out = out.merge(g[numeric].mean().reset_index(), on=["setup", "method", "knob"])
    out = out.merge(g[list(TEXT)].agg(lambda v: "; ".join(dict.fromkeys(v))).reset_index(),
                    on=["setup", "method", "knob"])
    out["label"] = out["method"].map(X.LABELS)
    order = {m: i for i, m in enumerate(X.STRUCTURED_METHODS)}
    out = out.assign(_o=out["method"].map(order)).sort_values(["setup", "_o", "knob"])
    return out.reindex(columns=COLUMNS).reset_index(drop=True)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    runs_ = tidy(df)
    stats = summarize(runs_)
    setups = list(dict.fromkeys(stats["setup"]))
    panels = (("RP", "RP: parameters original / pruned (log)"), ("RF", "RF: FLOPs original / pruned (log)"),
              ("speedup_b1", "measured CPU speedup, batch 1"), ("speedup_b64", "measured CPU speedup, batch 64"),
              ("sparse_speedup_b64", "measured CPU speedup of the sparse export, batch 64"))
    fig, axes = plt.subplots(len(setups), len(panels), figsize=(23, 4.2 * len(setups)), squeeze=False)
    for row, setup in zip(axes, setups):
        s = stats[stats["setup"] == setup]
        for ax, (col, xlabel) in zip(row, panels):
            for method in X.STRUCTURED_METHODS:
                m = s[s["method"] == method].sort_values("knob")
                if len(m):
                    spread = [m["acc_mean"] - m["acc_min"], m["acc_max"] - m["acc_mean"]]
                    ax.errorbar(m[col], m["acc_mean"], yerr=spread, marker="o", ms=4, capsize=2,
                                color=X.COLORS[method], label=budget_label(m))
            dense = s["dense_acc"].mean()
            ax.axhline(dense, color="k", ls="--", lw=1, label=f"dense ({dense:.2f}%)")
            ax.set(title=setup, xlabel=xlabel, ylabel="test accuracy (%)",
                   xscale="log" if col in ("RP", "RF") else "linear")
            ax.grid(alpha=0.3, which="both")
        row[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("cross-paper comparison, structured / block (mean over seeds, min-max); masked and block-sparse "
                 "models run dense (~1x), their sparse exports (CSR / BSR where faster) in the last panel", fontsize=9)
    fig.tight_layout()
    return [*save_figure(fig, base), *save_long(runs_, base, ARMS, VALUES, summary=stats)]
