"""Training pieces shared by every method: recipes, optimizers, LR schedules, the epoch loop, evaluation.

The loop is the hot path of every run: per step it does the forward/backward, the optimizer step and the caller's
hooks, and nothing that scales with the parameter count; loss and accuracy are accumulated on the device and read
(one host sync) at the end of the epoch. On CUDA it uses bf16 autocast with fp32 master weights, channels_last and
cudnn.benchmark.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from common import config as C
from common import distributed
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
    wd = optim.weight_decay if weight_decay is None else weight_decay
    if optim.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim.momentum, nesterov=optim.nesterov, weight_decay=wd)
    if optim.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    raise UserError(f"unknown optimizer '{optim.optimizer}'; choose sgd or adam")


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


def resolve_device(name: str) -> torch.device:
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for, but this machine has no usable CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered "
                            f"from 0; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to its device; convolutional models use channels_last on CUDA."""
    model = model.to(device)
    if device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device):
    """bf16 autocast on CUDA (weights stay fp32); a no-op on CPU, where every test runs in exact fp32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


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
                progress: Progress | None = None, desc: str = "") -> dict:
    """One pass over ``split`` (a ``common.data.Split``). ``step`` counts optimizer steps over the whole run.

    Per step: set lr -> forward/backward -> ``before_step(step)`` (e.g. mask gradients) -> optimizer step ->
    ``after_step(step)`` (e.g. re-apply masks, update them on a schedule).
    Returns ``{"loss", "acc", "steps"}`` for the epoch; raises ``Diverged`` when the loss is not finite.
    """
    device = next(model.parameters()).device
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    step = first_step
    batches = split.epoch(epoch)
    if progress is not None:
        batches = progress.wrap(batches, len(split), desc)
    net = distributed.wrap(model)  # DistributedDataParallel across ranks; the model itself in one process
    for x, y in batches:
        scale = None
        if net is not model:  # this rank's shard of the global batch (common.distributed)
            x, y, scale = distributed.shard(x, y)
        set_lr(optimizer, lr_of_step(step))
        with autocast(device):
            out = net(_to_input(x, device))
            loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        (loss if scale is None else loss * scale).backward()
        if before_step is not None:
            before_step(step)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        total_loss += loss.detach() * y.shape[0]
        if out.dim() == 2 and out.shape[1] > 1:
            correct += (out.detach().argmax(1) == y).sum()
        seen += y.shape[0]
        step += 1
    if net is not model:  # the epoch's statistics over every rank's shards (one reduction per epoch)
        total_loss, correct, seen = distributed.all_sum(total_loss, correct, seen)
    loss_value = float(total_loss) / max(seen, 1)
    if not math.isfinite(loss_value):
        raise Diverged(f"training loss became {loss_value} in epoch {epoch + 1}; lower the learning rate")
    return {"loss": loss_value, "acc": int(correct) / max(seen, 1), "steps": step - first_step}


@torch.no_grad()
def evaluate(model: nn.Module, split, loss_fn: Callable = nn.functional.cross_entropy) -> dict:
    """Mean loss over an evaluation split (model in eval mode, restored afterwards), and top-1 accuracy ``acc`` for a
    classifier or, for a one-output model (a binary logit, e.g. Criteo's), ROC AUC ``auc`` and no accuracy."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    logits, labels = [], []  # one-output models: every score, for the AUC
    for x, y in split.epoch(0):
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
    if logits:
        return {"loss": float(total_loss) / max(seen, 1), "auc": roc_auc(torch.cat(logits), torch.cat(labels))}
    return {"loss": float(total_loss) / max(seen, 1), "acc": int(correct) / max(seen, 1)}


# ---------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def resumable_epochs(run, total: int, state: dict, extra: Callable[[], dict] | None = None):
    """Yield epoch indices ``start .. total-1``, checkpointing ``state`` after each epoch and resuming from the last.

    ``state`` maps names to objects with ``state_dict``/``load_state_dict`` (model, optimizer, masks, ...); the loop
    body may replace entries (a fresh optimizer at a phase boundary) and the replacement is what gets saved. With the
    RNG state saved too and data order a function of (seed, epoch), a resumed run equals an uninterrupted one.
    A resume says so on standard error and logs ``{"event": "resume", "from_epoch": k}`` (no ``epoch`` key: readers
    of the per-epoch records skip it like any other event).
    """
    ckpt = run.load_checkpoint()
    start = 0
    if ckpt is not None:
        for name, obj in state.items():
            obj.load_state_dict(ckpt[name])
        set_rng_state(ckpt["rng"])
        start = int(ckpt["epoch"])
        if distributed.is_main():
            print(f"resuming from epoch {start} of {total}: {run.checkpoint_path}", file=sys.stderr, flush=True)
        run.log(event="resume", from_epoch=start)
    for epoch in range(start, total):
        yield epoch
        run.save_checkpoint({**{n: o.state_dict() for n, o in state.items()}, "epoch": epoch + 1, "rng": rng_state()})
