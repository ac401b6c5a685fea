"""Calibration time vs L1-norm + retraining time at the tiny profile (python -m posttrain.bench; part of make bench).

Both start from the same trained digits CNN in this process and end with a physically pruned model at the same
channel ratio (0.5): ours = grouping, phase 1, removal, phase 2 on 128 unlabeled samples; the baseline = L1-norm
ranking, removal, 100 epochs of retraining with labels on the full training set (the paper's length). Timed
alternately (ours, L1, ours, L1, ours: medians); goal: calibration < 5% of L1 + retraining.
"""
from __future__ import annotations

import copy
import statistics
import tempfile
import time

import torch

from common import config as C
from common.bench import report
from common.data import load_dataset
from common.pretrain import load_dense
from common.store import Run, execute_dependencies
from posttrain import prune as P
from posttrain import reconstruct as R


def main() -> None:
    print(f"posttrain benchmarks (torch {torch.__version__}, {torch.get_num_threads()} threads, cpu)")
    with tempfile.TemporaryDirectory() as root:
        cfg = C.build(P.Config, runs_dir=root, progress="off", device="cpu")
        device = torch.device("cpu")
        # the dense run posttrain.prune declares: the tiny dense CNN, trained once (~7 s), outside the timings
        teacher, _ = load_dense(cfg, execute_dependencies(P, cfg), device)
        teacher.eval().requires_grad_(False)
        data = load_dataset(cfg.dataset, device=device, batch_size=cfg.retrain.batch_size, seed=cfg.seed)
        x, _ = data.sample(cfg.samples, cfg.sample_seed)
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # lazy imports out of the timings

        def ours():  # the tiny profile's settings are calibrate's defaults
            R.calibrate(copy.deepcopy(teacher).requires_grad_(True), x, cfg.ratio, teacher=teacher)

        def l1():
            l1_cfg = C.replace(cfg, method="l1")
            run = Run(P.SCRIPT, l1_cfg, root=f"{root}/l1{time.perf_counter_ns()}")
            run.dir.mkdir(parents=True)
            P.l1_retrain(l1_cfg, copy.deepcopy(teacher).requires_grad_(True), data, run)

        times = {"ours": [], "l1": []}
        for name, fn in (("ours", ours), ("l1", l1), ("ours", ours), ("l1", l1), ("ours", ours)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    cal, ret = statistics.median(times["ours"]), statistics.median(times["l1"])
    report("calibration time, digits cnn, ratio 0.5, 128 samples", cal, "-", " s")
    report(f"L1-norm + {cfg.retrain.epochs} epochs retraining time", ret, "-", " s")
    report("calibration / (L1-norm + retraining) time", cal / ret, "< 0.05")


if __name__ == "__main__":
    main()
