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
- evaluation (``common.train.evaluate``) deals the split's samples out the same way, each rank evaluating its rows
  once, and sums the ranks' loss, correct and sample counts (``all_sum``; a one-logit model's scores are gathered for
  its AUC: ``all_gather_cat``), so every rank returns the one-process metrics;
- ``--sync-bn`` (``set_sync_batchnorm``): the BatchNorm layers of a wrapped model normalize with the statistics of
  the global batch (``sync_batchnorm``); without it each rank uses its shard's, and DDP gives every rank rank 0's
  running statistics at each forward;
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


_wrapped: list[nn.Module] = []  # the DDP wrapper of the model being trained (one at most)


def wrap(model: nn.Module) -> nn.Module:
    """The model wrapped in DDP, or the model itself in a single process. Parameters are shared: optimizers and masks
    see no change.

    The wrapper is made once per model, so every rank builds it at the same point of its first epoch, and kept while
    that model trains: wrapping another model (the next one a script trains: a pruned copy, a model after its dense
    dependency) drops the previous wrapper, whose gradient buckets would otherwise live as long as the process.
    With ``--sync-bn`` its BatchNorm layers are first made to normalize with the global batch's statistics."""
    if not active():
        return model
    if not _wrapped or _wrapped[0].module is not model:
        _wrapped.clear()
        device = next(model.parameters()).device
        if _sync_bn:
            sync_batchnorm(model, device)
        _wrapped.append(nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None))
    return _wrapped[0]


_sync_bn: list[bool] = []  # [True] under --sync-bn (set_sync_batchnorm)


def set_sync_batchnorm(on: bool) -> None:
    """``--sync-bn``: ``wrap`` converts a model's BatchNorm layers with ``sync_batchnorm`` (only runs of several
    ranks wrap anything: one process is unchanged)."""
    _sync_bn[:] = [True] if on else []


class _AllSum(torch.autograd.Function):
    """The sum over ranks of a tensor, differentiable: the gradient of each rank's input is the sum of every rank's
    gradient of the total (each rank's loss depends on every rank's input through it)."""

    @staticmethod
    def forward(ctx, values: torch.Tensor) -> torch.Tensor:
        total = values.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SumSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of every rank, from plain tensor operations: what ``torch.nn.SyncBatchNorm``
    computes, for the CPU (gloo), where torch has no SyncBatchNorm kernels (and DDP refuses a CPU model holding one).

    In training each rank's per-channel sums of x and x^2 and its row count are summed over the ranks in one
    all_reduce, in float64; it is differentiable, its backward summing every rank's gradient of the statistics, so
    the gradients are those of one process normalizing the whole batch. In eval mode, or in one process, it is plain
    BatchNorm (the running statistics, updated with the unbiased global variance, as BatchNorm does)."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        c, xd = x.shape[1], x.double()
        local = torch.cat([xd.sum(dims), (xd * xd).sum(dims), xd.new_full((1,), x.numel() // c)])
        total = _AllSum.apply(local)
        n = total[-1]
        mean = total[:c] / n
        var = total[c:2 * c] / n - mean * mean  # biased: what normalizes the batch
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), factor)
        out = ((xd - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)).to(x.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(model: nn.Module, device: torch.device) -> None:
    """Replace, in place, every BatchNorm layer below ``model`` (on ``device``) by one over the global batch of all
    ranks: ``torch.nn.SyncBatchNorm`` on GPUs, :class:`SumSyncBatchNorm` on the CPU. The new layers hold the same
    parameter and buffer tensors under the same names (optimizers, checkpoints and state dicts see no change)."""
    layers = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
              if isinstance(child, nn.modules.batchnorm._BatchNorm)
              and not isinstance(child, (nn.SyncBatchNorm, SumSyncBatchNorm))]
    cls = SumSyncBatchNorm if device.type == "cpu" else nn.SyncBatchNorm
    for parent, name, bn in layers:
        sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(sync, key, getattr(bn, key))
        sync.train(bn.training)
        setattr(parent, name, sync)


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


def all_gather_cat(values: torch.Tensor) -> torch.Tensor:
    """Every rank's 1-D ``values`` (of any length), concatenated in rank order, on every rank (two collectives: the
    lengths, then the values padded to the longest)."""
    device = values.device
    if backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([values.numel()], device=device))
    longest = int(max(sizes))
    padded = torch.zeros(longest, dtype=values.dtype, device=device)
    padded[:values.numel()] = values.reshape(-1)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(size)] for part, size in zip(parts, sizes)]).to(values.device)


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
