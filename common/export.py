"""Export a finished run's final model for use without this repository (a sparse one: with ``load``), with a
sparsity report.

    python -m common.export --run runs/gmp.prune/<hash>            # one run
    python -m common.export --run 'runs/bip.prune/*' --run runs/posttrain.prune/<hash>
    python -m gmp.prune --target-sparsity 0.9 --export              # any script: export once the run is done
    python -m common.export --run runs/gmp.prune/<hash> --format csr          # sparse weights: export-csr/
    python -m seqattn.prune --block 4 --sparsity 0.9 --export-format bsr      # the run's 4x4 blocks: export-bsr4/

Writes ``<run>/export/`` (each file atomically, readable by all; ``sparsity.json`` last, so a complete export is one
that has it):
- ``model.pt2``      the model in eval mode as a ``torch.export`` program (batch size free) that takes *plain* inputs:
                     the dataset's input normalization is part of it (``common.data.plain_input``: digits as pixel / 16,
                     images as torchvision's ToTensor gives them, both in [0, 1]; Criteo's 39 features as they are),
                     so ``torch.export.load(path).module()(x)`` gives the run's outputs on such x. Masks are
                     multiplied into the weights (pruned weights are exactly zero) and a structurally pruned model is
                     the physically smaller one; its weights are named ``model.<name>``. A model that ``torch.export``
                     cannot capture is written in the module form below instead; ``sparsity.json`` names the file
                     and its format.
- ``state_dict.pt``  the model's weights as plain tensors (``torch.load(..., weights_only=True)``), without the
                     normalization: the model itself takes ``(x - mean) / std`` (``sparsity.json``'s ``input``);
- ``sparsity.json``  the expected input (``input``: shape, range, how to make it from raw data, the normalization the
                     program applies), the sparsity report measured on the exported weights (global over the prunable
                     weights, per layer, parameter count, dense and sparsity-aware FLOPs; for a structurally pruned
                     model also the original model's parameters and FLOPs, RP and RF), the run's script, hash, config
                     and metrics.
The prunable weights are the layers the run itself reports (``result.json``'s ``layers``, those it block-sparsified
where it marks them: seqattn.prune lists its dense layers too); runs that list none use
their config's ``exclude`` (and ``structure``) over every Conv2d / Linear weight, as the scripts' masks do.
A run without a final model (``seqattn.oneshot`` keeps one model per sparsity as a point, none stored) is refused.

``--format csr|bsr`` writes ``<run>/export-csr/`` or ``<run>/export-bsr<B>/`` instead (the same files), whose
Linear / Conv2d layers compute with torch.sparse CSR or BSR (BxB) weights (``common.sparse``: Conv2d through im2col),
each layer only where that measured faster than the dense layer at export time (``--batch`` inputs, one thread;
``--layers all``: every layer with zeros). ``sparsity.json``'s ``weights`` records each layer's decision (format,
block, sparsity, padded shape, measured dense and sparse ms, why). Its outputs equal the dense export's within
``common.sparse.TOLERANCE`` of the output's scale (checked on write). A structurally pruned run is written as its
physically smaller dense model, and so is a run none of whose layers is faster sparse (a note names each layer and
why), both as ``torch.export`` programs; a run without zero weights is refused.

The module form (``sparsity.json``'s format ``modules``), for a model with sparse layers or one ``torch.export``
cannot capture: ``model.json``, the architecture (the run's model name, classes and input shape as
``common.models.build_model`` takes them, the normalization, a structurally pruned model's layer sizes, and for each
sparse layer its ``common.sparse.spec``: kind, format, block, padded size, shape) and ``model.pt``, the tensors of
the program (a plain state_dict: a sparse weight as its index and value tensors ``<layer>.matrix.crow|col|values``
and its bias column). ``load(folder)`` rebuilds it as eager modules, with this repository, from data only
(``torch.load(..., weights_only=True)``); it loads a ``torch.export`` export as well. Why not a program: torch.export
(as of torch 2.14) captures no sparse CSR / BSR tensor, neither as a weight nor made inside the program, and
TorchScript (``torch.jit.trace`` / ``save`` / ``load``), which ran them before, is deprecated: each of its calls
warns. A state_dict and JSON load alike in every torch from 2.4 on, and the sparse layers run as the same eager
modules that the export times.

Nothing a run folder holds is unpickled: ``model.pt`` and ``masks.pt`` are read with ``weights_only=True`` (a
structurally pruned model is stored as its tensors and its layers' sizes, ``structured_state``), and a file that
would need code to load is refused in one line. An export is reproducible: two exports of one run give the same
bytes, wherever the repository is installed (no temporary names, stack traces relative to the import root; a sparse
one chosen by timing may choose other layers).
"""
from __future__ import annotations

import glob
import io
import json
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from common import config as C
from common import sparse as SP
from common import sparsity as S
from common.atomic import atomic_write
from common.data import dataset_info, plain_input
from common.errors import UserError, exit_code
from common.metrics import flops
from common.models import build_model

EXAMPLE_BATCH = 2  # torch.export specializes a batch of 1; the exported batch dimension is dynamic anyway


FORMAT_HELP = ("how the exported program computes its Linear / Conv2d layers: dense (the masked dense weights, a "
               "torch.export program in export/), csr or bsr (torch.sparse weights where that measured faster, "
               "model.json + model.pt in export-csr/ or export-bsr<B>/, loaded by common.export.load)")
BLOCK_HELP = ("BSR block size B (BxB blocks; a layer B does not divide is zero-padded); 0: the run's own block size "
              f"where it has one (seqattn.prune --block), else {SP.DEFAULT_BLOCK}")


@dataclass
class Config:
    run: tuple[str, ...] = C.opt((), "finished run directories (runs/<script>/<hash>), comma-separated or with "
                                     "--run repeated; shell-style globs such as 'runs/gmp.prune/*' allowed")
    format: str = C.opt("dense", FORMAT_HELP, choices=SP.FORMATS)
    block: int = C.opt(0, BLOCK_HELP)
    layers: str = C.opt("faster", "which layers a sparse format computes sparse: faster (each layer timed dense and "
                                  "sparse at export, the faster kept), all (every layer with zero weights)",
                        choices=("faster", "all"))
    batch: int = C.opt(SP.DECISION_BATCH, "the batch size each layer is timed at (one thread)", positive=True)


# ---------------------------------------------------------------------------------------------------- reading a run
def _read_run(run_dir: Path) -> tuple[dict, dict]:
    """(config.json, result.json) of a finished run, or a UserError naming what is missing."""
    if not (run_dir / "result.json").is_file() or not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} is not a finished run (no result.json/config.json); give a directory "
                        f"runs/<script>/<hash> whose run is done, or run its script first")
    try:
        conf, result = (json.loads((run_dir / name).read_text()) for name in ("config.json", "result.json"))
    except ValueError:
        conf = result = None
    if not (isinstance(conf, dict) and isinstance(conf.get("script"), str) and isinstance(conf.get("config"), dict)
            and isinstance(result, dict)):
        raise UserError(f"{run_dir}'s config.json or result.json is damaged; delete the run directory and run its "
                        f"script again")
    return conf, result


def final_model(run_dir: Path, conf: dict) -> tuple[torch.nn.Module, torch.nn.Module, bool]:
    """(the run's final model on the CPU, a freshly built model of the original architecture, structurally pruned?).

    Every file is read as data (``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists, dicts),
    never unpickled as code: a run folder may be written by anyone who shares the store."""
    script, cfg = conf["script"], conf["config"]
    path = run_dir / "model.pt"
    if not path.is_file():
        raise UserError(f"{script} run {run_dir} stores no final model (no model.pt), so there is nothing to export "
                        f"(seqattn.oneshot reports one fine-tuned model per sparsity as a point and keeps none; "
                        f"seqattn.prune gives one block-sparse model)")
    if "model" not in cfg or "dataset" not in cfg:
        raise UserError(f"{script} run {run_dir} names no model/dataset in its config.json; it has no model to export")
    info = dataset_info(cfg["dataset"])
    model = build_model(cfg["model"], info.num_classes, info.input_shape)
    original = build_model(cfg["model"], info.num_classes, info.input_shape)
    state = _load(path)
    structured = isinstance(state, dict) and state.get("format") == STRUCTURED_FORMAT
    if structured:  # the physically smaller model: its layers' shapes, then its tensors
        load_structured(model, state, path, info.input_shape)
    else:
        _load_weights(model, _tensors(path, state), path)
    masks = run_dir / "masks.pt"  # BiP keeps its binary masks apart; the weights already hold mask (.) theta
    if masks.is_file():
        found = _tensors(masks, _load(masks))
        with torch.no_grad():
            for name, m in found.items():
                try:
                    p = model.get_parameter(name)
                    p.mul_(m.to(p.dtype))
                except (AttributeError, RuntimeError):
                    raise UserError(f"{masks} does not fit {cfg['model']}'s weights (at {name!r}); delete its run "
                                    f"directory and run the script again") from None
    return model.eval(), original.eval(), structured


def _load(path: Path):
    """The data in a torch file, read with ``weights_only=True``: a file that needs anything else to load (a class,
    a function: code) is refused, never executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path} is refused: it is not plain tensor data (loading it would run code it names); only "
                        f"files written by this version of the repository are read: delete its run directory and run "
                        f"the script again") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise UserError(f"{path} is unreadable ({type(exc).__name__}); delete its run directory and run the script "
                        f"again") from None


def _tensors(path: Path, state) -> dict[str, torch.Tensor]:
    """``state`` if it is a dict of names to tensors (a state dict, BiP's masks), else a UserError naming ``path``."""
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise UserError(f"{path} is not a dict of named tensors as this repository writes it; delete its run "
                        f"directory and run the script again")
    return state


def _load_weights(model: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise UserError(f"{path} does not fit the run's model ({detail}); delete its run directory and run the "
                        f"script again") from None


# A physically smaller model (structured pruning) is stored as data: its tensors plus, for every layer, the size
# attributes that say its shapes; the loader builds the original architecture and shrinks each layer to them.
STRUCTURED_FORMAT = "structured/1"
SIZE_ATTRIBUTES = {"Conv2d": ("in_channels", "out_channels", "groups"), "Linear": ("in_features", "out_features"),
                   "BatchNorm1d": ("num_features",), "BatchNorm2d": ("num_features",)}


def structured_state(model: torch.nn.Module) -> dict:
    """A physically smaller model as plain data (``torch.load(..., weights_only=True)`` reads it):
    ``{"format", "layers": {module name: {"type", size attribute: int}}, "state_dict": {name: tensor}}``."""
    layers = {name: {"type": type(m).__name__, **{a: int(getattr(m, a)) for a in SIZE_ATTRIBUTES[type(m).__name__]}}
              for name, m in model.named_modules() if type(m).__name__ in SIZE_ATTRIBUTES}
    return {"format": STRUCTURED_FORMAT, "layers": layers,
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}


def load_structured(model: torch.nn.Module, state: dict, path, input_shape=None) -> torch.nn.Module:
    """Shrink ``model`` (a freshly built model of the original architecture, in place) to the layer sizes of
    ``state`` (``structured_state``) and load its tensors; with ``input_shape`` the result is also run once on zeros.
    Anything that does not fit is a UserError naming ``path``."""
    def refuse(why: str):
        return UserError(f"{path} is not a structurally pruned model of this architecture ({why}); delete its run "
                         f"directory and run the script again")

    layers, weights = state.get("layers"), _tensors(path, state.get("state_dict"))
    if not isinstance(layers, dict):
        raise refuse("no layer sizes")
    modules = dict(model.named_modules())
    for name, sizes in layers.items():
        m = modules.get(name)
        kind = type(m).__name__
        if m is None or not isinstance(sizes, dict) or sizes.get("type") != kind or kind not in SIZE_ATTRIBUTES:
            raise refuse(f"layer {name!r}")
        wanted = SIZE_ATTRIBUTES[kind]
        if set(sizes) != {"type", *wanted} or not all(type(sizes[a]) is int and sizes[a] > 0 for a in wanted):
            raise refuse(f"the sizes of layer {name!r}")
        for a in wanted:
            setattr(m, a, sizes[a])
    missing = [n for n, m in modules.items() if type(m).__name__ in SIZE_ATTRIBUTES and n not in layers]
    if missing:
        raise refuse(f"no sizes for layer {missing[0]!r}")
    with torch.no_grad():
        for key, value in weights.items():  # each parameter and buffer takes its stored shape
            owner, _, attr = key.rpartition(".")
            m = modules.get(owner)
            if m is None or not isinstance(getattr(m, attr, None), torch.Tensor):
                raise refuse(f"unknown tensor {key!r}")
            getattr(m, attr).data = torch.empty_like(value)
    _load_weights(model, weights, path)
    for name, sizes in layers.items():
        m = modules[name]
        if isinstance(m, torch.nn.Conv2d):
            fits = m.weight.shape[:2] == (m.out_channels, m.in_channels // m.groups)
        elif isinstance(m, torch.nn.Linear):
            fits = m.weight.shape == (m.out_features, m.in_features)
        else:
            fits = all(t is None or t.shape == (m.num_features,) for t in (m.weight, m.running_mean))
        if not fits:
            raise refuse(f"the tensors of layer {name!r} do not have its sizes")
    if input_shape is not None:
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, *input_shape))
        except RuntimeError as exc:
            raise refuse(f"its layers do not fit together: {' '.join(str(exc).split())[:160]}") from None
    return model


def prunable_params(model: torch.nn.Module, conf: dict, result: dict) -> dict[str, torch.Tensor]:
    """The weights the run prunes: those its result reports per layer, else its config's exclude/structure rule."""
    if isinstance(result.get("layers"), list) and result["layers"]:  # seqattn.prune lists its dense layers too
        return {x["layer"]: model.get_parameter(x["layer"]) for x in result["layers"]
                if x.get("block_sparsified", True)}
    cfg = conf["config"]
    params = S.prunable(model, tuple(cfg.get("exclude", ())))
    if cfg.get("structure", "unstructured") != "unstructured":
        params = {n: p for n, p in params.items() if p.dim() == 4}
    return params


# ---------------------------------------------------------------------------------------------------- writing
class PlainInputModel(torch.nn.Module):
    """``model`` fed the plain input: ``model((x - mean) / std)``, the loaders' normalization with the same float
    ops (per channel, broadcast over a (batch, C, H, W) input); without mean/std the input goes in unchanged."""

    def __init__(self, model: torch.nn.Module, mean=None, std=None):
        super().__init__()
        self.model = model
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std if self.normalize else x)


def expected_input(dataset: str, input_shape) -> dict:
    """``sparsity.json``'s description of what the exported program takes."""
    plain = plain_input(dataset)
    return {"shape": ["batch", *input_shape], "dtype": "float32",
            "range": list(plain.range) if plain.range else None, "how": plain.how,
            "normalization": None if plain.mean is None else
            {"mean": list(plain.mean), "std": list(plain.std),
             "note": "applied inside the program: it computes model((x - mean) / std); state_dict.pt's model "
                     "takes the normalized input"},
            "program_weights": "model.<name>, with <name> as in state_dict.pt and in layers"}


PROGRAM_FILES = {"torch.export": ("model.pt2",), "modules": ("model.json", "model.pt")}
MODULES_FORMAT = "modules/1"


def save_program(model: torch.nn.Module, example: torch.Tensor, out: Path, architecture: dict | None = None,
                 reference: torch.nn.Module | None = None) -> tuple[str, str]:
    """Write ``model`` (a ``PlainInputModel``) with torch.export (dynamic batch), or in the module form where it holds
    sparse layers or torch.export cannot capture it: ``model.json`` (``architecture``: how ``build_model`` makes the
    model, see ``modules_description``, with each sparse layer's ``common.sparse.spec``) and ``model.pt`` (its
    tensors, a plain state_dict). Returns (the file to open, format).

    Everything is serialized in memory, so that no file holds a temporary name; a torch.export program's stack traces
    name source files relative to their import root (``portable_path``): two exports of one run give the same bytes,
    wherever the repository is installed. Those bytes are loaded back as ``load`` loads them and checked before they
    are written, on random inputs of three batch sizes (1, 3 and one above the BSR column padding): against the model
    itself, or against ``reference`` (the dense model a sparse one must equal) within ``common.sparse.TOLERANCE`` of
    its scale."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    sparse = {name: SP.spec(m) for name, m in model.named_modules() if isinstance(m, SP.SPARSE_LAYERS)}
    try:
        if sparse:
            raise NotImplementedError("torch.export captures no sparse CSR / BSR tensor")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        _portable_traces(program.graph_module)
        fmt, files = "torch.export", {"model.pt2": _serialized(lambda f: torch.export.save(program, f))}
        loaded = torch.export.load(io.BytesIO(files["model.pt2"])).module()
    except Exception:  # noqa: BLE001 - any model torch.export cannot capture: its modules, as data
        if architecture is None:
            raise ValueError("a model torch.export cannot capture is written as its modules: give its architecture")
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        text = json.dumps({**architecture, "sparse": sparse}, indent=1, sort_keys=True) + "\n"
        fmt, files = "modules", {"model.json": text.encode(), "model.pt": _serialized(lambda f: torch.save(state, f))}
        loaded = _rebuilt(json.loads(text), torch.load(io.BytesIO(files["model.pt"]), weights_only=True),
                          out / "model.pt")
    with torch.no_grad():
        for n in (1, 3, SP.MIN_BSR_COLUMNS + 1):
            x = torch.randn(n, *example.shape[1:])
            got = loaded(x)
            ok = SP.agrees(got, reference(x)) if reference is not None else \
                torch.allclose(got, model(x), rtol=1e-4, atol=1e-5)
            if not ok:
                raise RuntimeError(f"the exported {fmt} program does not reproduce the model's outputs (batch {n})")
    for name, data in files.items():
        _write_bytes(out / name, data)
    return PROGRAM_FILES[fmt][0], fmt


def modules_description(conf: dict, input_shape, structured_layers: dict | None = None) -> dict:
    """``model.json`` but for its sparse layers: the run's model as ``build_model`` makes it (name, classes, input
    shape), the normalization the program applies, a structurally pruned model's layer sizes (``structured_state``'s
    ``layers``) and the tensors' file."""
    cfg = conf["config"]
    plain = plain_input(cfg["dataset"])
    return {"format": MODULES_FORMAT, "tensors": "model.pt", "model": cfg["model"],
            "num_classes": dataset_info(cfg["dataset"]).num_classes, "input_shape": list(input_shape),
            "normalization": None if plain.mean is None else {"mean": list(plain.mean), "std": list(plain.std)},
            "structured_layers": structured_layers}


def load(path) -> torch.nn.Module:
    """The model of an export folder (``export/``, ``export-csr/``, ``export-bsr<B>/``), taking plain inputs: a
    ``torch.export`` program's module, or the module form rebuilt from ``model.json`` and ``model.pt`` (read with
    ``weights_only=True``: nothing is unpickled). A folder that is not a complete export is a UserError."""
    folder = Path(path)
    try:
        rep = json.loads((folder / "sparsity.json").read_text())
        name, fmt = rep["file"], rep["format"]
        if fmt == "modules":
            description = json.loads((folder / name).read_text())
            if not isinstance(description, dict):
                raise TypeError(name)
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{folder} is not a complete export (no readable sparsity.json and the file it names); "
                        f"export the run again: python -m common.export --run <run>") from None
    if fmt == "torch.export":
        return torch.export.load(folder / name).module()
    if fmt != "modules":  # an earlier version's TorchScript
        raise UserError(f"{folder} holds a {fmt} export, which this version does not load; export the run again: "
                        f"python -m common.export --run <run>")
    tensors = folder / str(description.get("tensors"))
    return _rebuilt(description, _tensors(tensors, _load(tensors)), tensors)


def _rebuilt(description: dict, tensors: dict, path: Path) -> torch.nn.Module:
    """The module form's model in eval mode: the architecture built afresh (shrunk to a structurally pruned model's
    layer sizes), its sparse layers made of their tensors, every tensor loaded; what does not fit is a UserError."""
    try:
        if description.get("format") != MODULES_FORMAT:
            raise ValueError(f"format {description.get('format')!r}, not {MODULES_FORMAT}")
        model = build_model(description["model"], description["num_classes"], tuple(description["input_shape"]))
        if description["structured_layers"]:
            own = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
            load_structured(model, {"layers": description["structured_layers"], "state_dict": own}, path)
        norm = description["normalization"] or {}
        program = PlainInputModel(model, norm.get("mean"), norm.get("std"))
        for name, layer in description["sparse"].items():
            parts = {part: tensors[f"{name}.matrix.{part}"] for part in SP.SparseMatrix.PARTS}
            SP.replace(program, name, SP.rebuilt_layer(program.get_submodule(name), layer, parts))
        program.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise UserError(f"{path} and its model.json do not describe one model ({type(exc).__name__}: {detail}); "
                        f"export the run again") from None
    return program.eval()


def _serialized(save) -> bytes:
    """What ``save(file)`` writes, as bytes (torch names the archive inside after a file's name: in memory it is
    always ``archive``)."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


_FRAME = re.compile(r'File "([^"]+)"')


def portable_path(path: str) -> str:
    """A source file's path relative to the import root that holds it (this checkout, site-packages), else its name:
    a program's stack traces then say ``common/models.py``, not where this copy of the repository lives."""
    full = os.path.abspath(path)
    roots = sorted({os.path.abspath(r or os.curdir) for r in sys.path} - {os.sep}, key=len, reverse=True)
    for root in roots:
        if full.startswith(root + os.sep):
            return os.path.relpath(full, root)
    return os.path.basename(full)


def _portable_traces(graph_module: torch.nn.Module) -> None:
    """Every node's stack trace in ``graph_module`` (and its sub-graphs) with ``portable_path`` file names."""
    for gm in graph_module.modules():
        if isinstance(gm, torch.fx.GraphModule):
            for node in gm.graph.nodes:
                trace = node.meta.get("stack_trace")
                if isinstance(trace, str):
                    node.meta["stack_trace"] = _FRAME.sub(lambda m: f'File "{portable_path(m.group(1))}"', trace)


def report(run_dir: Path, conf: dict, result: dict, model, original, structured: bool, input_shape) -> dict:
    """The sparsity report, measured on the exported weights."""
    rep = S.report(model, prunable_params(model, conf, result))
    out = {"script": conf["script"], "hash": run_dir.name, "config": conf["config"], "structured": structured,
           "input_shape": list(input_shape), **rep, **flops(model, input_shape),
           "result": {k: v for k, v in result.items() if not isinstance(v, (list, dict))}}
    if structured:
        dense = {"dense_params": sum(p.numel() for p in original.parameters()),
                 "dense_flops": flops(original, input_shape)["flops"]}
        out.update(dense, RP=dense["dense_params"] / out["params"], RF=dense["dense_flops"] / out["flops"])
    return out


def check_block(fmt: str, block: int, option: str = "--block") -> None:
    """A block size is >= 0 (0: the default) and given with the bsr format only (``option``: its flag, whose format
    flag is the same name with ``format``)."""
    fmt_option = option.replace("block", "format")
    if block < 0:
        raise UserError(f"{option} {block}: give a positive block size with the bsr format (0: the run's own block "
                        f"size or {SP.DEFAULT_BLOCK})")
    if block and fmt != "bsr":
        raise UserError(f"{option} {block}: give a positive block size with the bsr format only; {fmt_option} {fmt} "
                        f"takes none (leave {option} out)")


def resolve_block(fmt: str, block: int, conf: dict) -> int:
    """The BSR block size: ``block``, or (0) the run's own block size where it has one, else the default."""
    check_block(fmt, block)
    if fmt != "bsr":
        return 0
    own = conf["config"].get("block")
    return block or (int(own) if isinstance(own, int) and own > 1 else SP.DEFAULT_BLOCK)


def tag(fmt: str, block: int) -> str:
    """dense, csr or bsr<B>: the weights' format in one word."""
    return f"bsr{block}" if fmt == "bsr" else fmt


def folder(fmt: str, block: int) -> str:
    """The export's folder in the run directory: export/ (dense), export-csr/, export-bsr<B>/."""
    return "export" if fmt == "dense" else f"export-{tag(fmt, block)}"


@dataclass
class Program:
    """What an export writes, in memory: the run's final model, the module its program computes with, the decisions."""

    conf: dict
    result: dict
    model: torch.nn.Module       # the run's final model (masked weights; structured: the physically smaller one)
    original: torch.nn.Module    # a freshly built model of the original architecture
    structured: bool
    computed: torch.nn.Module    # what the program computes: ``model`` itself, or a copy with sparse layers
    weights: dict                # format, block, batch, threads, per-layer decisions
    input_shape: tuple


def program(run_dir, fmt: str = "dense", block: int = 0, layers: str = "faster", batch: int = SP.DECISION_BATCH,
            rounds: int = SP.ROUNDS, repeats: int = SP.REPEATS, require_sparse: bool = True) -> Program:
    """A finished run's export, built in memory (nothing written): for csr / bsr the layers are timed and chosen here;
    when no layer is faster sparse, the program computes the dense model. ``require_sparse``: refuse (a UserError
    naming each layer) a run none of whose layers has zero weights, as nothing of it can be stored sparse."""
    if fmt not in SP.FORMATS:
        raise UserError(f"--format {fmt} is not one of: {', '.join(SP.FORMATS)}")
    run_dir = Path(run_dir)
    conf, result = _read_run(run_dir)
    model, original, structured = final_model(run_dir, conf)
    block = resolve_block(fmt, block, conf)
    input_shape = dataset_info(conf["config"]["dataset"]).input_shape
    weights = {"format": fmt, "block": block or None}
    if fmt == "dense":
        return Program(conf, result, model, original, structured, model, weights, input_shape)
    weights.update(batch=batch, threads=1, margin=SP.MARGIN, layers_rule=layers,
                   how=f"each Linear / Conv2d layer with zero weights timed dense and {fmt} on random inputs of its "
                       f"own shape, batch {batch}, one thread (median of {rounds} alternating rounds); computed "
                       f"{fmt} where sparse_ms < {SP.MARGIN:g} x dense_ms" if layers == "faster" else
                       f"every Linear / Conv2d layer with zero weights computed {fmt} (--layers all), untimed")
    if structured:  # physically smaller: nothing left to skip
        weights["layers"] = [dict(SP.decision(name, m), why="structurally pruned: the physically smaller model is "
                                                            "exported dense") for name, m in SP.layers_of(model)]
        return Program(conf, result, model, original, structured, model, weights, input_shape)
    computed, weights["layers"] = SP.sparsify(model, fmt, block, input_shape, when=layers, batch=batch,
                                              rounds=rounds, repeats=repeats)
    if require_sparse and not any(d["sparsity"] > 0 for d in weights["layers"]):
        raise UserError(f"--format {tag(fmt, block)}: no layer of {run_dir} has zero weights, so none can be "
                        f"computed {fmt}: " + "; ".join(f"{d['layer']} ({d['why']})" for d in weights["layers"])
                        + "; export it with --format dense")
    if not any(d["format"] != "dense" for d in weights["layers"]):  # none faster sparse: the dense model itself
        computed = model
    return Program(conf, result, model, original, structured, computed, weights, input_shape)


def export_run(run_dir, fmt: str = "dense", block: int = 0, layers: str = "faster", batch: int = SP.DECISION_BATCH,
               note=None) -> Path:
    """Write ``<run_dir>/export/`` (model program, plain state_dict, sparsity.json) on the CPU, or with a sparse
    ``fmt`` ``export-csr/`` / ``export-bsr<B>/``; returns that folder. ``note(line)`` is told which layers that have
    zeros stay dense, and why."""
    run_dir = Path(run_dir)
    p = program(run_dir, fmt, block, layers, batch)
    dataset = p.conf["config"]["dataset"]
    out = run_dir / folder(fmt, p.weights["block"] or 0)
    out.mkdir(exist_ok=True)
    (out / "sparsity.json").unlink(missing_ok=True)  # until the new export is complete
    plain = plain_input(dataset)
    with torch.no_grad():
        state = {k: v.detach().clone().contiguous() for k, v in p.model.state_dict().items()}
        _write_bytes(out / "state_dict.pt", _serialized(lambda f: torch.save(state, f)))
        sparse = p.computed is not p.model
        example = torch.rand(EXAMPLE_BATCH, *p.input_shape, generator=torch.Generator().manual_seed(0))
        architecture = modules_description(p.conf, p.input_shape,
                                           structured_state(p.model)["layers"] if p.structured else None)
        name, program_format = save_program(
            PlainInputModel(p.computed, plain.mean, plain.std).eval(), example, out, architecture,
            reference=PlainInputModel(p.model, plain.mean, plain.std).eval() if sparse else None)
        rep = report(run_dir, p.conf, p.result, p.model, p.original, p.structured, p.input_shape)
    for stale in {"model.torchscript.pt", *PROGRAM_FILES["torch.export"], *PROGRAM_FILES["modules"]} - \
            set(PROGRAM_FILES[program_format]):  # an earlier export's other format (or an older version's)
        (out / stale).unlink(missing_ok=True)
    text = json.dumps({"file": name, "format": program_format, "torch": torch.__version__, "weights": p.weights,
                       "input": expected_input(dataset, p.input_shape), **rep}, indent=1, sort_keys=True)
    # written last: an export that has it is complete
    atomic_write(out / "sparsity.json", lambda tmp: Path(tmp).write_text(text + "\n"))
    dense = SP.summary(p.weights.get("layers", []))
    if note is not None and fmt != "dense" and (dense or p.structured):
        note(f"note: {out}: " + ("structurally pruned, exported as the physically smaller dense model"
                                 if p.structured else f"layers that stay dense: {dense}" if sparse else
                                 f"no layer is faster {fmt}, the program computes the dense model: {dense}"))
    return out


# ---------------------------------------------------------------------------------------------------- command line
def run_dirs(patterns) -> list[Path]:
    """The directories named by ``--run`` values, globs expanded (a glob that matches nothing is an error)."""
    dirs = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            found = sorted(p for p in glob.glob(pattern) if Path(p).is_dir())
            if not found:
                raise UserError(f"--run '{pattern}' matches no directory; give runs/<script>/<hash> of finished runs")
            dirs += [Path(p) for p in found]
        else:
            dirs.append(Path(pattern))
    return dirs


def _merge_repeated(argv: list[str]) -> list[str]:
    """``--run a --run b`` -> ``--run a,b`` (the generated CLI keeps one value per flag)."""
    runs, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--run" and i + 1 < len(argv):
            runs.append(argv[i + 1])
            i += 2
        elif argv[i].startswith("--run="):
            runs.append(argv[i][len("--run="):])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    return rest + (["--run", ",".join(runs)] if runs else [])


def main(argv=None) -> int:
    def action():
        cfg = C.parse_args(Config, _merge_repeated(sys.argv[1:] if argv is None else list(argv)),
                           description=__doc__.strip(), prog="python -m common.export")
        if not cfg.run:
            raise UserError("no run given; name one with --run runs/<script>/<hash> (see --help)")
        for run_dir in run_dirs(cfg.run):
            out = export_run(run_dir, cfg.format, cfg.block, cfg.layers, cfg.batch,
                             note=lambda line: print(line, file=sys.stderr))
            rep = json.loads((out / "sparsity.json").read_text())
            print(json.dumps({"run": str(run_dir), "export": str(out), "format": rep["format"],
                              "weights": rep["weights"]["format"]}))

    return exit_code(action)


if __name__ == "__main__":  # run as common.export, not __main__: the program names its classes the same either way
    from common import export

    raise SystemExit(export.main())
