"""The measured speed of real pruned runs' sparse exports, for the figures that read them (fig-compare-structured,
tab-posttrain): each run exported as ``common.export`` would (``program``: each layer timed dense and sparse at
batch 64, one thread, the faster kept) in its natural format: BSR in the run's own BxB blocks for block-sparse runs
(seqattn.prune --block B > 1), CSR for the other masked runs, and for a structurally pruned run its physically
smaller dense model. The export's model and the dense model are then timed alternately, both as eager modules
(``common.sparse.time_pair``).
"""
from __future__ import annotations

import json
from pathlib import Path

from common import export as E
from common import sparse as SP

BATCH = 64


def natural_format(config: dict) -> tuple[str, int]:
    """(format, block) of a run's config: bsr with its block size > 1, else csr (a structured run stays dense)."""
    block = config.get("block")
    return ("bsr", int(block)) if isinstance(block, int) and block > 1 else ("csr", 0)


def export_speed(run_dir, dense=None, rounds: int = 3, repeats: int = 10) -> dict:
    """``sparse_format`` (what the export computes with: csr, bsr<B>, or dense and why), ``sparse_layers`` (how many
    layers it computes sparse), ``sparse_latency_b64_ms`` and ``sparse_speedup_b64`` (dense / export latency, one
    thread) of a finished run; ``dense``: the dense model to compare with (default: the original architecture, whose
    latency does not depend on its weights)."""
    run_dir = Path(run_dir)
    fmt, block = natural_format(json.loads((run_dir / "config.json").read_text())["config"])
    p = E.program(run_dir, fmt, block, "faster", BATCH, rounds, repeats, require_sparse=False)
    sparse = sum(d["format"] != "dense" for d in p.weights["layers"])
    kind = E.tag(fmt, block)
    label = "dense (physically pruned)" if p.structured else kind if sparse else f"dense ({kind} not faster)"
    t = SP.time_pair(p.original if dense is None else dense, p.computed, p.input_shape, BATCH, 1, rounds, repeats)
    return {"sparse_format": label, "sparse_layers": sparse, f"sparse_latency_b{BATCH}_ms": t["sparse"],
            f"sparse_speedup_b{BATCH}": t["dense"] / t["sparse"]}
