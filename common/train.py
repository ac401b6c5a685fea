"""Training pieces shared by every method: recipes, optimizers, LR schedules, the epoch loop, evaluation.

The loop is the hot path of every run: per step it does the forward/backward, the optimizer step and the caller's
hooks, and nothing that scales with the parameter count; loss and accuracy are accumulated on the device and read
(one host sync) at the end of the epoch. On CUDA it uses bf16 autocast with fp32 master weights, channels_last and
cudnn.benchmark.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from common import config as C
from common import distributed
from common.data import Split, resolve_workers
from common.errors import Diverged, UserError
from common.metrics import roc_auc


# ---------------------------------------------------------------------------------------------------- recipes
@dataclass
class Optim:
    """Optimizer settings."""

    optimizer: str = C.opt("sgd", "optimizer", choices=("sgd", "adam"))
    momentum: float = C.opt(0.9, "SGD momentum")
    nesterov: bool = C.opt(False, "Nesterov momentum (SGD)")
    weight_decay: float = C.opt(5e-4, "L2 weight decay (coupled, as torch.optim.SGD/Adam apply it)")
    batch_size: int = C.opt(128, "training batch size")
    accumulate: int = C.opt(1, "gradient accumulation: each optimizer step sums the gradients of this many "
                               "micro-batches of batch-size / accumulate samples (the same step, in less memory)",
                            positive=True, hash="unless-default")

    def __post_init__(self):
        if self.accumulate >= 1 and self.batch_size % self.accumulate:
            raise UserError(f"batch size {self.batch_size} is not divisible by accumulate {self.accumulate}: an "
                            f"optimizer step of {self.batch_size} samples cannot be split into {self.accumulate} equal "
                            f"micro-batches; choose a batch size that is a multiple of accumulate")


@dataclass
class LRSchedule:
    """A learning-rate schedule over a stretch of training whose length the caller supplies."""

    lr: float = C.opt(0.05, "learning rate at the start (after warm-up)", positive=True)
    schedule: str = C.opt("cosine", "LR shape", choices=("constant", "cosine", "linear", "multistep", "exponential"))
    warmup_epochs: float = C.opt(0.0, "linear warm-up from ~0 to lr over this many epochs")
    milestones: tuple[float, ...] = C.opt((), "multistep: epochs (from the start of this stretch) where lr is "
                                              "multiplied by gamma, comma-separated")
    gamma: float = C.opt(0.1, "multistep decay factor")
    final_lr: float = C.opt(0.0, "cosine/linear/exponential: learning rate at the end")


@dataclass
class Recipe(LRSchedule, Optim):
    """A whole training run: optimizer settings, a length and an LR schedule."""

    epochs: int = C.opt(30, "number of epochs")


def lr_at(sched: LRSchedule, t: float, length: float) -> float:
    """Learning rate at ``t`` epochs (fractional) into a stretch of ``length`` epochs scheduled by ``sched``."""
    if sched.warmup_epochs > 0 and t < sched.warmup_epochs:
        return sched.lr * max(t, 1e-3) / sched.warmup_epochs
    span = max(length - sched.warmup_epochs, 1e-12)
    progress = min(max((t - sched.warmup_epochs) / span, 0.0), 1.0)
    if sched.schedule == "constant":
        return sched.lr
    if sched.schedule == "cosine":
        return sched.final_lr + (sched.lr - sched.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if sched.schedule == "linear":
        return sched.lr + (sched.final_lr - sched.lr) * progress
    if sched.schedule == "multistep":
        return sched.lr * sched.gamma ** sum(t >= m for m in sched.milestones)
    if sched.schedule == "exponential":  # lr * (final_lr / lr)^progress: geometric decay from lr to final_lr
        return sched.lr * (sched.final_lr / sched.lr) ** progress
    raise UserError(f"unknown LR schedule '{sched.schedule}'")


def make_optimizer(params, optim: Optim, lr: float, weight_decay: float | None = None) -> torch.optim.Optimizer:
    """The optimizer of ``optim``'s settings. It carries ``accumulate`` (``Optim.accumulate``; 1 for settings without
    it), the micro-batches of each of its steps, which :func:`train_epoch` follows."""
    wd = optim.weight_decay if weight_decay is None else weight_decay
    if optim.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=optim.momentum, nesterov=optim.nesterov, weight_decay=wd)
    elif optim.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    else:
        raise UserError(f"unknown optimizer '{optim.optimizer}'; choose sgd or adam")
    optimizer.accumulate = getattr(optim, "accumulate", 1)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------------------------------------------- device
DEVICE_FORMS = "auto, cpu, cuda or cuda:N (N: a GPU index)"


def check_device(name: str) -> None:
    """Refuse a ``--device`` that is none of :data:`DEVICE_FORMS` (before any run directory is made)."""
    kind, colon, index = name.partition(":")
    if not (name in ("auto", "cpu", "cuda") or (kind == "cuda" and colon and index.isdigit())):
        raise UserError(f"--device {name} is not a device this code runs on; use {DEVICE_FORMS}")


# Environment variables that say this job was given GPUs (Slurm with GPUs allocated sets them; so does a user who
# picks GPUs with CUDA_VISIBLE_DEVICES). Where one is set, --device auto requires a usable CUDA GPU.
GPU_ENV = ("SLURM_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK", "SLURM_JOB_GPUS",
           "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")


def gpus_requested() -> str | None:
    """``NAME=value`` of the first :data:`GPU_ENV` variable that allocates GPUs, or None. The ``*_GPUS`` lists and
    ``CUDA_VISIBLE_DEVICES`` name GPUs (empty or -1: none); the other Slurm variables count them (0: none)."""
    for name in GPU_ENV:
        value = os.environ.get(name, "").strip()
        lists = name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
        if value not in (("", "-1", "NoDevFiles") if lists else ("", "0")):
            return f"{name}={value}"
    return None


@functools.lru_cache(maxsize=None)
def driver_cuda_version() -> str | None:
    """The CUDA version the installed NVIDIA driver supports ("12.2"), from nvidia-smi; None without a driver."""
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"CUDA Version:\s*([0-9.]+)", out)
    return found.group(1) if found else None


def cuda_unusable_reason(torch_warnings: list[str] = ()) -> str:
    """Why CUDA cannot be used here: torch's CUDA build against the driver's CUDA version (and torch's own warning)."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (no CUDA)"
    driver = driver_cuda_version()
    text = (f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, the NVIDIA driver supports "
            + (f"CUDA {driver}" if driver else "no CUDA version (no NVIDIA driver found: nvidia-smi is missing or fails)"))
    if torch_warnings:
        text += f" (torch: {' '.join(torch_warnings[0].split())[:200]})"
    return text


def _cuda_available() -> tuple[bool, list[str]]:
    """torch.cuda.is_available(), and the warnings torch gives when the driver is unusable (e.g. too old)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    return available, [str(w.message) for w in caught]


ARCH = re.compile(r"(sm|compute)_(\d+)(\d)([a-z]?)")


def runs_on(capability: tuple[int, int], archs: list[str]) -> bool:
    """Whether a torch built for ``archs`` (``torch.cuda.get_arch_list()``: ``sm_XY`` kernels, ``compute_XY`` PTX)
    has kernels for a GPU of compute ``capability`` (major, minor): ``sm_XY`` of its major version and a minor not
    above its own (``sm_XYa``: exactly its own), or PTX not above it, which the driver compiles. An empty list (torch
    cannot tell) counts as yes."""
    if not archs:
        return True
    for arch in archs:
        m = ARCH.fullmatch(arch)
        if m is None:
            continue
        built, exact = (int(m.group(2)), int(m.group(3))), m.group(4) == "a"
        if exact and built == tuple(capability):
            return True
        if not exact and (built <= tuple(capability) if m.group(1) == "compute" else
                          built[0] == capability[0] and built[1] <= capability[1]):
            return True
    return False


def check_kernels(index: int) -> None:
    """A UserError (one line) when the installed torch has no kernels for GPU ``index``: its first kernel would die
    with a traceback (e.g. a CUDA 13 torch on a V100, sm_70)."""
    capability, archs = torch.cuda.get_device_capability(index), torch.cuda.get_arch_list()
    if not runs_on(capability, archs):
        sm = "sm_{}{}".format(*capability)
        raise UserError(f"cuda:{index} is a {torch.cuda.get_device_name(index)} ({sm}), and torch {torch.__version__} "
                        f"(CUDA {torch.version.cuda}) has no kernels for it (built for {' '.join(archs)}); install a "
                        f"torch built with {sm} kernels (make install TORCH_INDEX=..., see README: Installing for your "
                        f"GPUs), or pass --device cpu")


def resolve_device(name: str) -> torch.device:
    """The device of ``--device name``; prints it (standard error) once resolved.

    ``auto`` is CUDA when usable, else the CPU, except where GPUs were asked for (:func:`gpus_requested`): then, like
    ``cuda``, a missing GPU is a UserError that says why (torch's CUDA version against the driver's), and so is a GPU
    the installed torch has no kernels for (:func:`check_kernels`)."""
    check_device(name)
    available, torch_warnings = _cuda_available()
    requested = gpus_requested() if name == "auto" else None
    if name == "auto":
        name = "cuda" if available or requested else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not available:
            asked = f"--device auto in a job that was given GPUs ({requested})" if requested else f"--device {name}"
            raise UserError(f"{asked}, but CUDA is unusable: {cuda_unusable_reason(torch_warnings)}; install a torch "
                            f"built for the driver's CUDA version (or update the driver), or pass --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered "
                            f"from 0; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        check_kernels(torch.cuda.current_device() if device.index is None else device.index)
        torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()  # --deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if distributed.is_main():
        print(f"device: {describe_device(device, torch_warnings)}", file=sys.stderr, flush=True)
    return device


def describe_device(device: torch.device, torch_warnings: list[str] = ()) -> str:
    """``cuda:0 (NVIDIA H200, torch 2.11.0 CUDA 12.8)`` or ``cpu (no CUDA: <why>)``."""
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, torch {torch.__version__} CUDA {torch.version.cuda})"
    if torch.cuda.is_available():
        return f"{device} (CUDA available but not asked for; torch {torch.__version__})"
    return f"{device} (no CUDA: {cuda_unusable_reason(torch_warnings)})"


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to its device; convolutional models use channels_last on CUDA."""
    model = model.to(device)
    if device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device):
    """bf16 autocast on CUDA (weights stay fp32); a no-op elsewhere (the CPU, where every test runs in exact fp32)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def _to_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


# ---------------------------------------------------------------------------------------------------- loops
class Progress:
    """A tqdm bar over an epoch's batches on a terminal; otherwise nothing per step (the caller prints a line).

    Both go to standard error: standard output carries only a command's result."""

    def __init__(self, mode: str = "auto"):
        self.bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.lines = mode != "off"

    def wrap(self, it, total: int, desc: str):
        if not self.bar:
            return it
        from tqdm import tqdm
        return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True)

    def line(self, text: str) -> None:
        if self.lines:
            print(text, file=sys.stderr, flush=True)


def train_epoch(model: nn.Module, split, epoch: int, optimizer: torch.optim.Optimizer, *,
                lr_of_step: Callable[[int], float], first_step: int,
                before_step: Callable[[int], None] | None = None,
                after_step: Callable[[int], None] | None = None,
                loss_fn: Callable = nn.functional.cross_entropy,
                progress: Progress | None = None, desc: str = "", loop: ResumableEpochs | None = None) -> dict:
    """One pass over ``split`` (a ``common.data.Split``). ``step`` counts optimizer steps over the whole run.

    Per step: set lr -> forward/backward -> ``before_step(step)`` (e.g. mask gradients) -> optimizer step ->
    ``after_step(step)`` (e.g. re-apply masks, update them on a schedule).
    Returns ``{"loss", "acc", "steps"}`` for the epoch; raises ``Diverged`` when the loss is not finite.

    Gradient accumulation (``optimizer.accumulate`` = k, from ``Optim.accumulate``): the forward/backward of a step
    runs on k micro-batches of its batch (fewer where its last batch has fewer than k rows per rank), each loss
    weighed by its share of the step's rows so that the summed gradient is the whole batch's; in a data-parallel run
    the first k - 1 skip DDP's gradient reduction (``no_sync``). Everything else (lr, hooks, checkpoints, the step
    count) stays per optimizer step.

    With ``loop``, the run's :func:`resumable_epochs` loop (whose state holds ``model``), the epoch also checkpoints
    between steps (every ``--checkpoint-every-minutes``, or ``--checkpoint-every-steps`` batches, or at once on a stop
    request: :func:`epoch_batches`), and an epoch resumed from such a
    checkpoint starts at its batch: the state, the RNG and the epoch's running sums are restored, so the epoch's
    statistics and everything after equal an uninterrupted run's. In a data-parallel run each rank loads only its
    rows of every global batch (``split.epoch(..., rank, world)``).
    """
    device = next(model.parameters()).device
    model.train()
    net = distributed.wrap(model)  # DistributedDataParallel across ranks; the model itself in one process
    rank, world = (distributed.rank(), distributed.world_size()) if net is not model else (0, 1)
    accumulate = getattr(optimizer, "accumulate", 1)
    sums = {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device, dtype=torch.long),
            "seen": 0}
    steps = 0
    with _deterministic_or_error():
        for i, (x, y) in epoch_batches(model, split, epoch, sums, rank=rank, world=world, progress=progress,
                                       desc=desc, loop=loop):
            step = first_step + i
            set_lr(optimizer, lr_of_step(step))
            optimizer.zero_grad(set_to_none=True)
            rows = y.shape[0] if world == 1 else len(split.rows(i))  # the step's rows over every rank
            parts = min(accumulate, rows // world)  # as many micro-batches on every rank (none of them empty)
            for j, (xm, ym) in enumerate(zip(x.tensor_split(parts), y.tensor_split(parts))):
                with net.no_sync() if j + 1 < parts and net is not model else contextlib.nullcontext():
                    with autocast(device):
                        out = net(_to_input(xm, device))
                        loss = loss_fn(out, ym)
                    # this micro-batch's share of the step, and with several ranks the factor that makes DDP's mean
                    # gradient the global batch's
                    scale = distributed.loss_scale(ym.shape[0], rows, world)
                    (loss if scale == 1 else loss * scale).backward()
                sums["loss"] += loss.detach() * ym.shape[0]
                if out.dim() == 2 and out.shape[1] > 1:
                    sums["correct"] += (out.detach().argmax(1) == ym).sum()
                sums["seen"] += ym.shape[0]
            if before_step is not None:
                before_step(step)
            optimizer.step()
            if after_step is not None:
                after_step(step)
            steps = i + 1
    total_loss, correct, seen = sums["loss"], sums["correct"], sums["seen"]
    if net is not model:  # the epoch's statistics over every rank's shards (one reduction per epoch)
        total_loss, correct, seen = distributed.all_sum(total_loss, correct, seen)
    loss_value = float(total_loss) / max(seen, 1)
    if not math.isfinite(loss_value):
        raise Diverged(f"training loss became {loss_value} in epoch {epoch + 1}; lower the learning rate")
    return {"loss": loss_value, "acc": int(correct) / max(seen, 1), "steps": steps}


def epoch_batches(model: nn.Module, split, epoch: int, sums: dict, *, rank: int = 0, world: int = 1,
                  progress: Progress | None = None, desc: str = "", loop: ResumableEpochs | None = None):
    """``(i, (x, y))`` for the batches of one epoch of training ``model``: ``train_epoch``'s, and those of a loop
    body that trains in its own way (BiP's two levels).

    With ``loop``, the run's :func:`resumable_epochs` loop (whose state holds ``model``; ``ResumableEpochs.takes``),
    the epoch starts at the batch a checkpoint within it was taken at, with ``sums`` (the epoch's running sums:
    tensors on the device, numbers; updated in place by the caller) restored to their values there (rank 0 carries
    the sums of every rank), and after the caller's work on batch ``i`` a checkpoint is taken when one is due
    (``ResumableEpochs.due``) -- at once when a stop was requested (:func:`request_stop`), after which
    :class:`Stopped` is raised."""
    loop = loop if loop is not None and loop.takes(model) else None
    start, saved = loop.resume_in_epoch() if loop is not None else (0, None)
    if saved is not None and rank == 0:
        for name, value in saved.items():
            if torch.is_tensor(sums[name]):
                sums[name] += value.to(sums[name].device)
            else:
                sums[name] = type(sums[name])(value)
    batches = split.epoch(epoch, start=start, rank=rank, world=world)
    if progress is not None:
        batches = progress.wrap(batches, len(split) - start, desc)
    for i, batch in enumerate(batches, start):
        yield i, batch
        if loop is not None and i + 1 < len(split) and loop.due(i + 1):
            loop.save_within(i + 1, sums)
            loop.stop_if_requested()


@torch.no_grad()
def evaluate(model: nn.Module, split, loss_fn: Callable = nn.functional.cross_entropy) -> dict:
    """Mean loss over an evaluation split (model in eval mode, restored afterwards), and top-1 accuracy ``acc`` for a
    classifier or, for a one-output model (a binary logit, e.g. Criteo's), ROC AUC ``auc`` and no accuracy.

    In a data-parallel run each rank evaluates its rows of every batch (``split.epoch(0, rank=r, world=W)``: each
    sample once, on one rank) and the loss sum, correct count and sample count are summed over the ranks (a one-logit
    model's scores and labels are gathered for the AUC), so every rank returns the metrics of one process. A split
    whose last batch cannot give every rank a row (the split refuses that shard) is evaluated whole on every rank."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    world = distributed.world_size()
    if world > 1 and not (isinstance(split, Split) and len(split) and len(split.rows(len(split) - 1)) >= world):
        world = 1
    batches = split.epoch(0) if world == 1 else split.epoch(0, rank=distributed.rank(), world=world)
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    logits, labels = [], []  # one-output models: every score, for the AUC
    for x, y in batches:
        with autocast(device):
            out = model(_to_input(x, device))
        total_loss += loss_fn(out.float(), y, reduction="sum")
        if out.dim() == 2 and out.shape[1] > 1:
            correct += (out.argmax(1) == y).sum()
        else:
            logits.append(out.float().reshape(-1))
            labels.append(y.reshape(-1))
        seen += y.shape[0]
    model.train(was_training)
    if world > 1:
        total_loss, correct, seen = distributed.all_sum(total_loss, correct, seen)
    if logits:
        scores, labels = torch.cat(logits), torch.cat(labels)
        if world > 1:
            scores, labels = distributed.all_gather_cat(scores), distributed.all_gather_cat(labels)
        return {"loss": float(total_loss) / max(seen, 1), "auc": roc_auc(scores, labels)}
    return {"loss": float(total_loss) / max(seen, 1), "acc": int(correct) / max(seen, 1)}


# ---------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`. The CUDA states are one per device of the job that saved them: those of the devices
    present are restored (a job that sees fewer GPUs than the saving one restores the first ones)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        for index, device_state in enumerate(list(cuda)[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


# ---------------------------------------------------------------------------------------------------- determinism
CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (NVIDIA's documented setting)
_NONDETERMINISTIC = r"\S+ does not have a deterministic implementation"  # torch's alert, raised or warned
# torch flags these kernels whatever their arguments, but computes deterministically in the only way this repository's
# models call them: adaptive average pooling to 1x1 (the global pool of the CNN and ResNets) has every input's
# gradient written by one thread (ATen uses atomics only when the input size is not a multiple of the output's).
DETERMINISTIC_IN_USE = ("adaptive_avg_pool2d_backward_cuda",)


def set_deterministic(on: bool) -> None:
    """``--deterministic``: deterministic algorithms only (``torch.use_deterministic_algorithms``), cuDNN's
    autotuning off and a fixed cuBLAS workspace, so the same run on the same GPU model, software and number of
    processes computes the same bits every time (a replayed run equals the run). Off: torch's defaults
    (``resolve_device`` turns cuDNN autotuning on for CUDA).

    torch is asked to warn (``warn_only``) rather than fail on an operation without a deterministic implementation:
    in ``train_epoch`` that warning is an error (one line, :func:`_deterministic_or_error`) except for the kernels of
    :data:`DETERMINISTIC_IN_USE`; elsewhere (evaluation) it stays a warning."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
    if on or torch.are_deterministic_algorithms_enabled():  # off is torch's default: not set again, since setting it
        torch.use_deterministic_algorithms(on, warn_only=on)  # imports torch's compiler stack (~2 s at start-up)
    torch.backends.cudnn.deterministic = on


def apply_runtime(cfg) -> None:
    """Check a run's execution settings (``common.cli.Runtime``) and apply those that hold for the whole process
    (``--deterministic``, ``--sync-bn``); ``common.store.execute`` calls it before computing or reading a run."""
    for name in ("checkpoint_every_minutes", "checkpoint_every_steps", "checkpoint_epoch_minutes"):
        value = getattr(cfg, name, 0)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UserError(f"--{name.replace('_', '-')} {value} must be >= 0 (0: off)")
    if hasattr(cfg, "workers"):
        resolve_workers(cfg.workers)
    set_deterministic(bool(getattr(cfg, "deterministic", False)))
    distributed.set_sync_batchnorm(bool(getattr(cfg, "sync_bn", False)))


@contextlib.contextmanager
def _deterministic_or_error():
    """Under ``--deterministic``, torch's alert for an operation without a deterministic implementation (other than
    :data:`DETERMINISTIC_IN_USE`) ends the run with a UserError naming it."""
    if not torch.are_deterministic_algorithms_enabled():
        yield
        return
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=_NONDETERMINISTIC)
            for op in DETERMINISTIC_IN_USE:
                warnings.filterwarnings("ignore", message=re.escape(op) + " does not have a deterministic")
            yield
    except (RuntimeError, UserWarning) as exc:
        text = str(exc)
        if not re.match(_NONDETERMINISTIC, text):
            raise
        op = text.split(" does not have", 1)[0].strip()
        raise UserError(f"--deterministic cannot be honoured: {op} has no deterministic implementation in torch "
                        f"{torch.__version__}; run without --deterministic") from None


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


# ---------------------------------------------------------------------------------------------------- checkpoints
class Stopped(Exception):
    """A run stopped at a checkpoint because a stop was requested (:func:`request_stop`); it resumes there."""


_stop: list[str] = []  # why a stop was requested (a signal's name), once one was


def request_stop(why: str) -> None:
    """Ask the running :func:`resumable_epochs` loops to checkpoint at the next step boundary (or epoch end) and
    raise :class:`Stopped` (safe in a signal handler: it only sets a flag)."""
    if not _stop:
        _stop.append(why)


def stop_requested() -> bool:
    return bool(_stop)


def clear_stop() -> None:
    _stop.clear()


def in_loop() -> bool:
    """Is a :func:`resumable_epochs` loop running (one that acts on a stop request)?"""
    return _running[0] > 0


_running = [0]  # how many resumable_epochs loops are iterating now (what a stop signal can act on)

# In a data-parallel run rank 0's clock decides when a timed checkpoint is due, looked at every this many steps
# (one tiny collective each time, so that every rank checkpoints at the same step).
DDP_CLOCK_EVERY = 50


class ResumableEpochs:
    """The checkpointed epochs of one run's training: iterating it yields the epoch indices (``resumable_epochs``
    says how it checkpoints and resumes), and the loop body passes it to ``train_epoch`` / ``epoch_batches``
    (``loop=``), which then also checkpoint within the epoch and resume at a checkpoint's batch.

    It holds what it saves (``state``), the checkpoint it resumed from, and when the last checkpoint was taken."""

    def __init__(self, run, total: int, state: dict):
        self.run, self.total, self.state = run, total, state
        self.every_s = 60.0 * float(getattr(run.cfg, "checkpoint_every_minutes", 0) or 0)
        self.every_steps = int(getattr(run.cfg, "checkpoint_every_steps", 0) or 0)
        self.epoch_s = 60.0 * float(getattr(run.cfg, "checkpoint_epoch_minutes", 0) or 0)
        self.last = time.monotonic()
        self.epoch = -1
        self.trained = False  # has this epoch's train_epoch started
        self.resumed: dict | None = None  # the checkpoint resumed from, until the resumed epoch's train_epoch
        self.names: set[str] = set()      # the state entries restored at the loop's start
        self.n_logs = 0                   # the log records up to the resume (its own included)

    def __iter__(self):
        run, total, state = self.run, self.total, self.state
        ckpt = run.load_checkpoint()
        start = 0
        if ckpt is not None:
            for name, obj in state.items():
                obj.load_state_dict(ckpt[name])
            set_rng_state(ckpt["rng"])
            start = int(ckpt["epoch"])
            step = int(ckpt.get("step", 0))
            if distributed.is_main():
                where = f"batch {step} of epoch {start + 1}" if step else f"epoch {start}"
                print(f"resuming from {where} of {total}: {run.checkpoint_path}", file=sys.stderr, flush=True)
            run.log(event="resume", from_epoch=start, **({"from_step": step} if step else {}))
            self.resumed, self.names, self.n_logs = ckpt, set(state), len(run.logs)
        _running[0] += 1
        try:
            for epoch in range(start, total):
                self.epoch, self.trained = epoch, False
                yield epoch
                self.resumed = None
                stop = self.stopping()
                if stop or self.epoch_due():  # an epoch end checkpoints once --checkpoint-epoch-minutes have passed
                    self.save(epoch + 1)
                if stop:
                    raise self.stopped()
        finally:
            _running[0] -= 1

    def takes(self, model) -> bool:
        """Whether the epoch's batches of ``model`` (which must be in ``state``) checkpoint within the epoch: only
        those of the epoch's first ``train_epoch`` / ``epoch_batches`` (a body that trains twice per epoch gets
        epoch checkpoints only)."""
        if not any(obj is model for obj in self.state.values()):
            raise ValueError("the model trained with loop= is not in the loop's state, so its checkpoints would not "
                             "hold it: add it to the state (the body may add entries) or train it without loop=")
        if self.trained:
            return False
        self.trained = True
        return True

    def save(self, epoch: int, within: dict | None = None) -> None:
        self.run.save_checkpoint({**{n: o.state_dict() for n, o in self.state.items()}, "epoch": epoch,
                                  "rng": rng_state(), **(within or {})})
        self.last = time.monotonic()

    def due(self, done: int) -> bool:
        """Is a checkpoint due after ``done`` batches of the epoch? (the same answer on every rank) Every
        ``--checkpoint-every-steps`` batches, ``--checkpoint-every-minutes`` since the last checkpoint, or at once
        when a stop was requested (:func:`request_stop`)."""
        if self.every_steps and done % self.every_steps == 0:
            return True
        if not distributed.active():
            return stop_requested() or (self.every_s > 0 and time.monotonic() - self.last >= self.every_s)
        if done % DDP_CLOCK_EVERY:
            return False
        late = stop_requested() or (distributed.is_main() and self.every_s > 0
                                    and time.monotonic() - self.last >= self.every_s)
        return distributed.all_sum(int(late))[0] > 0

    def save_within(self, done: int, sums: dict) -> None:
        """A checkpoint after ``done`` batches of this epoch, with the epoch's sums so far over every rank."""
        values = tuple(v.clone() if torch.is_tensor(v) else v for v in sums.values())
        if distributed.active():
            values = distributed.all_sum(*values)
        self.save(self.epoch, {"step": done, "sums": {name: v.cpu() if torch.is_tensor(v) else v
                                                      for name, v in zip(sums, values)}})

    def epoch_due(self) -> bool:
        """Is the checkpoint at this epoch's end due? (``--checkpoint-epoch-minutes`` since the last one)"""
        return self.epoch_s <= 0 or time.monotonic() - self.last >= self.epoch_s

    def stopping(self) -> bool:
        """Was a stop requested (on any rank: the same answer on every rank)?"""
        stop = stop_requested()
        if distributed.active():
            stop = distributed.all_sum(int(stop))[0] > 0
        return stop

    def stopped(self) -> Stopped:
        return Stopped(f"stopped at a checkpoint on {(_stop or ['another rank'])[0]}: the run resumes there "
                       f"({self.run.checkpoint_path})")

    def stop_if_requested(self) -> None:
        """Raise ``Stopped`` (on every rank) once a stop was requested: called right after a checkpoint."""
        if self.stopping():
            raise self.stopped()

    def resume_in_epoch(self) -> tuple[int, dict | None]:
        """At the resumed epoch's ``train_epoch``: (the batch to start at, the epoch's sums so far or None).

        A checkpoint taken within the epoch is applied again here, over whatever the loop body did before calling
        ``train_epoch`` (a mask update, a fresh optimizer, log records: all already in the checkpoint); entries the
        body added to ``state`` since the loop started are restored here from any checkpoint that holds them."""
        ckpt, self.resumed = self.resumed, None
        if ckpt is None:
            return 0, None
        step = int(ckpt.get("step", 0))
        names = [n for n in self.state if n in ckpt and (step or n not in self.names)]
        if not names and not step:
            return 0, None
        for name in names:
            self.state[name].load_state_dict(ckpt[name])
        set_rng_state(ckpt["rng"])
        if step and len(self.run.logs) > self.n_logs:  # records the body wrote again: already logged before
            del self.run.logs[self.n_logs:]
            self.run.rewrite_log()
        return step, ckpt.get("sums") if step else None


def resumable_epochs(run, total: int, state: dict) -> ResumableEpochs:
    """The loop over epochs ``start .. total-1`` of ``run``: iterated, it checkpoints ``state`` after an epoch once
    ``--checkpoint-epoch-minutes`` have passed since the last checkpoint (every epoch with 0), and resumes from the
    last checkpoint. A stop request (:func:`request_stop`) checkpoints at the next step boundary (``epoch_batches``)
    or epoch end, and raises :class:`Stopped`.

    ``state`` maps names to objects with ``state_dict``/``load_state_dict`` (model, optimizer, masks, ...); the loop
    body may replace entries (a fresh optimizer at a phase boundary) and the replacement is what gets saved; entries
    it adds are saved from then on, and restored when a resumed body adds them again. With the RNG state saved too
    and data order a function of (seed, epoch), a resumed run equals an uninterrupted one.

    Long epochs: ``train_epoch(..., loop=loop)`` (or ``epoch_batches``) on a model in ``state`` also checkpoints
    within the epoch (``ResumableEpochs.due``) and a resume continues at that batch; the loop body before
    ``train_epoch`` runs again on resume, and its effects on ``state``, the RNG and the log are replaced by the
    checkpoint's (so it must keep nothing else).
    A resume says so on standard error and logs ``{"event": "resume", "from_epoch": k}`` (with ``from_step``: s
    batches of epoch k + 1 were done; no ``epoch`` key: readers of the per-epoch records skip it like any other event).

        loop = resumable_epochs(run, cfg.epochs, {"model": model, "optimizer": optimizer})
        for epoch in loop:
            stats = train_epoch(model, data.train, epoch, optimizer, ..., loop=loop)
    """
    return ResumableEpochs(run, total, state)
