"""Export a finished run's final model so that it can be used without this repository, with a sparsity report.

    python -m common.export --run runs/gmp.prune/<hash>            # one run
    python -m common.export --run 'runs/bip.prune/*' --run runs/posttrain.prune/<hash>
    python -m gmp.prune --target-sparsity 0.9 --export              # any script: export once the run is done

Writes ``<run>/export/`` (each file atomically, readable by all; ``sparsity.json`` last, so a complete export is one
that has it):
- ``model.pt2``      the model in eval mode as a ``torch.export`` program (batch size free) that takes *plain* inputs:
                     the dataset's input normalization is part of it (``common.data.plain_input``: digits as pixel / 16,
                     images as torchvision's ToTensor gives them, both in [0, 1]; Criteo's 39 features as they are),
                     so ``torch.export.load(path).module()(x)`` gives the run's outputs on such x. Masks are
                     multiplied into the weights (pruned weights are exactly zero) and a structurally pruned model is
                     the physically smaller one; its weights are named ``model.<name>``. A model that ``torch.export``
                     cannot capture is written with ``torch.jit.trace`` as ``model.torchscript.pt`` instead
                     (``torch.jit.load``); ``sparsity.json`` names the file and its format.
- ``state_dict.pt``  the model's weights as plain tensors (``torch.load(..., weights_only=True)``), without the
                     normalization: the model itself takes ``(x - mean) / std`` (``sparsity.json``'s ``input``);
- ``sparsity.json``  the expected input (``input``: shape, range, how to make it from raw data, the normalization the
                     program applies), the sparsity report measured on the exported weights (global over the prunable
                     weights, per layer, parameter count, dense and sparsity-aware FLOPs; for a structurally pruned
                     model also the original model's parameters and FLOPs, RP and RF), the run's script, hash, config
                     and metrics.
The prunable weights are the layers the run itself reports (``result.json``'s ``layers``); runs that list none use
their config's ``exclude`` (and ``structure``) over every Conv2d / Linear weight, as the scripts' masks do.
A run without a final model (``seqattn.oneshot`` keeps one model per sparsity as a point, none stored) is refused.
"""
from __future__ import annotations

import glob
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from common import config as C
from common import sparsity as S
from common.atomic import atomic_write
from common.data import dataset_info, plain_input
from common.errors import UserError, exit_code
from common.metrics import flops
from common.models import build_model

EXAMPLE_BATCH = 2  # torch.export specializes a batch of 1; the exported batch dimension is dynamic anyway


@dataclass
class Config:
    run: tuple[str, ...] = C.opt((), "finished run directories (runs/<script>/<hash>), comma-separated or with "
                                     "--run repeated; shell-style globs such as 'runs/gmp.prune/*' allowed")


# ---------------------------------------------------------------------------------------------------- reading a run
def _read_run(run_dir: Path) -> tuple[dict, dict]:
    """(config.json, result.json) of a finished run, or a UserError naming what is missing."""
    if not (run_dir / "result.json").is_file() or not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} is not a finished run (no result.json/config.json); give a directory "
                        f"runs/<script>/<hash> whose run is done, or run its script first")
    conf = json.loads((run_dir / "config.json").read_text())
    return conf, json.loads((run_dir / "result.json").read_text())


def final_model(run_dir: Path, conf: dict) -> tuple[torch.nn.Module, torch.nn.Module, bool]:
    """(the run's final model on the CPU, a freshly built model of the original architecture, structurally pruned?)."""
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
    structured = isinstance(state, dict) and "full_state_dict" in state and "attributions" in state
    if structured:  # Torch-Pruning's state of the physically pruned model: module attributes + smaller tensors
        import torch_pruning as tp

        tp.load_state_dict(model, state_dict=state)
    else:
        model.load_state_dict(state)
    masks = run_dir / "masks.pt"  # BiP keeps its binary masks apart; the weights already hold mask (.) theta
    if masks.is_file():
        with torch.no_grad():
            for name, m in torch.load(masks, map_location="cpu", weights_only=True).items():
                p = model.get_parameter(name)
                p.mul_(m.to(p.dtype))
    return model.eval(), original.eval(), structured


def _load(path: Path):
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # Torch-Pruning's state pickles module attributes; the file is this run's own
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise UserError(f"{path} is unreadable ({type(exc).__name__}); delete its run directory and run the script "
                        f"again") from None


def prunable_params(model: torch.nn.Module, conf: dict, result: dict) -> dict[str, torch.Tensor]:
    """The weights the run prunes: those its result reports per layer, else its config's exclude/structure rule."""
    if isinstance(result.get("layers"), list) and result["layers"]:
        return {x["layer"]: model.get_parameter(x["layer"]) for x in result["layers"]}
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


def save_program(model: torch.nn.Module, example: torch.Tensor, out: Path) -> tuple[str, str]:
    """Write ``model`` with torch.export (dynamic batch), or torch.jit.trace when it cannot be exported: (file, format).

    The written program is loaded back and checked against the model on random inputs of two batch sizes."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        name, fmt = "model.pt2", "torch.export"
        atomic_write(out / name, lambda tmp: torch.export.save(program, tmp))
        load = lambda p: torch.export.load(p).module()  # noqa: E731
    except Exception:  # noqa: BLE001 - any model torch.export cannot capture falls back to tracing
        traced = torch.jit.trace(model, example, check_trace=False)
        name, fmt = "model.torchscript.pt", "torchscript"
        atomic_write(out / name, lambda tmp: torch.jit.save(traced, tmp))
        load = torch.jit.load
    loaded = load(str(out / name))
    for n in (1, 3):
        x = torch.randn(n, *example.shape[1:])
        if not torch.allclose(loaded(x), model(x), rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"the exported {fmt} program does not reproduce the model's outputs (batch {n})")
    return name, fmt


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


def export_run(run_dir) -> Path:
    """Write ``<run_dir>/export/`` (model program, plain state_dict, sparsity.json) on the CPU; returns that folder."""
    run_dir = Path(run_dir)
    conf, result = _read_run(run_dir)
    model, original, structured = final_model(run_dir, conf)
    input_shape = dataset_info(conf["config"]["dataset"]).input_shape
    out = run_dir / "export"
    out.mkdir(exist_ok=True)
    (out / "sparsity.json").unlink(missing_ok=True)  # until the new export is complete
    plain = plain_input(conf["config"]["dataset"])
    with torch.no_grad():
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        atomic_write(out / "state_dict.pt", lambda tmp: torch.save(state, tmp))
        name, fmt = save_program(PlainInputModel(model, plain.mean, plain.std).eval(),
                                 torch.rand(EXAMPLE_BATCH, *input_shape), out)
        rep = report(run_dir, conf, result, model, original, structured, input_shape)
    for stale in {"model.pt2", "model.torchscript.pt"} - {name}:  # an earlier export's other format
        (out / stale).unlink(missing_ok=True)
    text = json.dumps({"file": name, "format": fmt, "torch": torch.__version__,
                       "input": expected_input(conf["config"]["dataset"], input_shape), **rep},
                      indent=1, sort_keys=True)
    # written last: an export that has it is complete
    atomic_write(out / "sparsity.json", lambda tmp: Path(tmp).write_text(text + "\n"))
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
            out = export_run(run_dir)
            print(json.dumps({"run": str(run_dir), "export": str(out),
                              "format": json.loads((out / "sparsity.json").read_text())["format"]}))

    return exit_code(action)


if __name__ == "__main__":
    raise SystemExit(main())
