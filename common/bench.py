"""Benchmarks of the shared hot paths, printed as ratios measured in this one process (python -m common.bench).

- masked / dense training step: the real ``train_epoch`` loop, with and without the mask enforcement every pruning
  method adds per step (gradients masked before the step, weights after it); goal <= 1.05.
- ``collect()`` over 1000 run directories written through the real run store; goal < 2 s.
- sparse / dense inference (``common.sparse``, every layer with zeros computed sparse), random weights pruned by the
  one top-k: LeNet-300-100 at 90% unstructured in CSR, goal >= 2x; the Criteo model's first layer (390 -> 400) at 95%
  in 8x8 blocks in BSR, goal >= 3x; batch 64, one and two threads (``sparse_speedups``, also fig-sparse-speed's).

Other folders add their own ``<folder>/bench.py`` with the same helpers; ``make bench`` runs them all.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
from torch import nn

from common import config as C
from common import sparse as SP
from common import sparsity as S
from common.models import build_model
from common.store import Run, collect
from common.train import Optim, make_optimizer, train_epoch


class RepeatedBatches:
    """A stand-in for a data split: the same random batches every epoch (only the step cost is measured)."""

    def __init__(self, shape, num_classes: int, batch_size: int, steps: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.batches = [(torch.randn(batch_size, *shape, generator=g),
                         torch.randint(0, num_classes, (batch_size,), generator=g)) for _ in range(steps)]

    def __len__(self):
        return len(self.batches)

    def epoch(self, epoch: int, start: int = 0, rank: int = 0, world: int = 1):  # one process: all rows
        return iter(self.batches[start:])


def interleaved(fns: dict, rounds: int = 9) -> dict[str, float]:
    """Median seconds of each function, timed in rounds of alternating order (ABBA...) so drift hits all alike."""
    times = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    items = list(fns.items())
    for r in range(rounds):
        for name, fn in (items if r % 2 == 0 else items[::-1]):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(name: str, value: float, goal: str, unit: str = "x") -> None:
    print(f"{name:58s} {value:8.3f}{unit}   (goal {goal})", flush=True)


def masked_step_ratio(model_name: str, shape, steps: int, batch_size: int = 128, sparsity: float = 0.9) -> float:
    torch.manual_seed(0)
    data = RepeatedBatches(shape, 10, batch_size, steps)

    def trainer(masked: bool):
        torch.manual_seed(0)
        model = build_model(model_name, 10, shape)
        opt = make_optimizer(model.parameters(), Optim(), 0.01)
        masks = None
        if masked:
            params = S.prunable(model, ("last",))
            masks = S.Masks(params)
            masks.set(S.topk_masks(S.magnitudes(params), sparsity, "global", ties="exact"), opt)
        return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0,
                                   before_step=(lambda s: masks.mask_grads()) if masks else None,
                                   after_step=(lambda s: masks.apply()) if masks else None)

    t = interleaved({"dense": trainer(False), "masked": trainer(True)})
    return t["masked"] / t["dense"]


@dataclass
class _BenchCfg:
    x: int = C.opt(0, "index")
    method: str = C.opt("m", "method")
    runs_dir: str = C.opt("runs", "store", hash=False)


def collect_seconds(n: int = 1000) -> float:
    with tempfile.TemporaryDirectory() as root:
        for i in range(n):
            run = Run("bench.script", _BenchCfg(x=i, runs_dir=root))
            run.dir.mkdir(parents=True)
            (run.dir / "config.json").write_text(f'{{"script": "bench.script", "config": {{"x": {i}, "method": "m"}}}}')
            run.finish({"test_acc": 0.5, "sparsity": 0.9, "points": [{"round": r, "acc": 0.1 * r} for r in range(3)]})
        t0 = time.perf_counter()
        df = collect(root)
        elapsed = time.perf_counter() - t0
        assert len(df) == 3 * n
    return elapsed


# ---------------------------------------------------------------------------------------------------- sparse inference
SPEED_MODELS = {"mlp": "LeNet-300-100 (784-300-100-10)", "lenet5": "LeNet-5 (1x28x28)",
                "criteo-first-layer": "Criteo model's first layer (390 -> 400)"}


def speed_model(name: str) -> tuple[str, nn.Module, tuple, tuple]:
    """(its label, a model with random weights, its input shape, the layers left dense) of a sparse-speed model:
    ``mlp`` (LeNet-300-100 on 28x28), ``lenet5`` (LeNet-5 on 28x28), ``criteo-first-layer`` (``CriteoNet``'s first
    Linear, 390 -> 400, alone)."""
    torch.manual_seed(0)
    if name == "criteo-first-layer":
        from common.criteo import CriteoNet

        first = CriteoNet().net[0]
        return SPEED_MODELS[name], nn.Sequential(first).eval(), (first.in_features,), ()
    return SPEED_MODELS[name], build_model(name, 10, (1, 28, 28)).eval(), (1, 28, 28), ("last",)


@torch.no_grad()
def random_pruned(model: nn.Module, sparsity: float, block: int, exclude=("last",), seed: int = 0) -> nn.Module:
    """``model`` with its prunable weights (``common.sparsity.prunable``) pruned in place to ``sparsity`` in each layer
    by the one top-k over random scores: of every weight (block 0: unstructured) or of every BxB block
    (``BlockView``: the blocks SA++ prunes and BSR stores)."""
    g = torch.Generator().manual_seed(seed)
    params = S.prunable(model, exclude)
    masks = []
    for p in params.values():
        if block:
            view = S.BlockView(p.shape, block)
            masks.append(view.expand(S.topk_mask(torch.rand(view.grid, generator=g), sparsity, ties="exact")))
        else:
            masks.append(S.topk_mask(torch.rand(p.shape, generator=g), sparsity, ties="exact"))
    S.apply_masks(list(params.values()), [m.to(p.dtype) for m, p in zip(masks, params.values())])
    return model


def sparse_speedups(name: str, sparsity: float, fmt: str, block: int = 0, batches=(64,), threads=(1,),
                    rounds: int = 3, repeats: int = 10, when: str = "all", budget_ms: float = 1e9) -> list[dict]:
    """Dense / sparse latency of model ``name`` (``speed_model``) pruned at random to ``sparsity`` (BxB blocks for
    bsr), its layers computed in ``fmt`` as ``sparsify(..., when=when)`` decides (``all``: every layer with zeros;
    ``faster``: as an export chooses, each layer timed at batch 64, one thread): one row per batch size and thread
    count, the dense (masked) and sparse models timed alternately as eager modules (``common.sparse.time_pair``:
    fewer repeats where ``rounds`` x ``repeats`` calls would exceed ``budget_ms``)."""
    label, model, shape, exclude = speed_model(name)
    random_pruned(model, sparsity, block if fmt == "bsr" else 0, exclude)
    with SP.quiet():
        sparse, decisions = SP.sparsify(model, fmt, block, shape, when=when, rounds=rounds, repeats=repeats)
    chosen = sum(d["format"] != "dense" for d in decisions)
    rows = []
    for n in threads:
        for b in batches:
            with SP.quiet():
                t = SP.time_pair(model, sparse, shape, b, n, rounds, repeats, budget_ms)
            rows.append({"model": label, "input": "x".join(map(str, shape)), "format": fmt,
                         "block": block if fmt == "bsr" else 1, "sparsity": sparsity, "batch": b, "threads": n,
                         "layers": when, "sparse_layers": chosen, "dense_ms": t["dense"], "sparse_ms": t["sparse"],
                         "speedup": t["dense"] / t["sparse"], "ideal": 1.0 / (1.0 - sparsity)})
    return rows


SPEED_GOALS = (("mlp", 0.9, "csr", 0, "LeNet-300-100 90% CSR", 2.0),
               ("criteo-first-layer", 0.95, "bsr", 8, "390x400 layer 95% BSR 8x8", 3.0))


def main() -> None:
    print(f"common benchmarks (torch {torch.__version__}, {torch.get_num_threads()} threads, cpu)")
    report("masked / dense training step, digits cnn (bs 128)", masked_step_ratio("cnn", (1, 8, 8), 12), "<= 1.05")
    report("masked / dense training step, resnet20 32x32 (bs 128)", masked_step_ratio("resnet20", (3, 32, 32), 3),
           "<= 1.05")
    report("collect() over 1000 run directories", collect_seconds(), "< 2 s", " s")
    for name, sparsity, fmt, block, label, goal in SPEED_GOALS:
        for row in sparse_speedups(name, sparsity, fmt, block, batches=(64,), threads=(1, 2), rounds=7, repeats=20):
            report(f"sparse speedup, {label} (bs 64, {row['threads']} thread{'s' * (row['threads'] > 1)})",
                   row["speedup"], f">= {goal:g}")


if __name__ == "__main__":
    main()
