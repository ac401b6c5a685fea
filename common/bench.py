"""Benchmarks of the shared hot paths, printed as ratios measured in this one process (python -m common.bench).

- masked / dense training step: the real ``train_epoch`` loop, with and without the mask enforcement every pruning
  method adds per step (gradients masked before the step, weights after it); goal <= 1.05.
- ``collect()`` over 1000 run directories written through the real run store; goal < 2 s.

Other folders add their own ``<folder>/bench.py`` with the same helpers; ``make bench`` runs them all.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from common import config as C
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


def main() -> None:
    print(f"common benchmarks (torch {torch.__version__}, {torch.get_num_threads()} threads, cpu)")
    report("masked / dense training step, digits cnn (bs 128)", masked_step_ratio("cnn", (1, 8, 8), 12), "<= 1.05")
    report("masked / dense training step, resnet20 32x32 (bs 128)", masked_step_ratio("resnet20", (3, 32, 32), 3),
           "<= 1.05")
    report("collect() over 1000 run directories", collect_seconds(), "< 2 s", " s")


if __name__ == "__main__":
    main()
