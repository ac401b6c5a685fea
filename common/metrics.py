"""Model metrics: parameter counts, FLOPs (dense and sparsity-aware), CPU latency, and the end-of-run report every
script's result starts from (``final_report``).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` -- no per-layer formulas here.
"""

from __future__ import annotations

import copy
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from common import sparsity as S


@contextmanager
def _eval_mode(model: nn.Module):
    """Put every submodule in eval mode, then restore each one's own train/eval flag."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.train(training)


def _effective(module: nn.Module, name: str) -> torch.Tensor:
    """The tensor the module computes with: ``torch.nn.utils.prune`` keeps the dense
    values in ``<name>_orig`` and a ``<name>_mask`` buffer; the product is ``module.<name>``."""
    if name.endswith("_orig") and hasattr(module, name[: -len("_orig")] + "_mask"):
        return getattr(module, name[: -len("_orig")])
    return getattr(module, name)


def count_params(model: nn.Module) -> dict:
    """``{"params": total parameter entries, "nonzero_params": nonzero entries}``.

    Shared parameters are counted once. For modules pruned with ``torch.nn.utils.prune``
    the nonzero count uses the masked weight, not the dense ``weight_orig``.
    """
    total = nonzero = 0
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            nonzero += int(torch.count_nonzero(_effective(module, name).detach()))
    return {"params": total, "nonzero_params": nonzero}


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model without either."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def flops(model: nn.Module, input_shape, device=None) -> dict:
    """FLOPs of one forward pass on a batch of one input of shape ``input_shape`` (C, H, W).

    Counted by ``FlopCounterMode``, which reports 2 x multiply-accumulates for convolutions
    and matrix products (bias adds, BN, activations and pooling are not counted); the numbers
    are returned as the counter gives them, so ``flops / 2`` is the MAC count.

    Returns ``{"flops": dense count, "effective_flops": count with every Conv2d / Linear's
    FLOPs scaled by the nonzero fraction of its weight}``; all other ops stay dense. Masked
    weights must be zero in the weight tensor itself (or applied via ``torch.nn.utils.prune``).
    A physically smaller model (channels removed) is simply measured again.

    Runs in eval mode without gradients (no BN statistic updates) and restores the model's
    train/eval flags afterwards. The input is built on ``device``, by default the model's own (see
    :func:`model_device`): a model on a GPU is measured there.
    """
    x = torch.zeros(1, *input_shape, device=model_device(model) if device is None else device)
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    counts = counter.get_flop_counts()
    dense = counter.get_total_flops()

    # FlopCounterMode attributes ops to modules by dotted name, rooted at the class name of
    # `model` (e.g. "ResNet.layers.0.0.conv1"); use it to find each weighted layer's share.
    root = type(model).__name__
    effective, attributed = dense, 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        layer = sum(counts.get(f"{root}.{name}" if name else root, {}).values())
        weight = module.weight.detach()
        density = int(torch.count_nonzero(weight)) / weight.numel()
        effective -= layer * (1.0 - density)
        attributed += layer
    if dense and not attributed and any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()):
        raise RuntimeError("FlopCounterMode attributed no FLOPs to any Conv2d/Linear; module naming changed?")
    return {"flops": int(dense), "effective_flops": int(round(effective))}


def final_report(model: nn.Module, data, params: dict | None = None, *, loss_fn=None, val: bool = False,
                 costs: bool = True, sparsity_key: str = "sparsity") -> dict:
    """The metrics of a run's final ``model`` that results share, under the keys ``result.json`` holds them:

    - ``common.train.evaluate`` on ``data.test`` (``loss_fn``: default cross-entropy) as ``test_<metric>``:
      ``test_loss`` and ``test_acc`` (a one-logit model: ``test_auc``); with ``val``, ``val_acc`` on ``data.val``
      when the data has a validation split;
    - with ``params`` (the prunable weights, name -> tensor), ``common.sparsity.report`` over them: their measured
      sparsity under ``sparsity_key`` (a script whose ``sparsity`` is another quantity, e.g. of its masks, names it
      otherwise), ``sparsity_all_params`` (over every parameter) and the per-layer table ``layers``;
    - with ``costs``, ``count_params`` (``params``, ``nonzero_params``) and ``flops`` on one input of the dataset's
      shape (``flops``, ``effective_flops``).

    A script's compute adds its own fields (dense accuracy, method time, ...) to it."""
    from common.train import evaluate  # (common.train imports this module)

    test = evaluate(model, data.test) if loss_fn is None else evaluate(model, data.test, loss_fn)
    out = {f"test_{k}": v for k, v in sorted(test.items())}  # test_acc (or test_auc), then test_loss
    if val and data.val is not None:
        out["val_acc"] = evaluate(model, data.val)["acc"]
    if params is not None:
        rep = S.report(model, params)
        out.update({sparsity_key: rep["sparsity"], "sparsity_all_params": rep["sparsity_all_params"],
                    "layers": rep["layers"]})
    if costs:
        out.update(count_params(model), **flops(model, data.info.input_shape))
    return out


def latency_ms(model: nn.Module, input_shape, batch_size: int = 1, repeats: int = 30,
               warmup: int = 5, threads: int | None = None) -> float:
    """Median CPU wall time (milliseconds) of one forward pass in eval mode without gradients.

    ``threads`` temporarily sets ``torch.set_num_threads`` (default: leave it as is). A model
    that is not on the CPU is measured on a CPU copy; the model's train/eval flags are restored.
    """
    if any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()]):
        model = copy.deepcopy(model).cpu()
    x = torch.randn(batch_size, *input_shape)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    times = []
    try:
        with _eval_mode(model), torch.no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(old_threads)
    return float(statistics.median(times))



def paired_latency_ms(models: dict, input_shape, batch_size: int = 1, rounds: int = 3, repeats: int = 10,
                      warmup: int = 2, threads: int | None = 1) -> dict:
    """``{name: median latency (ms)}`` of several models measured alternately, ``rounds`` times each (the median of
    the rounds' ``latency_ms`` medians), so that load from other processes hits all of them alike."""
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(latency_ms(model, input_shape, batch_size=batch_size, repeats=repeats, warmup=warmup,
                                          threads=threads))
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (higher: more likely positive) for 0/1 ``labels``, by ranks: the
    Mann-Whitney U statistic of the positives' ranks over n_pos * n_neg, tied scores sharing their mean rank (a tie
    counts 1/2). NaN when only one class is present."""
    scores, positive = scores.reshape(-1).double(), labels.reshape(-1) > 0.5
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    mean_rank = torch.cumsum(counts, 0).double() - (counts.double() - 1.0) / 2.0  # ranks 1..n, ties averaged
    rank_sum = float(mean_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
