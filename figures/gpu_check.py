"""The GPU check: one short run on one GPU that settles what can only be learnt there, into one JSON file.

    python -m figures.gpu_check                          # on a CUDA machine (sized for <= 8 minutes on one H100)
    python -m figures.gpu_check --device cpu --quick     # tiny sizes, a few steps (about a minute): the tests run it
    python -m figures.gpu_check --only resume,ddp        # some sections only (the environment always runs)

It sits beside the figures pipeline, the other entry point that runs every method (``common`` imports no paper
folder). The check is a list of sections (``SECTIONS``), run in order; each is written to the JSON file (atomically,
``common.atomic``) as soon as it ends, so a run cut short keeps what it measured. A section that raises is recorded
with its error (type, message, the last lines of its traceback) and the check goes on with the next one.
1. ``environment``: torch / CUDA / cuDNN / driver versions, the card's name and ``sm_XY`` against
   ``torch.cuda.get_arch_list()`` (``common.train.runs_on``), its memory, the CPU count and affinity, the loader
   workers ``--workers auto`` gives; the device is resolved here (``common.train.resolve_device``).
2. ``scripts``: every script end to end on the device through the run store (``common.store.execute``, configs
   from ``common.config.build``), into a temporary store: common.pretrain, bip.prune (BiP), bip.magnitude (IMP),
   gmp.prune, seqattn.prune (SA++ and ACDC), seqattn.oneshot, posttrain.prune, on the tiny profile's digits data for a
   few epochs (the digits CNN; ``--quick``: the MLP); each run's ``result.json``, then its export
   (``common.export``'s ``export_run``: ``python -m common.export``), its FLOPs and test accuracy.
3. ``resume``: a dense run stopped within an epoch right after a checkpoint (as a kill would leave it) and resumed,
   against the uninterrupted run: identical with ``--deterministic``, the largest weight difference without.
4. ``jpeg_loader``: images/s through the real loader (``common.data.load_dataset``, ``--workers auto``) of
   Tiny-ImageNet and ImageNet folders of random JPEGs in their on-disk layouts, beside the rate the cost table's
   epoch hours imply.
5. ``step_times``: step time, the epoch time it implies and peak memory at the paper batch sizes (dense, BiP and SA++
   at 256 per GPU, evaluation at 512) for ResNet-50 on 224x224 random tensors on the device, and the ResNet-18
   CIFAR-10 epoch (TensorSplit's on-device crop + flip), each beside the cost table's A100 hours
   (``common.cost.load_times``); ``--quick``: a tiny model at a tiny batch.
6. ``bip_threshold``: BiP's top-k threshold (``bip.scores.Threshold`` through ``common.sparsity.topk_mask``, the
   projection's own call) over 11.2M and 25.6M distinct scores (ResNet-18's and ResNet-50's weights; ``--quick``:
   100k): its time, and whether it keeps exactly n - k of them at the value ``torch.kthvalue`` gives.
7. ``ddp``: the data-parallel path (``common.distributed``, ``train_epoch``) on the device's tensors: 2 gloo ranks on
   the one GPU (on a CPU, 2 CPU ranks) train a few steps; both ranks' weights must be equal afterwards.
8. ``method_steps``: every method's own step code at a paper model size (ResNet-18, 32x32, batch 128) on random
   batches on the device: dense, BiP's two levels, the IMP/OMP masked step, GMP's schedule of mask updates, SA++ and
   ACDC in a sparse phase, post-training reconstruction; step times and ratios to dense (``common.bench.interleaved``).
9. ``bf16_agreement``: bf16 autocast against fp32 on one batch, the loss and gradient relative errors against stated
   tolerances.
10. ``repeatability``: two trainings from one initialization, with and without ``--deterministic``: the largest
    weight difference between the two and the time ratio.
11. ``sparse_inference``: the CSR / BSR models of ``common.bench.SPEED_GOALS`` against their dense models, and on CUDA
    2:4 semi-structured fp16 Linear layers (``torch.sparse.to_sparse_semi_structured``); each output compared.
Per section: ``status`` (ok, failed, skipped or pending), ``seconds``, the peak GPU memory, its measurements and its
``checks`` (named verdicts); ``ok`` at the top is true when every section ran and every check held, and
``failed_checks`` names those that did not. Exit code 0 whatever the sections found, unless the environment section
fails (then nothing else runs): 2 for a user error (no usable CUDA for ``--device cuda``: one ``error:`` line), 1
otherwise. Needs only the packages of requirements.txt.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

DEFAULT_OUT = "figures/out/gpu/gpu-check.json"
BF16_TOLERANCE = {"loss": 0.02, "grad": 0.05}  # relative; bf16 has an 8-bit mantissa (~0.4% per rounding)
TRACEBACK_LINES = 12  # the last lines of a failed section's traceback kept in the JSON


@dataclass
class Check:
    """What every section is given: the device (resolved by the environment section), the sizes (``quick``), a
    temporary folder for its files, and ``save`` to write the JSON so far (a long section's partial results)."""

    device_arg: str
    quick: bool
    tmp: Path
    save: Callable[[], None] = lambda: None
    device: torch.device | None = None


# ---------------------------------------------------------------------------------------------------- helpers
class DeviceBatches:
    """A split of ``steps`` random batches generated on the device (the same ones every epoch)."""

    def __init__(self, shape, num_classes: int, batch_size: int, steps: int, device, seed: int = 0):
        g = torch.Generator(device=device).manual_seed(seed)
        self.batches = [(torch.randn(batch_size, *shape, generator=g, device=device),
                         torch.randint(0, num_classes, (batch_size,), generator=g, device=device))
                        for _ in range(steps)]
        self.num_samples = batch_size * steps

    def __len__(self):
        return len(self.batches)

    def epoch(self, epoch: int, start: int = 0, rank: int = 0, world: int = 1):
        return iter(self.batches[start:])


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _peak_memory(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _reset_peak_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _model(name, shape, device, num_classes=10):
    from common.models import build_model
    from common.train import prepare_model

    torch.manual_seed(0)
    return prepare_model(build_model(name, num_classes, shape), device)


def _dense(model, data):
    from common.train import Optim, make_optimizer, train_epoch

    opt = make_optimizer(model.parameters(), Optim(), 0.01)
    return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0)


def _error(exc: BaseException) -> dict:
    """An exception as JSON: its type, message and the last lines of its traceback."""
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip().splitlines()
    return {"type": type(exc).__name__, "message": str(exc)[:2000], "traceback": lines[-TRACEBACK_LINES:]}


def _say(text: str) -> None:
    print(f"gpu-check: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- 1. environment
def _driver_version() -> str | None:
    """The NVIDIA driver's version ("570.124.06"), from nvidia-smi; None without a driver."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def environment(ctx: Check, out: dict) -> None:
    """Versions, the CPUs, then the device (a user error when CUDA is asked for and unusable)."""
    import numpy
    import torchvision

    from common.data import affinity, auto_workers, describe_cpus, process_cpus
    from common.train import describe_device, driver_cuda_version, resolve_device, runs_on

    out.update(python=platform.python_version(), platform=platform.platform(), torch=torch.__version__,
               torch_cuda=torch.version.cuda, torchvision=torchvision.__version__, numpy=numpy.__version__,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               driver=_driver_version(), driver_cuda=driver_cuda_version(),
               cpus={"count": os.cpu_count(), "affinity": sorted(affinity()), "process_cpus": process_cpus(),
                     "workers_auto": auto_workers(), "torch_threads": torch.get_num_threads(),
                     "line": describe_cpus()})
    ctx.device = resolve_device(ctx.device_arg)
    out["device"] = describe_device(ctx.device)
    if ctx.device.type != "cuda":
        out["gpu"] = None
        return
    index = torch.cuda.current_device() if ctx.device.index is None else ctx.device.index
    capability, archs = torch.cuda.get_device_capability(index), torch.cuda.get_arch_list()
    props = torch.cuda.get_device_properties(index)
    out["gpu"] = {"name": torch.cuda.get_device_name(index), "sm": "sm_{}{}".format(*capability),
                  "arch_list": archs, "memory_bytes": props.total_memory,
                  "multiprocessors": props.multi_processor_count, "count": torch.cuda.device_count(),
                  "bf16": torch.cuda.is_bf16_supported()}
    out["checks"] = {"kernels_for_card": runs_on(capability, archs)}


# ---------------------------------------------------------------------------------------------------- 2. scripts
# (name, script, the config's overrides): the tiny profile's digits data, a few epochs each. The pruning runs that
# start from a dense model share one (the same dataset, model, recipe and val_size as the common.pretrain row).
def script_runs(quick: bool) -> list[tuple[str, str, dict]]:
    dense = 2 if quick else 6
    start = {"pretrain.epochs": dense, "val_size": 100}
    return [
        ("pretrain", "common.pretrain", {"train.epochs": dense, "val_size": 100}),
        ("bip", "bip.prune", {**start, "epochs": 1, "target_sparsity": 0.5}),
        ("imp", "bip.magnitude", {**start, "epochs": 1, "target_sparsity": 0.5}),
        ("gmp", "gmp.prune", {**start, "epochs": 3, "stabilize_epochs": 1, "prune_epochs": 1,
                              "finetune_lr.milestones": (1.0,), "target_sparsity": 0.5}),
        ("sapp", "seqattn.prune", {"method": "sapp", "epochs": 2}),
        ("acdc", "seqattn.prune", {"method": "acdc", "epochs": 2}),
        ("oneshot", "seqattn.oneshot", {"pretrain.epochs": dense, "finetune.epochs": 1, "sparsities": (0.5,)}),
        ("posttrain", "posttrain.prune", {**start, "phase1_epochs": 1, "phase2_epochs": 1, "samples": 64}),
    ]


def scripts(ctx: Check, out: dict) -> None:
    """Each script's run computed through the store, then exported; a failing one is recorded and the next runs."""
    import importlib
    import json

    from common import config as C
    from common.export import export_run
    from common.store import Run, execute

    root = ctx.tmp / "runs"
    model = "mlp" if ctx.quick else "cnn"
    out.update(store=str(root), model=model, dataset="digits", runs={})
    checks = out["checks"] = {}
    for name, script, overrides in script_runs(ctx.quick):
        record = out["runs"][name] = {"script": script}
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(script)
            cfg = C.build(module.Config, model=model, device=str(ctx.device), runs_dir=str(root), progress="off",
                          **overrides)
            run = Run(script, cfg)
            result = execute(module, cfg)
            record.update(hash=run.hash, run_seconds=time.perf_counter() - t0,
                          result_json=(run.dir / "result.json").is_file())
            last_point = (result.get("points") or [{}])[-1]  # seqattn.oneshot: its points alone hold accuracies
            record["test_acc"] = result.get("test_acc", last_point.get("test_acc"))
            for key in ("sparsity", "flops", "effective_flops"):
                record[key] = result.get(key)
            if script == "seqattn.oneshot":  # one model per sparsity point, none kept: nothing to export
                record["export"] = None
            else:
                t1 = time.perf_counter()
                report = json.loads((export_run(run.dir) / "sparsity.json").read_text())
                record["export"] = {"file": report["file"], "format": report["format"], "flops": report["flops"],
                                    "effective_flops": report["effective_flops"],
                                    "seconds": time.perf_counter() - t1}
            acc = record["test_acc"]
            checks[name] = bool(record["result_json"] and isinstance(acc, float) and 0.0 <= acc <= 1.0)
        except Exception as exc:  # noqa: BLE001 - recorded; the other scripts still run
            record["error"] = _error(exc)
            checks[name] = False
        _say(f"  {name:10s} {script:16s} " + (f"test_acc {record['test_acc']:.3f}" if "error" not in record else
                                                f"FAILED: {record['error']['type']}: {record['error']['message']}"))
        ctx.save()
    pretrain = out["runs"]["pretrain"]
    checks["dense_model_learns"] = (pretrain.get("test_acc") or 0.0) >= 0.5  # digits: chance is 0.1
    dense_runs = root / "common.pretrain"
    out["dense_runs"] = len(list(dense_runs.iterdir())) if dense_runs.is_dir() else 0


# ---------------------------------------------------------------------------------------------------- 3. resume
class _Killed(Exception):
    """Stands in for a kill right after a chosen checkpoint was written: nothing after it happens."""


@contextlib.contextmanager
def _killed_after(n: int):
    """``Run.save_checkpoint`` raises ``_Killed`` once its ``n``-th checkpoint is on disk (counted from here)."""
    from common import store

    save, saved = store.Run.save_checkpoint, [0]

    def killing(self, state):
        save(self, state)
        saved[0] += 1
        if saved[0] == n:
            raise _Killed(f"checkpoint {n}")

    store.Run.save_checkpoint = killing
    try:
        yield saved
    finally:
        store.Run.save_checkpoint = save


def resume(ctx: Check, out: dict) -> None:
    """A dense run (digits, 3 epochs of 11 batches) checkpointing every 4 batches and at every epoch end, killed after
    its 4th checkpoint (batch 4 of epoch 2) and resumed, against the same run computed without a break."""
    from common import config as C
    from common import pretrain
    from common.store import Run, execute, read_log
    from common.train import set_deterministic

    checks = out["checks"] = {}
    for name, deterministic in (("deterministic", True), ("default", False)):
        root = ctx.tmp / "resume" / name
        cfg = C.build(pretrain.Config, model="mlp" if ctx.quick else "cnn", val_size=100, device=str(ctx.device),
                      progress="off", deterministic=deterministic, runs_dir=str(root / "straight"),
                      **{"train.epochs": 3})
        broken = C.replace(cfg, runs_dir=str(root / "broken"), checkpoint_every_steps=4, checkpoint_epoch_minutes=0.0)
        try:
            execute(pretrain, cfg)
            with _killed_after(4):
                with contextlib.suppress(_Killed):
                    execute(pretrain, broken)
            killed = not Run(pretrain.SCRIPT, broken).done
            execute(pretrain, broken)
        finally:
            set_deterministic(False)
        a, b = (torch.load(Run(pretrain.SCRIPT, c).dir / "model.pt", weights_only=True) for c in (cfg, broken))
        gap = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
        resumes = [r for r in read_log(Run(pretrain.SCRIPT, broken).dir) if r.get("event") == "resume"]
        out[name] = {"killed_mid_run": killed, "resumed_from": resumes,
                     "identical": all(torch.equal(a[k], b[k]) for k in a), "max_abs_weight_difference": gap,
                     "test_acc": [Run(pretrain.SCRIPT, c).result()["test_acc"] for c in (cfg, broken)]}
        checks[f"{name}_resumed_within_an_epoch"] = killed and any("from_step" in r for r in resumes)
    checks["deterministic_identical"] = out["deterministic"]["identical"]
    out["how"] = ("common.pretrain through the run store, --checkpoint-every-steps 4 --checkpoint-epoch-minutes 0, "
                  "stopped right after its 4th checkpoint, then run again (it resumes), against the run without a "
                  "break; once with --deterministic, once without")


# ---------------------------------------------------------------------------------------------------- 4. JPEG loader
def _write_jpegs(paths: list[Path], size: tuple[int, int], distinct: int, seed: int = 0) -> None:
    """Random smooth RGB JPEGs (noise upsampled 8x: about the size of a photo's JPEG, not of white noise) at
    ``paths``; ``distinct`` images are encoded, the other paths are hard links to them (decoding is the cost timed)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    originals = []
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        if i < distinct:
            small = rng.integers(0, 256, (max(h // 8, 1), max(w // 8, 1), 3), dtype=np.uint8)
            Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path, quality=90)
            originals.append(path)
        else:
            os.link(originals[i % distinct], path)


def tiny_imagenet_folder(root: Path, classes: int, per_class: int, distinct: int) -> None:
    """``root/tiny-imagenet-200`` in the official layout: wnids.txt, train/<wnid>/images/*.JPEG, val/images and
    val/val_annotations.txt (64x64 images; two val images per class)."""
    base = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(classes)]
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    train = [base / "train" / w / "images" / f"{w}_{k}.JPEG" for w in wnids for k in range(per_class)]
    val = [(f"val_{i}.JPEG", w) for i, w in enumerate(wnids * 2)]
    _write_jpegs(train, (64, 64), distinct)
    _write_jpegs([base / "val" / "images" / name for name, _ in val], (64, 64), len(val), seed=1)
    (base / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in val))


def imagenet_folder(root: Path, classes: int, per_class: int, distinct: int) -> None:
    """``root/imagenet/{train,val}/<wnid>/*.JPEG`` at 500x375 (ImageNet's most common size); one val image a class."""
    base = root / "imagenet"
    wnids = [f"n{i:08d}" for i in range(classes)]
    _write_jpegs([base / "train" / w / f"{w}_{k}.JPEG" for w in wnids for k in range(per_class)], (500, 375), distinct)
    _write_jpegs([base / "val" / w / f"val_{w}.JPEG" for w in wnids], (500, 375), classes, seed=1)


def jpeg_loader(ctx: Check, out: dict) -> None:
    """One epoch of each training split through ``load_dataset`` onto the device: images/s over the whole epoch and
    after its first batch (the workers' start-up apart), beside the rate the cost table's epoch hours need."""
    from common.cost import load_times
    from common.data import load_dataset, resolve_workers

    times = load_times()
    root = ctx.tmp / "jpeg"
    workers = resolve_workers("auto")
    batches = 4 if ctx.quick else max(8, 2 * workers)  # every worker decodes at least two batches
    # (batch size, distinct JPEGs) per dataset
    sizes = {"tinyimagenet": (8, 8), "imagenet": (4, 4)} if ctx.quick else {"tinyimagenet": (128, 512),
                                                                             "imagenet": (256, 256)}
    for name, model, write in (("tinyimagenet", "resnet18", tiny_imagenet_folder),
                               ("imagenet", "resnet50", imagenet_folder)):
        batch, distinct = sizes[name]
        t0 = time.perf_counter()
        write(root, 4, batch * batches // 4, distinct)
        written = time.perf_counter() - t0
        data = load_dataset(name, root=str(root), device=ctx.device, batch_size=batch, workers="auto")
        seen, first, t0 = 0, None, time.perf_counter()
        for x, _ in data.train.epoch(0):
            _sync(ctx.device)
            seen += x.shape[0]
            if first is None:
                first = (time.perf_counter() - t0, seen)
        seconds = time.perf_counter() - t0
        needed = times.samples(name) / (3600 * times.hours(name, model))
        out[name] = {"images": seen, "distinct_jpegs": distinct, "batch_size": batch, "workers": workers,
                     "input": list(x.shape[1:]), "seconds": seconds, "images_per_s": seen / seconds,
                     "images_per_s_after_first_batch": (seen - first[1]) / max(seconds - first[0], 1e-9),
                     "first_batch_seconds": first[0], "write_seconds": written,
                     "table_a100_images_per_s": needed}
        _say(f"  {name:12s} {seen / seconds:8.0f} images/s with {workers} workers (the table's A100 epoch needs "
             f"{needed:.0f})")
    out["how"] = ("random smooth JPEGs in each dataset's on-disk layout, read from the page cache (hard links to a "
                  "few distinct files: decoding, augmentation and the copy to the device are timed, not the disk)")


# ---------------------------------------------------------------------------------------------------- 5. step times
def _step_row(ctx: Check, times, label: str, dataset: str, table_model: str, method: str, build, arch: str, shape,
              classes: int, batch: int, steps: int) -> dict:
    """Time a pass of ``build(model, data)`` over ``steps`` batches (the best of two, after a warm-up pass) and what
    it implies for an epoch of ``dataset``, beside the table's A100 hours for it."""
    device = ctx.device
    data = DeviceBatches(shape, classes, batch, steps, device)
    model = _model(arch, shape, device, classes)
    _reset_peak_memory(device)
    run = build(model, data)
    run()  # warm-up (cudnn.benchmark picks its kernels)
    step_s = min(_timed(run, device) for _ in range(2)) / steps
    hours = times.samples(dataset) / batch * step_s / 3600
    table = times.hours(dataset, table_model) * times.step(method)
    row = {"model": arch, "input": list(shape), "batch_size": batch, "steps_per_pass": steps, "step_ms": 1e3 * step_s,
           "images_per_s": batch / step_s, "epoch_hours": hours, "table_a100_epoch_hours": table,
           "table": f"{dataset}/{table_model} x step cost {method}", "peak_memory_bytes": _peak_memory(device),
           "input_bytes": sum(x.numel() * x.element_size() for x, _ in data.batches)}
    _say(f"  {label:28s} {row['step_ms']:8.1f} ms/step  {hours:8.4f} h/epoch  (table, A100: {table:.4f} h)")
    del model, data, run
    _reset_peak_memory(device)
    return row


def step_times(ctx: Check, out: dict) -> None:
    """ResNet-50 at 224x224 at the paper batch sizes (dense 256, BiP 256, SA++ 256 per GPU, evaluation 512), and the
    ResNet-18 CIFAR-10 epoch; peak memory includes the batches held on the device (``input_bytes``)."""
    from common.cost import load_times
    from common.train import evaluate

    times = load_times()
    q = ctx.quick
    arch, shape, classes = ("cnn", (3, 16, 16), 10) if q else ("resnet50", (3, 224, 224), 1000)
    rows = (("dense", 256, lambda m, d: _dense(m, d)),
            ("bip", 256, lambda m, d: _bip(m, d, ctx.device)),
            ("sapp", 256, lambda m, d: _seqattn(m, d, "attention", 4 if q else 16)),
            ("eval", 512, lambda m, d: (lambda: evaluate(m, d))))
    for method, batch, build in rows:
        label = f"imagenet_resnet50_{method}_{batch}"
        out[label] = _step_row(ctx, times, label, "imagenet", "resnet50", method, build, arch, shape, classes,
                               4 if q else batch, 2 if q else 6)
    out["cifar10_resnet18_dense_128"] = epoch_time(ctx, times, *((2, "cnn", 8) if q else (60, "resnet18", 128)))
    out["quick"] = q  # tiny model and batches: not comparable with the table
    out["checks"] = {"finite": all(math.isfinite(r["step_ms"]) for r in out.values() if isinstance(r, dict))}


def epoch_time(ctx: Check, times, batches: int, arch: str = "resnet18", batch: int = 128) -> dict:
    """ResNet-18 CIFAR-10 epoch seconds: ``batches`` batches timed through TensorSplit, extrapolated to 50k images."""
    from common.data import TensorSplit

    device = ctx.device
    _reset_peak_memory(device)
    model = _model(arch, (3, 32, 32), device)
    g = torch.Generator(device=device).manual_seed(0)
    n = batch * batches
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, device=device, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g, device=device)
    split = TensorSplit(x, y, batch_size=batch, train=True, pad=4, flip=True, mean=(0.49, 0.48, 0.45),
                        std=(0.25, 0.24, 0.26))
    run = _dense(model, split)
    run()  # warm-up (cudnn.benchmark picks its kernels)
    seconds = _timed(run, device)
    epoch_s = seconds * times.samples("cifar10") / n
    table = times.hours("cifar10", "resnet18") * times.step("dense")
    _say(f"  {'cifar10_resnet18_dense_128':28s} {1e3 * seconds / batches:8.1f} ms/step  {epoch_s / 3600:8.4f} h/epoch"
         f"  (table, A100: {table:.4f} h)")
    return {"model": arch, "batch_size": batch, "timed_images": n, "timed_seconds": seconds,
            "step_ms": 1e3 * seconds / batches, "epoch_seconds": epoch_s, "epoch_hours": epoch_s / 3600,
            "table_a100_epoch_hours": table, "peak_memory_bytes": _peak_memory(device),
            "how": f"{batches} batches of {batch} with TensorSplit's on-device crop (4-pixel zero padding) + flip, "
                   f"timed after one warm-up pass and extrapolated to the 50000 training images"}


# ---------------------------------------------------------------------------------------------------- 6. BiP threshold
def bip_threshold(ctx: Check, out: dict) -> None:
    """BiP's projection threshold at 90% over n distinct scores (a shuffled ramp of exactly representable values):
    the first call (a full selection), the best of five (on a CPU the later calls search a band around the last
    threshold, on CUDA each is a full selection), the kept count against n - k and the threshold against
    ``torch.kthvalue``'s."""
    from bip.scores import Threshold, kth_smallest_reference
    from common import sparsity as S

    device, sparsity = ctx.device, 0.9
    checks = out["checks"] = {}
    for n in ((100_000,) if ctx.quick else (11_200_000, 25_600_000)):
        g = torch.Generator().manual_seed(0)
        scores = ((torch.randperm(n, generator=g) - n // 2).float() * 2.0 ** -20).to(device)
        k, threshold, mask = S.num_to_prune(sparsity, n), Threshold(), []
        ms = [1e3 * _timed(lambda: mask.append(S.topk_mask(scores, sparsity, ties="prune_all", kth=threshold)),
                           device) for _ in range(5)]
        kept = int(mask[-1].sum())
        same = bool(threshold.value.cpu() == kth_smallest_reference(scores.cpu(), k))  # CUDA's kthvalue: one block
        out[str(n)] = {"scores": n, "sparsity": sparsity, "pruned_k": k, "kept": kept, "expected_kept": n - k,
                       "first_ms": ms[0], "best_ms": min(ms), "threshold_equals_kthvalue": same}
        checks[f"exact_{n}"] = kept == n - k and same
        _say(f"  {n:>11,d} scores: first {ms[0]:8.2f} ms, best {min(ms):8.2f} ms, kept {kept:,d} of {n - k:,d}")


# ---------------------------------------------------------------------------------------------------- 7. DDP
DDP_BATCH, DDP_STEPS = 64, 4


def _ddp_data(device, steps: int = DDP_STEPS):
    """The same random digits-shaped batches in every process (drawn on the CPU from one seed, then moved)."""
    from common.data import TensorSplit

    g = torch.Generator().manual_seed(0)
    n = DDP_BATCH * steps
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return TensorSplit(x.to(device), y.to(device), batch_size=DDP_BATCH, train=True, seed=0)


def _ddp_train(device) -> torch.Tensor:
    """The MLP after one epoch of ``train_epoch`` (DDP across the ranks of the current group, if any): flat weights."""
    model = _model("mlp", (1, 8, 8), device)
    _dense(model, _ddp_data(device))()
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in model.parameters()])


def _ddp_rank(rank: int, device: str, port: int, folder: str) -> None:
    """One of 2 ranks (a spawned process): gloo on the given device, its weights saved to ``folder/rank<r>.pt``."""
    os.environ["PRUNING_DDP_BACKEND"] = "gloo"
    torch.set_num_threads(1)
    from common import distributed

    with distributed.group(rank, 2, rank, "127.0.0.1", port):
        world = distributed.world_size()  # 2 once the group is joined (alone, each rank would train the same steps)
        weights = _ddp_train(torch.device(device))
    torch.save({"weights": weights, "world": torch.tensor(world)}, Path(folder) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp(ctx: Check, out: dict, timeout_s: float = 300.0) -> None:
    """2 spawned ranks train the MLP for a few steps on the same global batches; their weights must be equal, and
    their distance to one process training on the whole batches is recorded (bf16 on CUDA: not zero)."""
    import torch.multiprocessing as mp

    folder = ctx.tmp / "ddp"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    procs = mp.start_processes(_ddp_rank, args=(str(ctx.device), _free_port(), str(folder)), nprocs=2, join=False,
                               start_method="spawn")
    while not procs.join(timeout=1):  # re-raises a rank's exception
        if time.perf_counter() - t0 > timeout_s:
            for p in procs.processes:
                p.kill()
            raise TimeoutError(f"the 2 DDP ranks did not finish within {timeout_s:.0f} s")
    saved = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]
    ranks = [s["weights"] for s in saved]
    single = _ddp_train(ctx.device)
    out.update(backend="gloo", ranks=2, device=str(ctx.device), model="mlp", steps=DDP_STEPS,
               global_batch=DDP_BATCH, seconds_with_start=time.perf_counter() - t0,
               max_abs_difference_between_ranks=float((ranks[0] - ranks[1]).abs().max()),
               max_abs_difference_to_one_process=float((ranks[0] - single).abs().max()))
    out["checks"] = {"both_ranks_in_one_group": all(int(s["world"]) == 2 for s in saved),
                     "ranks_equal": bool(torch.equal(ranks[0], ranks[1]))}


# ---------------------------------------------------------------------------------------------------- 8. method steps
def _masked(model, data, sparsity=0.9):
    """The IMP/OMP step: a magnitude round's mask (``bip.masks``, global top-k) kept through SGD by the shared
    enforcement."""
    from bip.masks import magnitude_masks
    from common import sparsity as S
    from common.train import Optim, make_optimizer, train_epoch

    opt = make_optimizer(model.parameters(), Optim(), 0.01)
    masks = S.Masks(S.prunable(model, ("last",)))
    masks.set(magnitude_masks(model, sparsity), opt)
    return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0,
                               before_step=lambda s: masks.mask_grads(), after_step=lambda s: masks.apply())


def _bip(model, data, device):
    from bip.bench import bilevel_epoch

    return bilevel_epoch(model, data, 0.9, device)


def _posttrain(model, data, device, epochs: int):
    from posttrain import groups as G
    from posttrain import reconstruct as R

    x = torch.cat([b[0] for b in data.batches])
    teacher = model.eval().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True)
    plan = G.plan(student, x[:1], 0.5, "group-l2", "global", ())
    targets = R.TeacherOutputs(teacher, x, plan.kept)
    plan.remove()
    return lambda: R.reconstruct(student, targets, x, epochs=epochs, lr=1e-3, batch_size=64, seed=0, kept=plan.kept,
                                 balanced=True)


def _gmp(model, data, steps):
    """GMP's pruning stage (``gmp.schedule.GradualPruner``): the cubic schedule's mask updates every few steps, inside
    the training loop."""
    from common.train import Optim, make_optimizer, train_epoch
    from gmp.schedule import GradualPruner

    opt = make_optimizer(model.parameters(), Optim(), 0.01)
    every = max(1, steps // 10)
    pruner = GradualPruner(model, opt, final_sparsity=0.9, initial_sparsity=0.05, start_step=0, end_step=10 * every,
                           every=every, exclude=("first", "last"))
    return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0,
                               before_step=lambda s: pruner.mask_grads(), after_step=pruner.step)


def _seqattn(model, data, kind: str, block: int):
    """SA++ (kind attention) or ACDC (kind mask) in a sparse phase of ``seqattn.controller.PhaseController``: the mask
    applied, as ``seqattn.bench`` measures."""
    from common.train import train_epoch
    from seqattn.bench import sparse_phase

    opt = sparse_phase(model, "sapp" if kind == "attention" else "acdc", block)
    return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0)


def method_steps(ctx: Check, out: dict) -> None:
    """Each method's steps timed against dense training on the same batches (interleaved rounds)."""
    from common.bench import interleaved

    device, quick = ctx.device, ctx.quick
    steps, rounds = (3, 1) if quick else (50, 3)
    cifar = ("cnn", (1, 8, 8), 32) if quick else ("resnet18", (3, 32, 32), 128)
    methods = out["methods"] = {}
    skipped = out["skipped"] = []

    def method(name, build, with_dense=True, model=cifar, n_steps=steps):
        arch, shape, bs = model
        _reset_peak_memory(device)
        try:
            data = DeviceBatches(shape, 10, bs, n_steps, device)
            fns = {name: build(_model(arch, shape, device), data)}
        except ImportError as exc:  # an optional package (torch-pruning) missing
            skipped.append({"method": name, "why": f"{type(exc).__name__}: {exc}"})
            return
        if with_dense:
            fns["dense"] = _dense(_model(arch, shape, device), data)
        t = interleaved({k: (lambda f=f: (f(), _sync(device))) for k, f in fns.items()}, rounds)
        methods[name] = {"model": arch, "input": list(shape), "batch_size": bs, "steps": n_steps,
                         "seconds": t[name], "step_ms": 1e3 * t[name] / n_steps,
                         **({"ratio_to_dense": t[name] / t["dense"], "dense_step_ms": 1e3 * t["dense"] / n_steps}
                            if with_dense else {}),
                         "peak_memory_bytes": _peak_memory(device)}
        _say(f"  {name:22s} {methods[name]['step_ms']:8.2f} ms/step"
             + (f"  {methods[name]['ratio_to_dense']:.3f}x dense" if with_dense else ""))

    method("dense", lambda m, d: _dense(m, d), with_dense=False)
    method("bip", lambda m, d: _bip(m, d, device))
    method("masked_imp_omp", lambda m, d: _masked(m, d))
    method("gmp", lambda m, d: _gmp(m, d, steps))
    method("sapp", lambda m, d: _seqattn(m, d, "attention", 4 if quick else 16))
    method("acdc", lambda m, d: _seqattn(m, d, "mask", 4 if quick else 16))
    method("posttrain_reconstruct", lambda m, d: _posttrain(m, d, device, 1), with_dense=False,
           model=("cnn", (1, 8, 8), 64) if quick else ("resnet18", (3, 32, 32), 64), n_steps=2 if quick else 8)
    out["ratios"] = {k: methods[s]["ratio_to_dense"] for k, s in
                     (("bip_over_dense", "bip"), ("sapp_over_dense", "sapp"), ("masked_over_dense", "masked_imp_omp"))
                     if s in methods}
    out["checks"] = {"finite": all(math.isfinite(m["seconds"]) for m in methods.values())}


# ---------------------------------------------------------------------------------------------------- 9. bf16
def bf16_agreement(model, x, y) -> dict:
    """Relative errors of the bf16-autocast loss and gradient against fp32 on the same batch (BN in eval mode, so
    both see the same normalization)."""
    device = x.device
    model.eval()

    def loss_and_grad(bf16: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1).float() for p in model.parameters() if p.grad is not None])
        return loss.detach().float(), grad

    with torch.backends.cudnn.flags(allow_tf32=False) if device.type == "cuda" else contextlib.nullcontext():
        torch.backends.cuda.matmul.allow_tf32, tf32 = False, torch.backends.cuda.matmul.allow_tf32
        try:
            loss32, grad32 = loss_and_grad(False)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    loss16, grad16 = loss_and_grad(True)
    model.zero_grad(set_to_none=True)
    out = {"loss_fp32": float(loss32), "loss_bf16": float(loss16),
           "loss_rel_error": float((loss16 - loss32).abs() / loss32.abs().clamp_min(1e-12)),
           "grad_rel_error": float((grad16 - grad32).norm() / grad32.norm().clamp_min(1e-12)),
           "tolerance": BF16_TOLERANCE}
    out["ok"] = out["loss_rel_error"] <= BF16_TOLERANCE["loss"] and out["grad_rel_error"] <= BF16_TOLERANCE["grad"]
    return out


def _cifar(ctx: Check):
    return ("cnn", (1, 8, 8), 32) if ctx.quick else ("resnet18", (3, 32, 32), 128)


def bf16_section(ctx: Check, out: dict) -> None:
    arch, shape, bs = _cifar(ctx)
    batch = DeviceBatches(shape, 10, bs, 1, ctx.device, seed=1).batches[0]
    out.update(model=arch, batch_size=bs, **bf16_agreement(_model(arch, shape, ctx.device), *batch))
    out["checks"] = {"within_tolerance": out.pop("ok")}


# ---------------------------------------------------------------------------------------------------- 10. repeatability
def repeatability(device, arch: str, shape, batch_size: int, steps: int) -> dict:
    """Two trainings of the same model on the same batches from the same initialization, with and without
    ``--deterministic``: the largest weight difference between the two (0.0: bit-identical), and the time ratio."""
    from common.train import set_deterministic

    data = DeviceBatches(shape, 10, batch_size, steps, device, seed=2)
    out = {}
    for name, on in (("default", False), ("deterministic", True)):
        set_deterministic(on)
        if not on and device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        weights, seconds = [], []
        for _ in range(2):
            model = _model(arch, shape, device)
            run = _dense(model, data)
            seconds.append(_timed(run, device))
            weights.append(torch.cat([p.detach().flatten().float() for p in model.parameters()]))
        out[name] = {"max_abs_weight_difference": float((weights[0] - weights[1]).abs().max()),
                     "seconds": min(seconds)}
    set_deterministic(False)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out["deterministic_time_ratio"] = out["deterministic"]["seconds"] / out["default"]["seconds"]
    out["how"] = f"{arch}, {steps} SGD steps of batch {batch_size}, twice each way, from one initialization"
    return out


def repeatability_section(ctx: Check, out: dict) -> None:
    arch, shape, bs = _cifar(ctx)
    out.update(repeatability(ctx.device, arch, shape, bs, 2 if ctx.quick else 50))
    out["checks"] = {"deterministic_identical": out["deterministic"]["max_abs_weight_difference"] == 0.0}


# ---------------------------------------------------------------------------------------------------- 11. sparse
def _per_call_ms(fns: dict, device, calls: int, rounds: int) -> dict:
    """Milliseconds per call of each function, ``calls`` calls per timing, rounds interleaved as common.bench does."""
    from common.bench import interleaved

    t = interleaved({k: (lambda f=f: ([f() for _ in range(calls)], _sync(device))) for k, f in fns.items()}, rounds)
    return {k: 1e3 * v / calls for k, v in t.items()}


def sparse_inference(device, quick: bool) -> dict:
    """Dense vs sparse forward passes on ``device``: the CSR / BSR models of ``common.bench.SPEED_GOALS`` (what
    ``common.export --format csr|bsr`` computes with) and 2:4 semi-structured Linear layers (CUDA only)."""
    from common import sparse as SP
    from common.bench import SPEED_GOALS, random_pruned, speed_model

    calls, rounds = (2, 1) if quick else (50, 5)
    out = {}
    for name, sparsity, fmt, block, label, goal in SPEED_GOALS:
        _, model, shape, exclude = speed_model(name)
        random_pruned(model, sparsity, block if fmt == "bsr" else 0, exclude)
        key = f"{name}_{fmt}{block or ''}_{round(100 * sparsity)}"
        try:
            with SP.quiet(), torch.no_grad():
                sparse, _ = SP.sparsify(model, fmt, block, shape, when="all")
                model, sparse = model.to(device), sparse.to(device)
                x = torch.randn(64, *shape, device=device)
                ms = _per_call_ms({"dense": lambda: model(x), "sparse": lambda: sparse(x)}, device, calls, rounds)
                out[key] = {"what": label, "batch": 64, "dense_ms": ms["dense"], "sparse_ms": ms["sparse"],
                            "speedup": ms["dense"] / ms["sparse"], "goal_on_cpu": goal,
                            "equal": bool(SP.agrees(sparse(x), model(x)))}
        except (RuntimeError, NotImplementedError) as exc:  # a kernel this device / build lacks
            out[key] = {"what": label, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    if device.type != "cuda":
        out["semi_structured_2_4"] = {"skipped": "2:4 semi-structured kernels (cuSPARSELt / CUTLASS) run on CUDA only"}
        return out
    out["semi_structured_2_4"] = semi_structured(device, calls, rounds)
    return out


def semi_structured(device, calls: int, rounds: int) -> dict:
    """fp16 Linear layers with a 2:4 pattern (two of every four consecutive inputs kept), dense against
    ``to_sparse_semi_structured``: ms per call and whether the outputs agree (fp16 tolerance)."""
    from torch.sparse import to_sparse_semi_structured

    out = {}
    for name, (rows, cols), batch in (("lenet300_fc1", (300, 784), 64), ("criteo_fc1", (400, 390), 64),
                                      ("square_4096", (4096, 4096), 4096)):
        rows, cols = (math.ceil(n / 128) * 128 for n in (rows, cols))  # the kernels' shape multiples
        try:
            g = torch.Generator(device=device).manual_seed(0)
            w = torch.randn(rows, cols, generator=g, device=device, dtype=torch.float16)
            w = w * torch.tensor([1, 1, 0, 0], device=device, dtype=w.dtype).repeat(rows, cols // 4)
            x = torch.randn(batch, cols, generator=g, device=device, dtype=torch.float16)
            ws = to_sparse_semi_structured(w)
            with torch.no_grad():
                linear = torch.nn.functional.linear
                ms = _per_call_ms({"dense": lambda: linear(x, w), "sparse": lambda: linear(x, ws)}, device, calls,
                                  rounds)
                equal = bool(torch.allclose(linear(x, ws).float(), linear(x, w).float(), rtol=1e-2, atol=1e-1))
            out[name] = {"shape": [rows, cols], "batch": batch, "dense_ms": ms["dense"], "sparse_ms": ms["sparse"],
                         "speedup": ms["dense"] / ms["sparse"], "equal": equal}
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            out[name] = {"shape": [rows, cols], "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


def sparse_outputs_agree(result: dict) -> bool:
    """Every sparse measurement that ran gave the dense output (a kernel that is missing is recorded, not failed)."""
    sparse = result.get("sparse_inference") or {}
    entries = [v for k, v in sparse.items() if k != "semi_structured_2_4"]
    entries += [v for v in (sparse.get("semi_structured_2_4") or {}).values() if isinstance(v, dict)]
    return all(e.get("equal", True) for e in entries)


def sparse_section(ctx: Check, out: dict) -> None:
    measured = sparse_inference(ctx.device, ctx.quick)
    out.update(measured, checks={"sparse_outputs_equal_dense": sparse_outputs_agree({"sparse_inference": measured})})


# ---------------------------------------------------------------------------------------------------- the run
SECTIONS = {
    "environment": environment,
    "scripts": scripts,
    "resume": resume,
    "jpeg_loader": jpeg_loader,
    "step_times": step_times,
    "bip_threshold": bip_threshold,
    "ddp": ddp,
    "method_steps": method_steps,
    "bf16_agreement": bf16_section,
    "repeatability": repeatability_section,
    "sparse_inference": sparse_section,
}


def _settle(device) -> None:
    """Undo what a section may have left set for the process: --deterministic, a stop request, cached memory."""
    from common.train import clear_stop, set_deterministic

    set_deterministic(False)
    clear_stop()
    if device is not None and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.empty_cache()


def _verdict(result: dict) -> None:
    """``ok`` and ``failed_checks`` from the sections so far."""
    failed = [f"{name}.{check}" for name, s in result["sections"].items()
              for check, held in (s.get("checks") or {}).items() if not held]
    result["failed_checks"] = failed
    result["ok"] = not failed and all(s["status"] in ("ok", "skipped") for s in result["sections"].values())


def run_check(device_arg: str, quick: bool, out: Path, only: list[str] | None = None) -> int:
    """Every section in order (``only``: those and the environment), the JSON rewritten after each; the exit code."""
    from common.atomic import atomic_write_json
    from common.errors import UserError

    names = [n for n in SECTIONS if only is None or n == "environment" or n in only]
    result = {"device_arg": device_arg, "quick": quick, "started": datetime.now(timezone.utc).isoformat(),
              "sections": {n: {"status": "pending" if n in names else "skipped", **({} if n in names else
                               {"why": "not asked for (--only)"})} for n in SECTIONS}}
    t_start = time.perf_counter()

    def save():
        result["total_seconds"] = time.perf_counter() - t_start
        _verdict(result)
        atomic_write_json(out, result)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Check(device_arg, quick, Path(tmp), save)
        for i, name in enumerate(names, 1):
            section = result["sections"][name] = {"status": "running"}
            _say(f"[{i}/{len(names)}] {name}")
            if ctx.device is not None:
                _reset_peak_memory(ctx.device)
            t0 = time.perf_counter()
            try:
                SECTIONS[name](ctx, section)
                section["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 - recorded; the next section runs
                section.update(status="failed", error=_error(exc))
            finally:
                section["seconds"] = time.perf_counter() - t0
                if ctx.device is not None:
                    section["peak_memory_bytes"] = _peak_memory(ctx.device)
                _settle(ctx.device)
            failed = [c for c, held in (section.get("checks") or {}).items() if not held]
            _say(f"[{i}/{len(names)}] {name}: {section['status']} in {section['seconds']:.1f} s"
                 + (f": {section['error']['type']}: {section['error']['message']}" if section["status"] == "failed"
                    else f", checks failed: {', '.join(failed)}" if failed else ""))
            if name == "environment" and section["status"] == "failed":
                for rest in names[i:]:
                    result["sections"][rest] = {"status": "skipped", "why": "the environment section failed"}
                save()
                error = section["error"]
                if error["type"] == "UserError":
                    raise UserError(error["message"])
                print(f"error: the environment section failed: {error['type']}: {error['message']} (see {out})",
                      file=sys.stderr)
                return 1
            save()
    failed = [n for n, s in result["sections"].items() if s["status"] == "failed"] + result["failed_checks"]
    _say(f"wrote {out} in {result['total_seconds']:.0f} s: " + ("ok" if result["ok"] else
                                                                 f"not ok (failed: {', '.join(failed)})"))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m figures.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"the JSON file to write (default {DEFAULT_OUT})")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny models, a few steps (about a minute on a CPU)")
    parser.add_argument("--only", default="", help="comma-separated sections to run (the environment always runs): "
                                                   + ", ".join(SECTIONS))
    args = parser.parse_args(argv)
    from common.cli import exit_code
    from common.errors import UserError
    from common.train import check_device

    def action():
        check_device(args.device)
        only = [s.strip() for s in args.only.split(",") if s.strip()] or None
        unknown = [s for s in only or () if s not in SECTIONS]
        if unknown:
            raise UserError(f"--only {','.join(unknown)}: no such section; choose among {', '.join(SECTIONS)}")
        return run_check(args.device, args.quick, Path(args.out), only)

    code = [0]
    status = exit_code(lambda: code.__setitem__(0, action()))
    return status or code[0]


if __name__ == "__main__":  # run as figures.gpu_check, not __main__: the spawned DDP ranks import its functions
    from figures import gpu_check

    raise SystemExit(gpu_check.main())
