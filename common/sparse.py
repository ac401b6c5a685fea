"""Pruned layers computed sparse: Linear and Conv2d weights as torch.sparse CSR or BSR matrices, and the per-layer
choice between them and the dense layer, made by timing both (``python -m common.export --format csr|bsr``).

A layer's weight is one matrix W of shape (out, K): a Linear's weight itself; a Conv2d's (Cout, kh*kw*Cin) with its
columns in (kh, kw, cin) order, the transpose of ``common.sparsity.BlockView``'s matrix, so that BSR's BxB blocks are
the very blocks SA++ / ACDC / block magnitude prune. The layer computes ``W @ X`` (``torch.addmm``, the bias added in
the same call) where X is the (K, columns) matrix of its inputs: a Linear's input transposed, a Conv2d's im2col
patches (rows in (kh, kw, cin) order: one strided view of the zero-padded input, copied once). The result is returned
as a transposed view, so a following sparse Linear reads it without a copy (MKL's kernels want X row-major: the first
sparse layer's input transposition is a real copy).
- BSR needs both sides of W in whole blocks: W is zero-padded to multiples of B (and X with it), the padding cut off
  the result; ``padded`` in the decision says so.
- torch's BSR product takes a slow path for fewer than 16 columns (at batch 1 it is ~30x slower than at 16), so a
  narrower X is padded with zero columns to 16; a CSR W times a single column is a matrix-vector product (addmv).
- Each layer has its dense reference beside it (``reference``: ``F.linear`` / ``F.conv2d`` on the dense weight that
  the compressed one holds); the tests check that the two agree.
- ``sparsify`` replaces a model's layers; with ``when="faster"`` each layer is timed dense and sparse at export time
  (``time_pair``: both as the eager modules an export loads as, alternately by ``common.metrics.paired_latency_ms``,
  one thread, ``batch`` inputs of the layer's own shape) and computed sparse only where that was faster by
  ``MARGIN``; every decision (format, block, sparsity, measured ms) is returned.
The sparse layers are plain eager ``nn.Module``s. A sparse export is their tensors (a state_dict: the compressed
weight as its index and value tensors, ``SparseMatrix.PARTS``) and a JSON description (``spec``), rebuilt by
``rebuilt_layer`` (``common.export.load``): neither TorchScript (``torch.jit`` is deprecated, and loading it warns)
nor ``torch.export`` (which, as of torch 2.14, captures no sparse CSR / BSR tensor: "Sparse CSR tensors do not have
is_contiguous", no ``as_strided`` kernel for the sparse layouts) can hold them, and a state_dict loads with
``torch.load(weights_only=True)`` from torch 2.4 on.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from common.metrics import latency_ms, paired_latency_ms

FORMATS = ("dense", "csr", "bsr")
DEFAULT_BLOCK = 8
MIN_BSR_COLUMNS = 16  # below this many columns torch's CPU BSR product is ~30x slower
MARGIN = 0.9  # a layer is computed sparse only where sparse_ms < MARGIN * dense_ms (timing noise is ~5%)
DECISION_BATCH = 64
ROUNDS, REPEATS = 3, 10
TOLERANCE = 1e-5  # |sparse - dense| <= TOLERANCE x max(1, max |dense|): sums in another order, float32
LAYER_BUDGET_MS = 300.0  # per layer and side about this much timing at most (large layers: fewer repeats)


@contextlib.contextmanager
def quiet():
    """torch's beta-state notices for sparse CSR/BSR tensors, silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse (CSR|BSR|CSC|BSC) tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")
        yield


# ---------------------------------------------------------------------------------------------------- the matrix
def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as the (out, K) matrix it multiplies: Conv2d columns in (kh, kw, cin) order."""
    w = layer.weight.detach()
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if w.dim() == 4 else w


def compress(matrix: torch.Tensor, fmt: str, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """(crow_indices, col_indices, values, padded size) of ``matrix`` in CSR or BSR (BxB blocks, zero-padded to whole
    blocks); int32 indices where they fit (what MKL's kernels take without a conversion)."""
    if fmt == "bsr":
        rows, cols = (math.ceil(n / block) * block for n in matrix.shape)
        matrix = F.pad(matrix, (0, cols - matrix.shape[1], 0, rows - matrix.shape[0]))
    with quiet():
        sparse = matrix.to_sparse_bsr((block, block)) if fmt == "bsr" else matrix.to_sparse_csr()
    crow, col = sparse.crow_indices(), sparse.col_indices()
    if crow[-1] < 2 ** 31 - 1:
        crow, col = crow.int(), col.int()
    return crow.contiguous(), col.contiguous(), sparse.values().contiguous(), list(matrix.shape)


class SparseMatrix(nn.Module):
    """W in CSR or BSR and the bias; ``product(x_t)`` = W @ x_t + bias for a (K, columns) matrix x_t.

    Its state (``PARTS``) is plain tensors: W's ``crow`` / ``col`` indices and ``values`` and the (padded rows, 1)
    ``bias`` column; ``spec()`` holds the rest (format, block, padded size, unpadded shape). The sparse tensor made of
    the parts (``weight()``, sharing their memory) is neither saved nor copied: it is made once, and again when the
    parts were replaced (``.to(device)``, a copy) or loaded, its invariants checked each time (indices in range: a
    damaged file cannot make the kernels read out of bounds). Build one from a dense matrix with ``of``."""

    PARTS = ("crow", "col", "values", "bias")

    def __init__(self, crow, col, values, bias, fmt: str, size, shape):
        super().__init__()
        if fmt not in ("csr", "bsr"):
            raise ValueError(f"unknown sparse format '{fmt}'")
        for name, tensor in zip(self.PARTS, (crow, col, values, bias)):
            self.register_buffer(name, tensor)
        self.bsr = fmt == "bsr"
        self.size, (self.rows, self.k) = [int(n) for n in size], (int(n) for n in shape)
        self._made = None
        self.weight()  # checked now
        if list(bias.shape) != [self.size[0], 1] or not (0 < self.rows <= self.size[0] and 0 < self.k <= self.size[1]):
            raise ValueError(f"a bias of shape {list(bias.shape)} or a shape {[self.rows, self.k]} that does not fit "
                             f"the padded size {self.size}")
        self.pad_k = self.size[1] - self.k
        self.padded = self.size != [self.rows, self.k]
        self.min_columns = MIN_BSR_COLUMNS if self.bsr else 1

    @classmethod
    def of(cls, matrix: torch.Tensor, bias, fmt: str, block: int) -> SparseMatrix:
        """``matrix`` (out, K) and ``bias`` (out,) or None, compressed in ``fmt`` (BxB blocks for bsr)."""
        crow, col, values, size = compress(matrix, fmt, block)
        column = torch.zeros(size[0], 1, dtype=matrix.dtype)
        if bias is not None:
            column[: matrix.shape[0], 0] = bias.detach()
        return cls(crow, col, values, column, fmt, size, matrix.shape)

    def spec(self) -> dict:
        """What, with ``PARTS``, rebuilds this matrix: format, block, padded size, unpadded shape."""
        return {"format": "bsr" if self.bsr else "csr", "block": int(self.values.shape[1]) if self.bsr else None,
                "size": list(self.size), "shape": [self.rows, self.k]}

    def weight(self) -> torch.Tensor:
        """W as a sparse CSR / BSR tensor made of the parts (made again where they are other tensors than it was)."""
        buffers, made = self._buffers, self._made  # read directly: Module.__getattr__ costs ~1.5 us a tensor per call
        crow, col, values = buffers["crow"], buffers["col"], buffers["values"]
        if made is None or made[0] is not crow or made[1] is not col or made[2] is not values:
            make = torch.sparse_bsr_tensor if self.bsr else torch.sparse_csr_tensor
            with quiet():
                made = self._made = crow, col, values, make(crow, col, values, self.size, check_invariants=True)
        return made[3]

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._made = None  # the loaded parts, checked when next used

    def __getstate__(self):  # a copy (deepcopy, pickle) holds the parts only: a sparse tensor has no storage to copy
        return {**super().__getstate__(), "_made": None}

    def product(self, x_t: torch.Tensor) -> torch.Tensor:
        """(rows, columns) = W @ x_t + bias, x_t zero-padded to W's padded K and to ``min_columns``."""
        n = x_t.shape[1]
        if n == 1 and not self.bsr:  # a matrix-vector product (batch 1): ~2x faster than the product with a column
            return torch.addmv(self.bias[:, 0], self.weight(), x_t[:, 0]).unsqueeze(1)
        if self.pad_k > 0 or n < self.min_columns:
            x_t = F.pad(x_t, [0, max(0, self.min_columns - n), 0, self.pad_k])
            return torch.addmm(self.bias, self.weight(), x_t)[: self.rows, :n]
        y = torch.addmm(self.bias, self.weight(), x_t.contiguous())
        return y[: self.rows] if self.padded else y

    def dense(self) -> torch.Tensor:
        """The (rows, K) dense matrix the compressed one holds (for the references)."""
        with quiet():
            return self.weight().to_dense()[: self.rows, : self.k]


class SparseLinear(nn.Module):
    """``nn.Linear`` ``layer`` computed as W @ x^T with ``matrix``, a CSR / BSR W (``sparse_layer`` compresses the
    layer's own weight)."""

    def __init__(self, layer: nn.Linear, matrix: SparseMatrix):
        super().__init__()
        self.matrix = matrix
        self.in_features, self.out_features = layer.in_features, layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.matrix.product(x.t()).t()
        lead = list(x.shape[:-1])
        y = self.matrix.product(x.reshape(-1, self.in_features).t())
        return y.t().reshape(lead + [self.out_features])

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The dense computation of the same layer: ``F.linear`` on the weight the compressed matrix holds."""
        bias = self.matrix.bias[: self.out_features, 0]
        return F.linear(x, self.matrix.dense(), bias)


class SparseConv2d(nn.Module):
    """``nn.Conv2d`` ``layer`` (groups 1, zero padding) computed as W @ im2col(x) with ``matrix``, a CSR / BSR W of
    its (Cout, kh*kw*Cin) shape."""

    def __init__(self, layer: nn.Conv2d, matrix: SparseMatrix):
        super().__init__()
        reason = conv_unsupported(layer)
        if reason:
            raise ValueError(reason)
        self.matrix = matrix
        self.cout, self.cin = layer.out_channels, layer.in_channels
        self.kernel, self.stride = list(layer.kernel_size), list(layer.stride)
        self.padding, self.dilation = list(layer.padding), list(layer.dilation)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The (kh*kw*Cin, N*Ho*Wo) im2col matrix of x, rows in (kh, kw, cin) order (W's columns): one strided view of
        the zero-padded input, copied once (F.unfold and a reordering copy are 5-10x slower)."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        ph, pw = self.padding
        x = F.pad(x, [pw, pw, ph, ph]) if ph > 0 or pw > 0 else x.contiguous()
        n, c, hp, wp = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
        view = x.as_strided([kh, kw, c, n, ho, wo], [dh * wp, dw, hp * wp, c * hp * wp, sh * wp, sw])
        return view.reshape(kh * kw * c, n * ho * wo)

    def patches_reference(self, x: torch.Tensor) -> torch.Tensor:
        """``patches`` by ``F.unfold`` (rows in (cin, kh, kw) order) and a reordering to (kh, kw, cin)."""
        cols = F.unfold(x, self.kernel, self.dilation, self.padding, self.stride)  # (N, Cin*kh*kw, L)
        n, length, kk = cols.shape[0], cols.shape[2], self.kernel[0] * self.kernel[1]
        return cols.view(n, self.cin, kk, length).permute(2, 1, 0, 3).reshape(kk * self.cin, n * length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel[0] - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel[1] - 1) - 1) // self.stride[1] + 1
        y = self.matrix.product(self.patches(x))  # (Cout, N * Ho * Wo)
        return y.view(self.cout, n, ho, wo).transpose(0, 1)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The dense computation of the same layer: ``F.conv2d`` on the weight the compressed matrix holds."""
        kh, kw = self.kernel
        weight = self.matrix.dense().reshape(self.cout, kh, kw, self.cin).permute(0, 3, 1, 2)
        return F.conv2d(x, weight, self.matrix.bias[: self.cout, 0], self.stride, self.padding, self.dilation)


def conv_unsupported(layer: nn.Conv2d) -> str:
    """Why a Conv2d cannot be computed by ``SparseConv2d`` ('' when it can)."""
    if layer.groups != 1:
        return f"grouped convolution (groups={layer.groups})"
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return f"padding {layer.padding!r} / {layer.padding_mode}"
    return ""


SPARSE_LAYERS = (SparseLinear, SparseConv2d)


def sparse_layer(layer: nn.Module, fmt: str, block: int = DEFAULT_BLOCK) -> nn.Module:
    """The sparse layer of a Linear / Conv2d: its weight and bias compressed in ``fmt`` (BxB blocks for bsr)."""
    kind = SparseLinear if isinstance(layer, nn.Linear) else SparseConv2d
    return kind(layer, SparseMatrix.of(weight_matrix(layer), layer.bias, fmt, block))


def spec(layer: nn.Module) -> dict:
    """A sparse layer's description (what its tensors do not say): kind and its matrix's ``spec``."""
    return {"kind": "linear" if isinstance(layer, SparseLinear) else "conv2d", **layer.matrix.spec()}


def rebuilt_layer(layer: nn.Module, description: dict, tensors: dict) -> nn.Module:
    """The sparse layer that ``description`` (``spec``) and ``tensors`` (its matrix's ``PARTS``) describe, computing
    the Linear / Conv2d ``layer`` of the same sizes (a freshly built one: only its sizes are read). A description or
    tensors that do not fit are a ValueError."""
    kind = {"linear": (SparseLinear, nn.Linear), "conv2d": (SparseConv2d, nn.Conv2d)}.get(description.get("kind"))
    if kind is None or not isinstance(layer, kind[1]):
        raise ValueError(f"a {description.get('kind')!r} layer where the model has {type(layer).__name__}")
    matrix = SparseMatrix(*(tensors[name] for name in SparseMatrix.PARTS), description["format"], description["size"],
                          description["shape"])
    if matrix.spec() != {k: description.get(k) for k in ("format", "block", "size", "shape")} or \
            [matrix.rows, matrix.k] != list(weight_matrix(layer).shape):
        raise ValueError(f"a {description['format']} matrix of shape {[matrix.rows, matrix.k]} for a layer of shape "
                         f"{list(weight_matrix(layer).shape)}")
    return kind[0](layer, matrix)


# ---------------------------------------------------------------------------------------------------- choosing
def layer_inputs(model: nn.Module, input_shape) -> dict[str, tuple]:
    """The input shape (without the batch) of every Conv2d / Linear of ``model``, from one forward pass."""
    shapes, hooks = {}, []

    def record(name):
        def hook(module, args, output):
            shapes.setdefault(name, tuple(args[0].shape[1:]))
        return hook

    for name, m in layers_of(model):
        hooks.append(m.register_forward_hook(record(name)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def time_pair(dense: nn.Module, sparse: nn.Module, shape, batch: int, threads: int | None = 1,
              rounds: int = ROUNDS, repeats: int = REPEATS, budget_ms: float = LAYER_BUDGET_MS) -> dict:
    """``{"dense": ms, "sparse": ms}`` of the two eager modules in eval mode without gradients (the same executor on
    both sides; the sparse one as ``common.export.load`` returns a sparse export), measured alternately
    (``paired_latency_ms``); where one call of the slower one times rounds x repeats exceeds ``budget_ms``, fewer
    repeats (at least 2)."""
    with torch.no_grad(), quiet():
        probe = max(latency_ms(m, shape, batch_size=batch, repeats=1, warmup=2, threads=threads)
                    for m in (dense, sparse))
        repeats = max(2, min(repeats, int(budget_ms / max(probe * rounds, 1e-3))))
        return paired_latency_ms({"dense": dense, "sparse": sparse}, shape, batch_size=batch, rounds=rounds,
                                 repeats=repeats, warmup=1, threads=threads)  # the probe warmed both


def layers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear / Conv2d modules of ``model`` with their names, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def decision(name: str, layer: nn.Module) -> dict:
    """A layer's record in ``sparsity.json`` (``weights.layers``), dense until decided otherwise."""
    w = layer.weight.detach()
    return {"layer": f"{name}.weight", "kind": "conv2d" if w.dim() == 4 else "linear", "shape": list(w.shape),
            "sparsity": 1.0 - int(torch.count_nonzero(w)) / w.numel(), "format": "dense", "block": None,
            "padded": None, "dense_ms": None, "sparse_ms": None, "speedup": None}


def sparsify(model: nn.Module, fmt: str, block: int, input_shape, when: str = "faster", batch: int = DECISION_BATCH,
             threads: int | None = 1, rounds: int = ROUNDS, repeats: int = REPEATS) -> tuple[nn.Module, list]:
    """A copy of ``model`` (eval mode) whose Linear / Conv2d layers are computed in ``fmt`` (csr / bsr with BxB
    blocks), and the decision per layer. ``when``: ``faster`` (each layer timed dense and sparse at ``batch`` inputs
    of its own shape, sparse kept where faster by ``MARGIN``) or ``all`` (every layer that has zero weights: what a
    format gives, for measuring it). A layer without zero weights stays dense, untimed."""
    if fmt not in ("csr", "bsr"):
        raise UserError(f"--format {fmt}: choose csr or bsr for a sparse model (dense: the masked dense model)")
    if when not in ("faster", "all"):
        raise UserError(f"--layers {when}: choose faster or all")
    model = copy.deepcopy(model).eval()
    shapes = layer_inputs(model, input_shape)
    decisions = []
    for name, layer in layers_of(model):
        d = decision(name, layer)
        decisions.append(d)
        reason = conv_unsupported(layer) if isinstance(layer, nn.Conv2d) else ""
        if d["sparsity"] == 0:
            d["why"] = "no zero weights"
            continue
        if reason:
            d["why"] = f"{reason}: no sparse kernel for it here"
            continue
        if not name:
            raise UserError("a model that is one Linear / Conv2d layer: wrap it in nn.Sequential to sparsify it")
        sparse = sparse_layer(layer, fmt, block)
        size = list(sparse.matrix.size)
        if size != list(weight_matrix(layer).shape):
            d["padded"] = size
        if when == "faster":
            with quiet():
                t = time_pair(layer, sparse, shapes[name], batch, threads, rounds, repeats)
            d.update(dense_ms=t["dense"], sparse_ms=t["sparse"], speedup=t["dense"] / t["sparse"])
            if t["sparse"] >= MARGIN * t["dense"]:
                d["why"] = (f"{fmt} not faster: {t['sparse']:.3g} ms vs dense {t['dense']:.3g} ms at batch "
                            f"{batch} (sparse needs < {MARGIN:g}x)")
                continue
        d.update(format=fmt, block=block if fmt == "bsr" else None,
                 why=f"{fmt} faster" if when == "faster" else "every layer with zeros (--layers all)")
        replace(model, name, sparse)
    return model, decisions


def replace(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in ``model`` at ``name`` (a dotted submodule path) in place of the one there."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def agrees(output: torch.Tensor, reference: torch.Tensor) -> bool:
    """A sparse program's output equals the dense one's within ``TOLERANCE`` of the dense output's scale."""
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    return output.shape == reference.shape and float((output - reference).abs().max()) <= TOLERANCE * max(1.0, scale)


def summary(decisions: list) -> str:
    """The layers that stay dense though they have zeros, and why, in one line ('' when none)."""
    return "; ".join(f"{d['layer']} ({d['why']})" for d in decisions
                     if d["format"] == "dense" and d["sparsity"] > 0)
