"""Which channels go: Torch-Pruning groups of coupled channels, ranked by group importance under one global ratio.

A *group* (Torch-Pruning's dependency graph) is every slice that must be removed together with one output channel:
the conv/linear rows producing it, its BatchNorm entries, the input columns of every consumer, and, across residual
adds, the same channel of every branch joined by the add. Importance of channel c of a group (the paper's group
importance, as Torch-Pruning's GroupMagnitudeImportance computes it):

    I_c = mean over the group's layers of ||W_l[c]||_2^2,   then  I <- I / mean(I)     (mean-normalized per group)

and one threshold over all groups removes ``ratio`` of all prunable channels (a global channel ratio); the
classifier's outputs (and those of layers matched by ``ignore``) are never pruned. The L1-norm baseline (Li et al.
2017) ranks each layer's filters by the L1 norm of its own filter and removes ``ratio`` of every layer's channels.

``Plan`` holds the chosen groups before anything is removed, so that phase 1 can first shrink exactly those
channels' weights (their conv/linear rows, their consumers' columns, their BN gamma); ``Plan.remove()`` then removes
them physically (a smaller dense model).
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from common import sparsity as S
from common.errors import UserError

F = tp.pruner.function
OUT_FNS = (F.prune_conv_out_channels, F.prune_linear_out_channels, F.prune_batchnorm_out_channels)
IN_FNS = (F.prune_conv_in_channels, F.prune_linear_in_channels)
RECORDED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)  # the layers whose outputs are reconstructed


def importance(criterion: str):
    """Torch-Pruning importance: ``group-l2`` (ours: squared L2, mean over the group, mean-normalized) or ``l1``."""
    if criterion == "group-l2":
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")
    if criterion == "l1":  # the filter's own L1 norm (the group's first layer), not normalized
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="first", normalizer=None)
    raise UserError(f"unknown importance '{criterion}'; choose group-l2 or l1")


@dataclass
class Plan:
    """The groups to remove from ``model`` and, per recorded layer, the output channels that stay."""

    model: nn.Module
    groups: list = field(default_factory=list)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)  # layer name -> kept output channel indices

    def slices(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, 0/1 mask of its to-be-removed entries): the target of phase 1's sparsity penalty. As the
        official code, in every group: the producing conv/linear weight rows, the consumers' weight columns and the
        BN scale gamma of the channels to remove. Biases and BN's beta are never penalized."""
        masks: dict[nn.Parameter, torch.Tensor] = {}

        def mark(p, index):
            m = masks.setdefault(p, torch.zeros_like(p, dtype=torch.bool))
            m[index] = True

        for group in self.groups:
            for dep, idxs in group:
                layer, fn, idxs = dep.target.module, dep.handler, list(idxs)
                if fn == F.prune_batchnorm_out_channels:
                    if layer.weight is not None:  # an affine BN
                        mark(layer.weight, idxs)  # gamma
                elif fn in OUT_FNS:
                    mark(layer.weight, idxs)
                elif fn in IN_FNS and getattr(layer, "groups", 1) == 1:
                    mark(layer.weight, (slice(None), idxs))
        return [(p, m.to(p.dtype)) for p, m in masks.items()]

    def remove(self) -> None:
        """Physically remove every planned channel (Torch-Pruning slices weights, BN statistics and consumers)."""
        for group in self.groups:
            group.prune()


def ignored(model: nn.Module, patterns=()) -> list[nn.Module]:
    """The classifier (never pruned) and the layers whose names match ``patterns`` (fnmatch): their output channels
    stay, and so does every channel coupled to them. A pattern that matches no layer is refused."""
    S.check_patterns(model, patterns, "ignore")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, S.PRUNABLE_TYPES)]
    return [layers[-1][1]] + [m for n, m in layers if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def plan(model: nn.Module, example: torch.Tensor, ratio: float, criterion: str = "group-l2",
         scope: str = "global", ignore=()) -> Plan:
    """Rank the channels of ``model`` and choose ``ratio`` of them (nothing is removed yet; see ``check_traceable``
    for models whose channels Torch-Pruning cannot follow)."""
    names = {m: n for n, m in model.named_modules()}
    result = Plan(model, _groups(model, example, ratio, criterion, scope, ignore))
    for group in result.groups:
        for dep, idxs in group:
            layer = dep.target.module
            if dep.handler in OUT_FNS and isinstance(layer, RECORDED):
                drop = torch.zeros(layer.weight.shape[0], dtype=torch.bool)
                drop[list(idxs)] = True
                result.kept[names[layer]] = (~drop).nonzero().flatten()
    return result


def _groups(model, example, ratio, criterion, scope, ignore=()) -> list:
    """Torch-Pruning's choice: the groups (with the channel indices) to remove."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:  # Torch-Pruning traces the autograd graph, which frozen parameters would not enter
        p.requires_grad_(True)
    try:
        pruner = tp.pruner.BasePruner(model, example, importance=importance(criterion),
                                      global_pruning=scope == "global", pruning_ratio=ratio,
                                      ignored_layers=ignored(model, ignore))
        groups = [_keep_one(pruner.DG, g) for g in pruner.step(interactive=True)]
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning's own errors become one line
        raise UserError(f"Torch-Pruning cannot build the dependency graph of this model "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    finally:
        for p in frozen:
            p.requires_grad_(False)
    return [g for g in groups if g is not None]


def _keep_one(dg, group):
    """A global threshold may select every channel of a group; keep its most important one so the model still runs."""
    dep, idxs = group[0]
    width = dg.get_out_channels(dep.target.module) if dg.is_out_channel_pruning_fn(dep.handler) \
        else dg.get_in_channels(dep.target.module)
    idxs = list(idxs)
    if width is None or len(idxs) < width:
        return group
    if width == 1:
        return None
    scores = importance("group-l2")(group)
    keep = int(torch.argmax(scores))
    return dg.get_pruning_group(dep.target.module, dep.handler, [i for i in idxs if i != keep])


def check_traceable(model: nn.Module, example: torch.Tensor, ratio: float = 0.5, ignore=()) -> None:
    """Fail with one line naming the layer when Torch-Pruning's channel tracking breaks on ``model``.

    Torch-Pruning follows channels through the autograd graph; a parameter-free op that changes the channel count
    (such as the zero-padding option-A shortcut of CIFAR ResNet-20/32/56) is invisible to it, and the pruned model
    no longer runs. Trial: carry out the same plan on a copy and run it.
    """
    trial = copy.deepcopy(model).eval()
    names = {m: n for n, m in trial.named_modules()}
    for group in _groups(trial, example, max(ratio, 0.1), "group-l2", "global", ignore):
        group.prune()
    failing = _run_and_name(trial, example, names)
    if failing is None:
        return
    where, why = failing
    suspects = _channel_changing_ops(model, example, {m: n for n, m in model.named_modules()})
    hint = f"; the channel-changing op it cannot follow is '{suspects[0]}'" if suspects else ""
    raise UserError(f"Torch-Pruning cannot trace this model's channels: after removing channels, layer '{where}' "
                    f"fails{why}{hint}; use a model with projection shortcuts (e.g. resnet8, resnet18, vgg), or keep "
                    f"the channels around such ops with --ignore (option-A ResNets: --ignore conv1,layers.*.conv2)")


def _channel_changing_ops(model, example, names) -> list[str]:
    """Parameter-free leaf modules (other than Flatten) whose output has a different channel count than the input."""
    found = []
    leaves = [m for m in model.modules() if next(m.children(), None) is None
              and not any(True for _ in m.parameters(recurse=False)) and not isinstance(m, nn.Flatten)]
    forward_with_hooks(model, example, leaves, lambda mod, inp, out: found.append(names[mod])
                       if inp and inp[0].dim() > 1 and out.dim() > 1 and inp[0].shape[1] != out.shape[1] else None)
    return list(dict.fromkeys(found))


def forward_with_hooks(model: nn.Module, example: torch.Tensor, modules, hook) -> None:
    """One no-grad forward pass of ``example`` with ``hook`` attached to ``modules`` (removed afterwards)."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()


def _run_and_name(model, example, names):
    """None if ``model`` runs on ``example``, else (name of the layer that failed, ': reason')."""
    stack, hooks = [], []
    for m in model.modules():
        hooks.append(m.register_forward_pre_hook(lambda mod, inp: stack.append(names[mod])))
    try:
        with torch.no_grad():
            model(example)
        return None
    except RuntimeError as exc:
        return (stack[-1] or type(model).__name__) if stack else "?", f" ({str(exc).splitlines()[0][:100]})"
    finally:
        for h in hooks:
            h.remove()
