"""Cross-paper views for compare.ipynb, built from whatever runs the store holds (no planned run list): every
unstructured method's accuracy against its realized sparsity on one model, and the structured / block methods'
accuracy against their parameter reduction.

Each paper script's runs are reduced to its main variant (the figure-specific sweeps -- BiP's gamma sweep, GMP's
weight-decay and global-scope runs, the SA++ ablations -- are left out, so that a method's points are comparable).
"""
from __future__ import annotations

import pandas as pd

from figures.notebooks.nbplot import Store, plot, select

LABELS = {"bip": "BiP", "hydra": "Hydra", "imp": "IMP", "omp": "OMP", "gmp": "GMP", "oneshot": "one-shot magnitude",
          "sapp": "SA++", "acdc": "ACDC", "magnitude": "block magnitude", "powerprop": "block PowerProp",
          "ours": "post-training (ours)", "holistic": "post-training holistic", "layerwise": "post-training layer-wise",
          "none": "post-training, no reconstruction", "l1": "L1 + retraining"}
SA_DEFAULTS = {"config.temperature": 1.0, "config.c": 4.0, "config.attention": "softmax", "config.zero_pruned": True,
               "config.sparsification": True, "config.short_dense_steps": 0}

# script, selection of its main unstructured variant
UNSTRUCTURED = [
    ("bip.prune", {"config.structure": "unstructured", "config.ig": "paper", "config.gamma": 1e4}),
    ("bip.magnitude", {}),
    ("gmp.prune", {"config.scope": "layer", "config.finetune_weight_decay": None}),
    ("seqattn.prune", {"config.block": 1, **SA_DEFAULTS}),
]
STRUCTURED = [
    ("bip.prune", {"config.structure": ("filter", "channel")}),
    ("posttrain.prune", {"config.balanced": True, "config.phase1_epochs": lambda e: e > 0,
                         "config.samples": lambda s: s == s.mode().iloc[0]}),  # the sweep of Fig. 4 left out
    ("seqattn.prune", {"config.block": lambda b: b > 1, **SA_DEFAULTS}),
]


def _gather(store: Store, sources) -> pd.DataFrame:
    parts = []
    for script, where in sources:
        df = select(store.runs(script), where)
        if df.empty:
            continue
        method = df["config.method"].map(lambda m: LABELS.get(m, m))
        if "config.structure" in df and script == "bip.prune" and (df["config.structure"] != "unstructured").any():
            method = method + " " + df["config.structure"].astype(str) + "-wise"
        if script == "seqattn.prune":
            method = method + " B=" + df["config.block"].astype(int).astype(str)
        parts.append(df.assign(method=method, setup=df["config.model"] + " / " + df["config.dataset"]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _pick_setup(df: pd.DataFrame, setup: str | None) -> str | None:
    """The requested setup, or the one with the most methods (then the most runs)."""
    if setup is not None or df.empty:
        return setup
    family = df["script"] + ":" + df["config.method"].astype(str)  # block sizes of one method count once
    counts = df.assign(family=family).groupby("setup").agg(methods=("family", "nunique"), runs=("run_dir", "nunique"))
    return counts.sort_values(["methods", "runs"], ascending=False).index[0]


def _one_setup(store: Store, scripts, setup: str | None, kind: str) -> tuple[pd.DataFrame, str | None]:
    """The runs of ``scripts`` on one setup (the requested one, or the one with the most methods)."""
    df = _gather(store, scripts)
    setup = _pick_setup(df, setup)
    df = df[df["setup"] == setup] if setup else df
    if df.empty:
        print(f"no {kind} runs in {store.runs_dir}{' on ' + setup if setup else ''}")
    return df, setup


def unstructured(store: Store, setup: str | None = None) -> pd.DataFrame:
    """Test accuracy and each run's own time against realized sparsity, every unstructured method found on one
    setup."""
    df, setup = _one_setup(store, UNSTRUCTURED, setup, "unstructured")
    if df.empty:
        return df
    title = f"{setup}: unstructured methods in the store"
    plot(df, "test_acc", "sparsity", by=["method"], title=title)
    own = "run_time" if "run_time" in df.columns else "wall_time"  # run_time: without its dependencies' time
    plot(df, own, "sparsity", by=["method"], logy=True, title=title + f" ({own.replace('_', ' ')}, s)")
    return df.groupby("method").agg(runs=("run_dir", "nunique"), seeds=("config.seed", "nunique")).reset_index()


def structured(store: Store, setup: str | None = None) -> pd.DataFrame:
    """Test accuracy against the parameter reduction RP = parameters / remaining (nonzero) parameters."""
    df, setup = _one_setup(store, STRUCTURED, setup, "structured or block")
    if df.empty:
        return df
    if "nonzero_params" in df:
        rp = df["params"] / df["nonzero_params"]
        df = df.assign(RP=df["RP"].where(df["RP"].notna(), rp) if "RP" in df else rp)
    plot(df, "test_acc", "RP", by=["method"], logx=True, title=f"{setup}: structured and block methods in the store")
    return df.groupby("method").agg(runs=("run_dir", "nunique"), RP_max=("RP", "max")).reset_index()
