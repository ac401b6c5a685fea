"""A GPU check of every method at a paper model size, written to one JSON file (python -m common.gpu_check).

    python -m common.gpu_check                          # on a CUDA machine (under 8 minutes on one GPU)
    python -m common.gpu_check --device cpu --quick     # tiny sizes, a few steps: what the tests run

Every method runs its own step code (the repository's functions, nothing re-implemented) for ``--steps`` steps on
random data generated on the device (no dataset is read): dense training (``common.train.train_epoch``), BiP's two
levels (``bip.prune.BiLevelSteps``), the IMP/OMP magnitude step (``common.sparsity.Masks`` through ``train_epoch``),
GMP's cubic schedule of mask updates (``gmp.schedule.PruningSteps``), SA++ and ACDC (``seqattn``'s ``Reparam``;
SA++ also on ResNet-50 at 224x224) and post-training reconstruction (``posttrain.reconstruct``). Measured:
- bf16 autocast against fp32 on one batch: relative error of the loss and of the gradient (norm of the difference
  over the fp32 norm), against a stated tolerance;
- ResNet-18 CIFAR-10 epoch time (50k images, bs 128, random crop with 4-pixel zero padding + flip done on the device
  by ``common.data.TensorSplit``): a fraction of the epoch is timed and extrapolated (the JSON says which);
- BiP / dense, SA++ / dense and masked / dense step ratios (timed as ``common.bench`` does: ``interleaved`` rounds);
- peak GPU memory (``torch.cuda.max_memory_allocated``) per section;
- sparse inference (``sparse_inference``), CUDA only (skipped on a CPU: ``make bench`` and fig-sparse-speed measure
  it there): the dense model against its ``common.sparse`` copy, LeNet-300-100 at 90% in CSR and the Criteo model's
  first layer (390 -> 400) at 95% in 8x8 BSR (``common.bench.SPEED_GOALS``: random weights, batch 64), and 2:4
  semi-structured sparsity (``torch.sparse.to_sparse_semi_structured``, fp16) on Linear layers of those shapes
  (zero-padded to multiples of 128) and a 4096 x 4096 one; each with whether the sparse output equals the dense one.
Needs only torch, torchvision, numpy and pandas: a section whose extra package is missing (torch-pruning for the
post-training reconstruction) is skipped and recorded under ``skipped``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

DEFAULT_OUT = "figures/out/gpu/gpu-check.json"
BF16_TOLERANCE = {"loss": 0.02, "grad": 0.05}  # relative; bf16 has an 8-bit mantissa (~0.4% per rounding)


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


def _model(name, shape, device, num_classes=10):
    from common.models import build_model
    from common.train import prepare_model

    torch.manual_seed(0)
    return prepare_model(build_model(name, num_classes, shape), device)


def _dense(model, data):
    from common.train import Optim, make_optimizer, train_epoch

    opt = make_optimizer(model.parameters(), Optim(), 0.01)
    return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0)


def _masked(model, data, sparsity=0.9):
    """The IMP/OMP step: a magnitude mask (global top-k) kept through SGD by the shared enforcement."""
    from common import sparsity as S
    from common.train import Optim, make_optimizer, train_epoch

    opt = make_optimizer(model.parameters(), Optim(), 0.01)
    params = S.prunable(model, ("last",))
    masks = S.Masks(params)
    masks.set(S.topk_masks(S.magnitudes(params), sparsity, "global", ties="exact"), opt)
    return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0,
                               before_step=lambda s: masks.mask_grads(), after_step=lambda s: masks.apply())


def _gmp(model, data, steps):
    """GMP's pruning stage: the cubic schedule's mask updates every few steps, inside the training loop."""
    from common import sparsity as S
    from common.train import Optim, make_optimizer, train_epoch
    from gmp.schedule import PruningSteps

    opt = make_optimizer(model.parameters(), Optim(), 0.01)
    params = S.prunable(model, ("first", "last"))
    masks = S.Masks(params)
    plan = PruningSteps(t0=0, dt=max(1, steps // 10), n=10)

    def after(t):
        masks.apply()
        if plan.is_update(t + 1):
            masks.set(S.topk_masks(S.magnitudes(params), plan.sparsity(t + 1, 0.05, 0.9), "layer", ties="exact"), opt)
    return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0,
                               before_step=lambda s: masks.mask_grads(), after_step=after)


def _bip(model, data, device):
    from bip.bench import bilevel_epoch

    return bilevel_epoch(model, data, 0.9, device)


def _seqattn(model, data, kind: str, block: int):
    """SA++ (kind attention) or ACDC (kind mask) in a sparse phase: the mask applied, as ``seqattn.bench`` measures."""
    from common.train import Optim, make_optimizer, train_epoch
    from seqattn.attention import Reparam
    from seqattn.blocks import BlockLayers, block_topk

    reparam = Reparam(model, BlockLayers(model, block, ("last",), 100), kind, clip=(0.1, 10.0))
    scores = reparam.attention() if kind == "attention" else reparam.effective_norms()
    reparam.set_masks(block_topk(scores, 0.9, "layer"), applied=True)
    opt = make_optimizer(model.parameters(), Optim(), 0.01)
    return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0)


def _posttrain(model, data, device, epochs: int):
    from posttrain import groups as G
    from posttrain import reconstruct as R

    x = torch.cat([b[0] for b in data.batches])
    teacher = model.eval().requires_grad_(False)
    import copy

    student = copy.deepcopy(teacher).requires_grad_(True)
    plan = G.plan(student, x[:1], 0.5, "group-l2", "global", ())
    targets = R.TeacherOutputs(teacher, x, plan.kept)
    plan.remove()
    return lambda: R.reconstruct(student, targets, x, epochs=epochs, lr=1e-3, batch_size=64, seed=0, kept=plan.kept,
                                 balanced=True)


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

    with torch.backends.cudnn.flags(allow_tf32=False) if device.type == "cuda" else _nothing():
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


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def epoch_time(device, batches: int, arch: str = "resnet18") -> dict:
    """ResNet-18 CIFAR-10 epoch seconds: ``batches`` batches of 128 timed through TensorSplit, extrapolated to 50k."""
    from common.data import TensorSplit

    model = _model(arch, (3, 32, 32), device)
    g = torch.Generator(device=device).manual_seed(0)
    n = 128 * batches
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, device=device, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g, device=device)
    split = TensorSplit(x, y, batch_size=128, train=True, pad=4, flip=True, mean=(0.49, 0.48, 0.45),
                        std=(0.25, 0.24, 0.26))
    run = _dense(model, split)
    run()  # warm-up (cudnn.benchmark picks its kernels)
    seconds = _timed(run, device)
    return {"model": arch, "timed_images": n, "timed_seconds": seconds, "epoch_seconds_50k": seconds * 50000 / n,
            "how": f"{batches} batches of 128 with TensorSplit's on-device crop (4-pixel zero padding) + flip, "
                   f"timed after one warm-up pass and extrapolated to 50000 images"}


def threshold_selection(device, n: int, sparsity: float = 0.9, repeats: int = 5) -> dict:
    """BiP's top-k threshold over ``n`` scores (ResNet-18: ~11M): the CUDA selection (``bip.scores.topk_kthvalue``,
    topk over the smaller side) against a full ``torch.kthvalue``, in ms per call, and whether the thresholds agree."""
    from bip.scores import topk_kthvalue

    g = torch.Generator(device=device).manual_seed(0)
    scores = torch.randn(n, generator=g, device=device)
    scores[: n // 10] = scores[0]  # a block of ties at one value, as scores initialized from |theta| may have
    k = round(sparsity * n)
    fns = {"topk": lambda: topk_kthvalue(scores, k), "kthvalue": lambda: torch.kthvalue(scores, k).values}
    ms = {name: 1e3 * min(_timed(fn, device) for _ in range(repeats)) for name, fn in fns.items()}
    return {"scores": n, "sparsity": sparsity, "topk_ms": ms["topk"], "kthvalue_ms": ms["kthvalue"],
            "equal": bool(torch.equal(fns["topk"](), fns["kthvalue"]())),
            "how": "random scores with a tenth tied, generated on the device; best of "
                   f"{repeats} calls each"}


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


def check(device: torch.device, quick: bool) -> dict:
    from common.bench import interleaved

    steps = 3 if quick else 200
    rounds = 1 if quick else 3
    cifar = ("cnn", (1, 8, 8), 32) if quick else ("resnet18", (3, 32, 32), 128)
    imagenet = ("cnn", (1, 8, 8), 8) if quick else ("resnet50", (3, 224, 224), 64)
    sections, skipped = {}, []

    def section(name, build, with_dense=True, model=cifar, n_steps=steps):
        """Time ``build(model, data)``'s steps (and a dense run on the same batches for the ratio)."""
        arch, shape, bs = model
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            data = DeviceBatches(shape, 10, bs, n_steps, device)
            fns = {name: build(_model(arch, shape, device), data)}
        except ImportError as exc:
            skipped.append({"section": name, "why": f"{type(exc).__name__}: {exc}"})
            return
        if with_dense:
            fns["dense"] = _dense(_model(arch, shape, device), data)
        t = interleaved({k: (lambda f=f: (f(), _sync(device))) for k, f in fns.items()}, rounds)
        sections[name] = {"model": arch, "input": list(shape), "batch_size": bs, "steps": n_steps,
                          "seconds": t[name], "step_ms": 1e3 * t[name] / n_steps,
                          **({"ratio_to_dense": t[name] / t["dense"], "dense_step_ms": 1e3 * t["dense"] / n_steps}
                             if with_dense else {}),
                          "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                          else None}
        print(f"gpu-check: {name:22s} {sections[name]['step_ms']:8.2f} ms/step"
              + (f"  {sections[name]['ratio_to_dense']:.3f}x dense" if with_dense else ""), file=sys.stderr,
              flush=True)

    section("dense", lambda m, d: _dense(m, d), with_dense=False)
    section("bip", lambda m, d: _bip(m, d, device))
    section("masked_imp_omp", lambda m, d: _masked(m, d))
    section("gmp", lambda m, d: _gmp(m, d, steps))
    section("sapp", lambda m, d: _seqattn(m, d, "attention", 4 if quick else 16))
    section("acdc", lambda m, d: _seqattn(m, d, "mask", 4 if quick else 16))
    section("sapp_resnet50_224", lambda m, d: _seqattn(m, d, "attention", 4 if quick else 16), model=imagenet,
            n_steps=steps if quick else 60)
    section("posttrain_reconstruct", lambda m, d: _posttrain(m, d, device, 1), with_dense=False,
            model=("cnn", (1, 8, 8), 64) if quick else ("resnet18", (3, 32, 32), 64), n_steps=2 if quick else 8)

    if device.type == "cuda":
        sparse = sparse_inference(device, quick)
    else:
        sparse = None
        skipped.append({"section": "sparse_inference", "why": "measured on CUDA only; on a CPU by make bench and "
                                                              "make fig-sparse-speed"})
    arch, shape, bs = cifar
    batch = DeviceBatches(shape, 10, bs, 1, device, seed=1).batches[0]
    agreement = bf16_agreement(_model(arch, shape, device), *batch)
    return {"sections": sections, "skipped": skipped, "bf16_vs_fp32": agreement,
            "epoch_time_resnet18_cifar10": epoch_time(device, *((1, "cnn") if quick else (60, "resnet18"))),
            "bip_threshold": threshold_selection(device, 10_000 if quick else 11_200_000),
            "repeatability": repeatability(device, arch, shape, bs, 2 if quick else 50),
            "sparse_inference": sparse,
            "ratios": {k: sections[s]["ratio_to_dense"] for k, s in
                       (("bip_over_dense", "bip"), ("sapp_over_dense", "sapp"), ("masked_over_dense", "masked_imp_omp"))
                       if s in sections}}


def sparse_outputs_agree(result: dict) -> bool:
    """Every sparse measurement that ran gave the dense output (a kernel that is missing is recorded, not failed)."""
    sparse = result.get("sparse_inference") or {}
    entries = [v for k, v in sparse.items() if k != "semi_structured_2_4"]
    entries += [v for v in (sparse.get("semi_structured_2_4") or {}).values() if isinstance(v, dict)]
    return all(e.get("equal", True) for e in entries)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"the JSON file to write (default {DEFAULT_OUT})")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny models, a few steps (seconds on a CPU)")
    args = parser.parse_args(argv)
    from common.cli import exit_code
    from common.train import describe_device, resolve_device

    def action():
        device = resolve_device(args.device)
        t0 = time.perf_counter()
        result = check(device, args.quick)
        result.update(device=describe_device(device), torch=torch.__version__, cuda=torch.version.cuda,
                      quick=args.quick, total_seconds=time.perf_counter() - t0,
                      data="random tensors generated on the device (no dataset read)",
                      peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
        result["ok"] = bool(result["bf16_vs_fp32"]["ok"]) and result["bip_threshold"]["equal"] and all(
            math.isfinite(s["seconds"]) for s in result["sections"].values()) and sparse_outputs_agree(result)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"gpu-check: wrote {out} in {result['total_seconds']:.0f} s", file=sys.stderr)

    return exit_code(action)


if __name__ == "__main__":
    raise SystemExit(main())
