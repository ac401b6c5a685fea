"""Data-parallel training across processes (DistributedDataParallel), for the runs that need several GPUs.

Where the ranks come from:
- ``torchrun --nproc-per-node N -m <script> ...`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
  ``init_from_env()`` (called by ``common.cli.main``) joins that group;
- under Slurm, ``slurm.jobs.Job`` runs one task per GPU and opens ``group(...)`` with the ranks of submitit's job
  environment.
The backend is nccl on CUDA and gloo on CPU (PRUNING_DDP_BACKEND=gloo forces gloo). With one process (the default
everywhere) nothing here does anything.

What changes in a distributed run (and nothing else does):
- each rank loads and trains on its shard of every global batch only (``shard_rows``: rank r takes rows r, r + W,
  ... of the epoch's global order, which every rank computes alike from (seed, epoch); ``common.data`` applies it),
  the model is wrapped in DDP (``wrap``), which averages gradients, and ``loss_scale`` weighs each rank's mean loss,
  so a step equals the single-process step on the global batch;
- only rank 0 writes the run store (config, logs, checkpoints, result); the other ranks compute the same thing and
  wait at the end (``common.store.execute``).
"""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist
from torch import nn

from common.errors import UserError


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def backend() -> str:
    return "nccl" if torch.cuda.is_available() and os.environ.get("PRUNING_DDP_BACKEND", "") != "gloo" else "gloo"


TIMEOUT_ENV = "PRUNING_DDP_TIMEOUT_MINUTES"  # how long a collective waits for the slowest rank (default 30)


def timeout_minutes() -> float:
    """The collectives' timeout in minutes: ``$PRUNING_DDP_TIMEOUT_MINUTES``, default 30 (torch's NCCL default is
    10: too short for a rank that caches a dataset or writes a checkpoint while the others wait)."""
    raw = os.environ.get(TIMEOUT_ENV, "30")
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not minutes > 0 or minutes == float("inf"):
        raise UserError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of minutes")
    return minutes


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment; False when there is none (one process).
    Each rank takes GPU LOCAL_RANK modulo the GPUs it sees: one on a site that binds one GPU per task, or one of
    the node's GPUs where the task sees them all."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return active()
    timeout = datetime.timedelta(minutes=timeout_minutes())
    if torch.cuda.is_available() and backend() == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend(), timeout=timeout)
    return True


@contextlib.contextmanager
def group(rank_: int, world: int, local_rank: int, master: str, port: int | None = None):
    """One process group for the block (no-op for a single process): the Slurm tasks of one job."""
    if world <= 1:
        yield
        return
    job = int("".join(c for c in os.environ.get("SLURM_JOB_ID", "0") if c.isdigit()) or 0)
    os.environ.update(RANK=str(rank_), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank), MASTER_ADDR=master,
                      MASTER_PORT=str(port or 20000 + job % 20000))
    init_from_env()
    try:
        yield
    finally:
        dist.destroy_process_group()


_wrapped: dict[int, nn.Module] = {}


def wrap(model: nn.Module) -> nn.Module:
    """The model wrapped in DDP (made once per model, so every rank builds it at the same point of its first
    epoch), or the model itself in a single process. Parameters are shared: optimizers and masks see no change."""
    if not active():
        return model
    key = id(model)
    ddp = _wrapped.get(key)
    if ddp is None or ddp.module is not model:
        device = next(model.parameters()).device
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        _wrapped[key] = ddp
    return ddp


def shard_rows(rows: range, rank_: int, world: int) -> range:
    """Rank ``rank_``'s rows of a global batch at positions ``rows``: r, r + W, ... (all of them for one process).

    A pure function of (rows, rank, world): every rank computes its own share without talking to the others."""
    return rows[rank_::world]


def loss_scale(n_rank: int, n_global: int, world: int) -> float:
    """The factor for a rank's mean loss over its ``n_rank`` rows of a global batch of ``n_global``.

    DDP averages gradients over the W ranks; scaling rank r's mean loss by n_r * W / n makes that average the
    gradient of the mean loss over the whole global batch of n rows, also when n is not divisible by W.
    """
    return n_rank * world / n_global


def all_sum(*values):
    """The sums over ranks of scalar tensors / numbers (one collective); numbers come back as Python numbers."""
    device = next((v.device for v in values if torch.is_tensor(v)), torch.device("cpu"))
    if backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    dist.all_reduce(packed)
    out = []
    for v, total in zip(values, packed):
        if torch.is_tensor(v):
            out.append(total.to(v.dtype).to(v.device))
        else:
            out.append(type(v)(total.item()))
    return tuple(out)


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value):
    """Rank 0's ``value`` (any picklable object) on every rank: one collective."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def require_one_process(script: str, why: str) -> None:
    """Refuse a job of several processes (torchrun's WORLD_SIZE, or the tasks of one Slurm job) for a script whose
    loops are not data-parallel: every process would compute the whole run."""
    world = max(world_size(), int(os.environ.get("WORLD_SIZE", "1") or 1))
    if world > 1:
        raise UserError(f"{script} runs in one process, on one GPU ({why}); this job has {world} processes "
                        f"(WORLD_SIZE={world}), each of which would compute the whole run: start it without torchrun "
                        f"(or with --nproc-per-node 1), or submit it with python -m slurm.submit --gpus 1 (one task)")
