"""One sparsity mechanism for every method: prunable weights, masks, top-k selection, block and structured views.

- ``prunable(model, exclude)``: the Conv2d/Linear weights a method may prune, in module order (``check_patterns``
  refuses a layer-name pattern that matches no layer; ``pruned_layers`` also one that leaves no layer to prune).
- ``check_keeps_some``: refuses a target sparsity whose top-k would leave a pruned layer no weight.
- ``topk_mask(scores, sparsity, ties=...)``: the one top-k selection (a mask from scores), with its tie rule
  explicit; ``topk_masks`` applies it to named tensors, over all of them (global) or to each (layer).
- ``apply_masks`` / ``mask_grads`` / ``mask_optimizer_state``: the enforcement that keeps pruned weights exactly zero
  through SGD momentum, Adam moments and weight decay: gradients are masked before each step, weights after it, and
  the optimizer's state whenever the masks change. ``Masks`` holds one 0/1 mask per prunable weight and enforces it
  (GMP, IMP/OMP, retraining); the reparameterizations keep their own masks and enforce them with these functions:
  BiP (``bip.scores``) masks theta's gradients, SA++ (``seqattn.attention``) zeroes pruned blocks and their state.
- ``BlockView``: a weight seen as BxB tiles of its (H*W*Cin) x Cout matrix (Linear: in x out), zero-padded;
  ``BlockView.expand`` is the one broadcast of one value per block to the weight's shape.
- ``filter_norms`` / ``channel_norms`` + ``expand_structured``: filter (output channel) and input-channel views.
- ``report``: exact sparsity, per layer and global, over prunable weights and over all parameters.
"""
from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

from common.errors import UserError

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def check_sparsity(sparsity: float, name: str = "sparsity") -> None:
    if not (0.0 <= sparsity < 1.0) or math.isnan(sparsity):
        raise UserError(f"--{name} {sparsity} is outside [0, 1); give the fraction of weights to remove, e.g. 0.9")


# ------------------------------------------------------------------------------------------------ prunable weights
def prunable(model: nn.Module, exclude=("last",)) -> dict[str, nn.Parameter]:
    """The prunable weights ``{module_name + '.weight': parameter}`` of every Conv2d/Linear, in module order.

    ``exclude`` holds ``"first"`` (the first Conv2d/Linear), ``"last"`` (the last one: the classifier), and/or
    module-name patterns (fnmatch, e.g. ``"layer4.*"``); a pattern that matches no layer is a UserError.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    if not layers:
        return {}
    check_patterns(model, [rule for rule in exclude if rule not in ("first", "last")], "exclude", "first, last")
    skip = set()
    for rule in exclude:
        if rule == "first":
            skip.add(layers[0][0])
        elif rule == "last":
            skip.add(layers[-1][0])
        else:
            skip.update(name for name, _ in layers if fnmatch.fnmatchcase(name, rule))
    return {f"{name}.weight": m.weight for name, m in layers if name not in skip}


def pruned_layers(model: nn.Module, exclude) -> dict[str, nn.Parameter]:
    """``prunable(model, exclude)``, refused in one line when ``exclude`` leaves no layer to prune (a method's
    ``validate``: before anything is computed)."""
    params = prunable(model, exclude)
    if not params:
        raise UserError(f"--exclude {','.join(exclude)} leaves no layer to prune (the model's Conv2d/Linear layers: "
                        f"{', '.join(layer_names(model))}); exclude fewer layers")
    return params


def check_keeps_some(counts: dict[str, int], sparsity: float, scope: str, flag: str, unit: str = "weights") -> None:
    """Refuse a sparsity whose top-k (``num_to_prune``) leaves a pruned layer nothing. ``counts``: each pruned layer's
    number of units (weights, blocks, filters, input channels). ``layer`` scope: each layer's own top-k must keep at
    least one of its units (the smallest layer empties first). ``global`` scope: the one top-k over all units must keep
    at least one per layer; keeping fewer empties some layer whatever the scores (which layers keep the survivors
    depends on the scores, so that is all a target can be refused for)."""
    if not counts:
        return
    smallest = min(counts, key=lambda n: counts[n])
    if scope == "layer":
        for name in sorted(counts, key=lambda n: counts[n]):
            n = counts[name]
            if n - num_to_prune(sparsity, n) < 1:
                raise UserError(f"--{flag} {sparsity} leaves layer {name} ({n} {unit}) with none under a per-layer "
                                f"ratio; lower the sparsity (1 - 1/{n} keeps one) or leave the layer dense with "
                                f"--exclude")
        return
    total = sum(counts.values())
    kept = total - num_to_prune(sparsity, total)
    if kept < len(counts):
        layers = len(counts)
        raise UserError(f"--{flag} {sparsity} keeps {kept} of the {total} {unit} under a global ranking, fewer than "
                        f"one for each of the {layers} pruned layers (the smallest: {smallest}, {counts[smallest]} "
                        f"{unit}); lower the sparsity (1 - {layers}/{total} keeps {layers})")


def layer_names(model: nn.Module) -> list[str]:
    """The names of the Conv2d/Linear modules, in module order (what layer-name patterns are matched against)."""
    return [name for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


def check_patterns(model: nn.Module, patterns, option: str, keywords: str = "") -> None:
    """Refuse a layer-name pattern (fnmatch) that matches no Conv2d/Linear layer of ``model``: a typo would prune the
    layer it meant to keep dense. The message names the layers that exist (and the ``keywords`` also accepted)."""
    names = layer_names(model)
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        also = f" (or {keywords})" if keywords else ""
        raise UserError(f"--{option} {','.join(unmatched)}: no layer of the model matches; its Conv2d/Linear "
                        f"layers are: {', '.join(names)}; give their names or fnmatch patterns such as "
                        f"'layers.*.conv2'{also}")


# ------------------------------------------------------------------------------------------------ top-k
def num_to_prune(sparsity: float, numel: int) -> int:
    """k, the entries a top-k at ``sparsity`` prunes: Python's round(), as torch.nn.utils.prune does (our masks equal
    its masks)."""
    return round(sparsity * numel)


def topk_mask(scores: torch.Tensor, sparsity: float, *, ties: str, kth=None) -> torch.Tensor:
    """A bool mask of ``scores``' shape keeping the largest scores: k = ``num_to_prune(sparsity, n)`` of the n are
    pruned (none when k = 0). ``ties`` decides the scores equal to the k-th smallest:

    - ``"exact"``: exactly k pruned, the k smallest by ``torch.topk`` (among scores tied with the k-th smallest,
      ``torch.topk``'s order picks): the sparsity is exactly k / n and the masks are torch.nn.utils.prune's. GMP,
      IMP/OMP, SA++ and its block baselines (a clipped attention ties at its bound).
    - ``"prune_all"``: every score <= the k-th smallest is pruned: a threshold, a value found by a selection (no
      index scatter, no host sync, the same on a CPU and on CUDA), so ties at it add to the sparsity. BiP and Hydra,
      whose projection runs at every step; ``kth(flat, k)`` finds the value (default ``torch.kthvalue``).
    """
    flat = scores.detach().reshape(-1)
    k = num_to_prune(sparsity, flat.numel())
    if ties not in ("exact", "prune_all"):
        raise ValueError(f"unknown tie rule '{ties}'; choose exact or prune_all")
    if k == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if ties == "prune_all":
        return scores.detach() > (kth(flat, k) if kth is not None else torch.kthvalue(flat, k).values)
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, largest=False).indices] = False
    return keep.view_as(scores)


def topk_masks(scores: dict[str, torch.Tensor], sparsity: float, scope: str, *, ties: str) -> dict[str, torch.Tensor]:
    """``topk_mask`` over named score tensors: all of them together (``global``) or each separately (``layer``: a
    uniform ratio per layer)."""
    if scope == "layer":
        return {n: topk_mask(s, sparsity, ties=ties) for n, s in scores.items()}
    if scope != "global":
        raise UserError(f"unknown pruning scope '{scope}'; choose global or layer")
    names = list(scores)
    keep = topk_mask(torch.cat([scores[n].detach().reshape(-1) for n in names]), sparsity, ties=ties)
    parts = keep.split([scores[n].numel() for n in names])
    return {n: part.view_as(scores[n]) for n, part in zip(names, parts)}


def magnitudes(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: p.detach().abs() for n, p in params.items()}


# ------------------------------------------------------------------------------------------------ enforcement
@torch.no_grad()
def apply_masks(tensors: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    """Zero the pruned entries in place, tensors (.)= masks in one fused multiply (weights: after every step)."""
    torch._foreach_mul_(tensors, masks)


@torch.no_grad()
def mask_grads(params: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    """Zero the gradients of pruned weights (before every optimizer step); weights without a gradient are skipped."""
    grads = [p.grad for p in params if p.grad is not None]
    if len(grads) == len(params):
        torch._foreach_mul_(grads, masks)
    else:
        for p, m in zip(params, masks):
            if p.grad is not None:
                p.grad.mul_(m)


@torch.no_grad()
def mask_optimizer_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                         masks: list[torch.Tensor]) -> None:
    """Zero the optimizer's per-weight state of pruned weights (SGD momentum, Adam moments: every state tensor of the
    weight's shape), whenever the masks change: a pruned weight gets no update from what it had accumulated."""
    for p, m in zip(params, masks):
        for value in optimizer.state.get(p, {}).values():
            if torch.is_tensor(value) and value.shape == p.shape:
                value.mul_(m)


# ------------------------------------------------------------------------------------------------ masks
class Masks:
    """0/1 masks over a set of prunable weights, kept in the weights' dtype so one fused multiply enforces them."""

    def __init__(self, params: dict[str, nn.Parameter]):
        self.params = params
        self.masks = {n: torch.ones_like(p, memory_format=torch.preserve_format).detach() for n, p in params.items()}
        self._refresh()

    def _refresh(self):
        self._p = [self.params[n] for n in self.masks]
        self._m = [self.masks[n] for n in self.masks]

    @torch.no_grad()
    def set(self, masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Install new masks, zero the pruned weights, and mask the optimizer's per-weight state (momentum, moments)."""
        for n, m in masks.items():
            self.masks[n].copy_(m)
        self._refresh()
        self.apply()
        if optimizer is not None:
            self.mask_optimizer_state(optimizer)

    def apply(self) -> None:
        """Zero the pruned weights (call after every optimizer step)."""
        apply_masks(self._p, self._m)

    def mask_grads(self) -> None:
        """Zero the gradients of pruned weights (call before every optimizer step)."""
        mask_grads(self._p, self._m)

    def mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        mask_optimizer_state(optimizer, self._p, self._m)

    def density(self) -> float:
        kept = sum(float(m.sum()) for m in self._m)
        return kept / max(1, sum(m.numel() for m in self._m))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.clone() for n, m in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.masks) ^ set(state)
        if missing:
            raise UserError(f"saved masks do not match this model's prunable layers: {sorted(missing)[:3]}")
        self.set(state)


# ------------------------------------------------------------------------------------------------ block views
class BlockView:
    """A weight as a matrix of BxB tiles: conv (Cout, Cin, H, W) -> (H*W*Cin) x Cout; linear (out, in) -> in x out.

    The matrix is zero-padded to multiples of B, so edge blocks are smaller in effect; ``n_blocks`` counts all tiles.
    """

    def __init__(self, shape: torch.Size, block: int):
        if block < 1:
            raise UserError(f"block size {block} must be a positive integer")
        self.shape, self.block = tuple(shape), block
        if len(self.shape) == 4:
            cout, cin, h, w = self.shape
            self.rows, self.cols = h * w * cin, cout
        elif len(self.shape) == 2:
            self.rows, self.cols = self.shape[1], self.shape[0]
        else:
            raise UserError(f"cannot view a weight of shape {self.shape} as blocks (Conv2d or Linear only)")
        self.grid = (math.ceil(self.rows / block), math.ceil(self.cols / block))
        self.n_blocks = self.grid[0] * self.grid[1]
        # the blocks tile the weight exactly (no padding, conv: whole blocks of input channels): the fast expand
        self.exact = self.rows % block == 0 and self.cols % block == 0 and (
            len(self.shape) == 2 or self.shape[1] % block == 0)

    def to_matrix(self, w: torch.Tensor) -> torch.Tensor:
        return w.permute(2, 3, 1, 0).reshape(self.rows, self.cols) if w.dim() == 4 else w.t()

    def from_matrix(self, m: torch.Tensor) -> torch.Tensor:
        if len(self.shape) == 4:
            cout, cin, h, w = self.shape
            return m.reshape(h, w, cin, cout).permute(3, 2, 0, 1)
        return m.t()

    def tiles(self, w: torch.Tensor) -> torch.Tensor:
        """(grid_rows, B, grid_cols, B) zero-padded tiles of the weight's matrix."""
        b, (gr, gc) = self.block, self.grid
        m = torch.nn.functional.pad(self.to_matrix(w), (0, gc * b - self.cols, 0, gr * b - self.rows))
        return m.reshape(gr, b, gc, b)

    def norms(self, w: torch.Tensor) -> torch.Tensor:
        """Frobenius norm of every block: shape ``grid``."""
        return self.tiles(w).pow(2).sum(dim=(1, 3)).sqrt()

    def expand(self, values: torch.Tensor) -> torch.Tensor:
        """Broadcast one value per block (shape ``grid``) to a contiguous tensor of the weight's shape and layout
        (differentiable): block masks, SA++'s attention scales. Exact tilings take two broadcast copies, first along
        the input axis (a small tensor), then over the B output rows of each block; ``expand_reference`` otherwise."""
        if not self.exact:
            return self.expand_reference(values)
        b, (gr, gc) = self.block, self.grid
        if len(self.shape) == 2:  # (out, in) = (gc*B, gr*B): weight[o, i] is in block (i // B, o // B)
            per = values.t()[:, :, None]                                              # (gc, in/B, 1)
        else:                     # matrix row (h, w, cin) -> block row (h, w, cin // B)
            cout, cin, h, k = self.shape
            per = values.view(h, k, cin // b, gc).permute(3, 2, 0, 1)[:, :, None]    # (gc, cin/B, 1, h, k)
        rows = per.expand(gc, per.shape[1], b, *per.shape[3:]).reshape(gc, -1)        # (gc, in * h * k)
        return rows[:, None].expand(gc, b, rows.shape[1]).reshape(self.shape)

    def expand_reference(self, values: torch.Tensor) -> torch.Tensor:
        """``expand`` through the padded matrix of tiles: any shape (the plain path the fast one must equal)."""
        b, (gr, gc) = self.block, self.grid
        m = values[:, None, :, None].expand(gr, b, gc, b).reshape(gr * b, gc * b)[: self.rows, : self.cols]
        return self.from_matrix(m).contiguous()


# ------------------------------------------------------------------------------------------------ structured views
def filter_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each filter (output channel)."""
    return w.reshape(w.shape[0], -1).norm(dim=1)


def channel_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each input channel's slice."""
    return w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1)


def expand_structured(values: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    """Broadcast one value per filter (dim 0) or input channel (dim 1) to a weight's shape."""
    view = [1] * len(shape)
    view[dim] = -1
    return values.reshape(view).expand(shape).contiguous()


# ------------------------------------------------------------------------------------------------ reports
@torch.no_grad()
def report(model: nn.Module, params: dict[str, torch.Tensor]) -> dict:
    """Exact sparsity: per prunable layer, over all prunable weights, and over every parameter of the model."""
    layers = []
    for n, p in params.items():
        nnz = int(torch.count_nonzero(p))
        layers.append({"layer": n, "shape": list(p.shape), "numel": p.numel(), "nonzero": nnz,
                       "sparsity": 1.0 - nnz / p.numel()})
    pr_total = sum(x["numel"] for x in layers)
    pr_nnz = sum(x["nonzero"] for x in layers)
    all_total = sum(p.numel() for p in model.parameters())
    all_nnz = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {
        "sparsity": 1.0 - pr_nnz / max(1, pr_total),            # over prunable weights
        "sparsity_all_params": 1.0 - all_nnz / max(1, all_total),
        "prunable_params": pr_total, "nonzero_prunable_params": pr_nnz,
        "params": all_total, "nonzero_params": all_nnz,
        "layers": layers,
    }
