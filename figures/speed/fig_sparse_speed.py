"""Measured CPU speedup of sparse execution over the dense model vs sparsity (beyond the papers).

What the sparse exports (``python -m common.export --format csr|bsr``, ``common.sparse``) can gain on this CPU:
LeNet-300-100 (784-300-100-10), the Criteo model's first layer alone (390 -> 400) and LeNet-5 (1x28x28), each with
**random weights** pruned at each sparsity by the one top-k (``common.bench.random_pruned``: per layer, the
classifier dense; unstructured for CSR, BxB blocks for BSR with B = 2, 4, 8, 16, 32) and every layer with zeros
computed in that format (``sparsify(..., when="all")``: what the format gives, including where it loses);
at batch 64 CSR and BSR 8x8 also "as exported": each layer sparse only where it
measured faster than dense (at batch 64, one thread), as ``common.export`` decides. Speedup = dense (masked)
latency / sparse latency, one forward pass in eval mode without gradients, batch 1 and 64, one and two threads, both
models as eager ``nn.Module``s: the sparse one as ``common.export.load`` returns a sparse export (its layers
``common.sparse``'s modules), the dense one the masked model itself, so one executor runs both sides
(``common.sparse.time_pair``: timed alternately by ``common.metrics.paired_latency_ms``, median of rounds); the
ideal 1 / density is drawn as a line. Until the sparse layers were eager modules, both sides were timed as
TorchScript programs (traced, the sparse layers scripted): the committed figure was drawn so.
No run: everything is measured when the figure is drawn, the same at every profile but smoke (on this 2-core machine
~50 s lightly loaded, ~3 minutes while other work keeps both cores busy); smoke, a check of the code path, measures
the two extreme sparsities and formats of the grid only.
Timings on a machine shared with other work are noisy, two-thread ones most (a busy second core stalls every
parallel region); OMP_NUM_THREADS=1 in the environment makes torch's two-thread runs far slower still.
Writes ``base.{png,pdf,csv}`` (long: one row per model, format, sparsity, batch, threads, with the weights' seed)
and ``base-payoff.{md,tex,csv}``: per model and format, the sparsity from which the format is faster than dense (at
that and every higher sparsity of the grid) at each batch size and thread count. The other figures' real pruned
models are measured as sparse exports by fig-compare-structured and tab-posttrain (their ``sparse_speedup_b64``
columns).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from common.bench import sparse_speedups
from figures.plot import save_figure, save_long, save_table, sparsity_axis

PAPER = "Beyond the papers: measured CPU speedup of CSR / BSR sparse execution vs sparsity (random weights)"
MODELS = ("mlp", "criteo-first-layer", "lenet5")
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
FORMATS = (("csr", 0), ("bsr", 2), ("bsr", 4), ("bsr", 8), ("bsr", 16), ("bsr", 32))
BATCHES = (1, 64)
THREADS = (1, 2)
EXPORTED = (("csr", 0), ("bsr", 8))  # also as an export chooses: each layer sparse only where it measured faster
ROUNDS, REPEATS = 3, 10
SMOKE_ROUNDS, SMOKE_REPEATS = 1, 2  # smoke checks the code path: one short timing per measurement
SEED = 0  # the one draw of random weights and masks (common.bench.random_pruned's seed)
ARMS = ("model", "kind", "sparsity", "batch", "threads")  # the long CSV: one row per measurement
VALUES = ("speedup", "dense_ms", "sparse_ms")
BUDGET_MS = 60.0  # per measurement and model: slow forward passes (LeNet-5's sparse convolutions) get fewer repeats
COLORS = {"csr": "k", "bsr2": "C0", "bsr4": "C1", "bsr8": "C2", "bsr16": "C3", "bsr32": "C4",
          "csr as exported": "k", "bsr8 as exported": "C2"}


def runs(profile: str):
    return []  # measured in draw(): random weights, nothing trained


def label(fmt: str, block: int) -> str:
    return f"bsr{block}" if fmt == "bsr" else fmt


def measure(smoke: bool = False) -> pd.DataFrame:
    """Every model x format x sparsity of the grid; ``smoke``: its two extreme sparsities and formats (CSR, and BSR with
    its largest block), as the smoke profile thins every figure's axes, each timed once, briefly."""
    sparsities, formats, rounds, repeats = SPARSITIES, FORMATS, ROUNDS, REPEATS
    if smoke:
        sparsities, formats = (SPARSITIES[0], SPARSITIES[-1]), (FORMATS[0], FORMATS[-1])
        rounds, repeats = SMOKE_ROUNDS, SMOKE_REPEATS
    rows = []
    for name in MODELS:
        for fmt, block in formats:
            for s in sparsities:
                rows += sparse_speedups(name, s, fmt, block, BATCHES, THREADS, rounds, repeats, budget_ms=BUDGET_MS)
        for fmt, block in EXPORTED:
            for s in sparsities:
                rows += sparse_speedups(name, s, fmt, block, (max(BATCHES),), THREADS, rounds, repeats, "faster",
                                        BUDGET_MS)
    df = pd.DataFrame(rows)
    df.insert(2, "kind", [label(f, b) + (" as exported" if w == "faster" else "")
                          for f, b, w in zip(df["format"], df["block"], df["layers"])])
    return df.assign(seed=SEED)


def payoff(df: pd.DataFrame) -> pd.DataFrame:
    """Per model and format: the lowest grid sparsity from which the format is faster than dense (there and at every
    higher grid sparsity), per batch size and thread count ('never' within the grid); and its speedups at 90 / 95%."""
    out = []
    for (model, kind), g in df[df["layers"] == "all"].groupby(["model", "kind"], sort=False):
        row = {"model": model, "format": kind}
        for (b, n), h in g.groupby(["batch", "threads"]):
            h = h.sort_values("sparsity")
            faster = list(h["speedup"] > 1.0)
            start = next((i for i in range(len(faster)) if all(faster[i:])), None)
            row[f"pays_off_b{b}_t{n}"] = "never" if start is None else f"{100 * h['sparsity'].iloc[start]:g}%"
        for s in (0.9, 0.95):
            at = g[(g["sparsity"] == s) & (g["batch"] == max(BATCHES)) & (g["threads"] == 1)]["speedup"]
            row[f"speedup_{round(100 * s)}_b{max(BATCHES)}_t1"] = float(at.iloc[0]) if len(at) else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def draw(df: pd.DataFrame, profile: str, base: Path) -> list[Path]:
    data = measure(smoke=profile == "smoke")
    models = list(dict.fromkeys(data["model"]))
    panels = [(b, n) for b in BATCHES for n in THREADS]
    fig, axes = plt.subplots(len(models), len(panels), figsize=(4.4 * len(panels), 3.6 * len(models)),
                             squeeze=False, sharex=True)
    for row, model in zip(axes, models):
        m = data[data["model"] == model]
        for ax, (b, n) in zip(row, panels):
            p = m[(m["batch"] == b) & (m["threads"] == n)]
            for kind, g in p.groupby("kind", sort=False):
                g = g.sort_values("sparsity")
                exported = kind.endswith("as exported")
                ax.plot(100 * g["sparsity"], g["speedup"], marker="s" if exported else "o", ms=3, lw=2.2 if exported
                        else 1.2, ls="--" if exported else "-", color=COLORS.get(kind), label=kind)
            ideal = p.drop_duplicates("sparsity").sort_values("sparsity")
            ax.plot(100 * ideal["sparsity"], ideal["ideal"], "k:", lw=1, label="ideal 1 / density")
            ax.axhline(1.0, color="0.5", lw=0.8)
            sparsity_axis(ax, 100 * p["sparsity"])
            ax.set(yscale="log", title=f"{model}\nbatch {b}, {n} thread{'s' * (n > 1)}",
                   ylabel="speedup over dense (measured)")
            ax.grid(alpha=0.3, which="both")
        row[panels.index((max(BATCHES), 1))].legend(fontsize=6, loc="upper left", ncol=2)
    fig.suptitle("CPU speedup of sparse execution over the dense model (random weights pruned at each sparsity; "
                 "CSR unstructured, BSR BxB blocks; every layer with zeros sparse, or as an export chooses: dashed); "
                 "two-thread timings are noisy on a shared machine", fontsize=9)
    fig.tight_layout()
    table = payoff(data)
    caption = (f"Sparsity from which each format is faster than the dense model on this CPU ({profile} profile; "
               "random weights; 'never': not within the grid 50-98%), and its batch-64 one-thread speedup at "
               "90% / 95%.")
    return [*save_figure(fig, base), *save_long(data, base, ARMS, VALUES, summary=False),
            *save_table(table.round(2), base.with_name(base.name + "-payoff"), caption)]
