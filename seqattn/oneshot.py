"""One-shot block pruning of a trained dense model: softmax-attention scores vs magnitude scores (paper Fig. 2a).

    python -m seqattn.oneshot --score attention --block 4      # every sparsity of --sparsities in one run
    python -m seqattn.oneshot --score magnitude --block 4

- ``attention``: the dense model is trained with the SequentialAttention++ reparameterization W (.) A,
  A = n_blocks * softmax(L / T), one logit per block (mask never applied), then the blocks with the lowest A are
  removed (W_eff = W (.) A (.) Mask).
- ``magnitude``: the plain dense model of ``common.pretrain`` (same recipe, seed and data order) is pruned by the
  Frobenius norm of each block.
Both then fine-tune for ``finetune.epochs`` (0: none) with the mask frozen. One run reports every sparsity as a point.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from common import config as C
from common import sparsity as S
from common.data import dataset_info, load_dataset
from common.errors import UserError, check_sparsity
from common.models import build_model, check_model
from common.pretrain import GivenStart, dense_runs, load_dense, start_model
from common.store import Run
from common.train import (Progress, Recipe, evaluate, lr_at, make_optimizer, prepare_model, resolve_device,
                          resumable_epochs, train_epoch)
from seqattn.attention import Reparam
from seqattn.blocks import BlockLayers, block_topk
from seqattn.prune import loss_of, named

SCRIPT = "seqattn.oneshot"


@dataclass
class Config(GivenStart):
    score: str = C.opt("attention", "block scores: softmax attention of a model trained with it, or block magnitude "
                                    "of a plainly trained model", choices=("attention", "magnitude"))
    block: int = C.opt(4, "block size B (1 = unstructured)")
    sparsities: tuple[float, ...] = C.opt((0.5, 0.7, 0.8, 0.9, 0.95, 0.98), "sparsities to prune to, one point each")
    scope: str = C.opt("layer", "uniform sparsity per layer or one global ranking", choices=("layer", "global"))
    exclude: tuple[str, ...] = C.opt(("last",), "layers never pruned: first, last, or module-name patterns")
    min_blocks: int = C.opt(100, "layers with fewer blocks stay dense")
    temperature: float = C.opt(1.0, "attention: softmax temperature T", when={"score": ("attention",)})
    pretrain: Recipe = C.opt(Recipe(epochs=30, lr=0.05), "dense training recipe (both scores)")
    finetune: Recipe = C.opt(Recipe(epochs=3, lr=0.01, schedule="cosine"), "fine-tuning after pruning (epochs 0: "
                                                                            "none); its optimizer and LR schedule")


def validate(cfg: Config) -> None:
    info = dataset_info(cfg)
    check_model(cfg.model)
    if not cfg.sparsities:
        raise UserError("--sparsities is empty; give e.g. --sparsities 0.5,0.9")
    for s in cfg.sparsities:
        S.check_sparsity(s, "sparsities")
    if not cfg.temperature > 0:
        raise UserError(f"--temperature {cfg.temperature} must be > 0")
    with torch.device("meta"):
        layers = BlockLayers(build_model(cfg.model, info.num_classes, info.input_shape), cfg.block, cfg.exclude,
                             cfg.min_blocks)  # check_block's checks
    for s in cfg.sparsities:
        S.check_keeps_some({n: v.n_blocks for n, v in layers.views.items()}, s, cfg.scope, "sparsities", "blocks")


def _reparam(cfg: Config, model, kind: str) -> Reparam:
    return Reparam(model, BlockLayers(model, cfg.block, cfg.exclude, cfg.min_blocks), kind,
                   temperature=cfg.temperature, clip=None)


def dependencies(cfg: Config) -> list:
    """The runs the store executes before ``compute`` (``slurm.submit`` queues them ahead): a magnitude score's dense
    model."""
    return dense_runs(cfg) if cfg.score == "magnitude" else []


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    dense = cfg.pretrain.epochs * times.step("sapp") if cfg.score == "attention" else 0.0  # its own dense training
    return dense + cfg.finetune.epochs * len(cfg.sparsities) * times.step("oneshot")


def compute(cfg: Config, run: Run) -> dict:
    device = resolve_device(cfg.device)
    info = dataset_info(cfg)
    loss_fn = loss_of(info.num_classes)
    progress = Progress(cfg.progress)
    kind = "attention" if cfg.score == "attention" else "mask"
    # The trained dense model: with the attention reparameterization (trained here), or plain (common.pretrain).
    if cfg.score == "magnitude":
        model, _ = load_dense(cfg, run, device)
        model.train()
        _reparam(cfg, model, kind)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=cfg.pretrain.batch_size, seed=cfg.seed, workers=cfg.workers)
    steps = len(data.train)
    state = {}
    if cfg.score == "attention":
        model = prepare_model(start_model(cfg, info), device)  # initialized, or the given weights
        _reparam(cfg, model, kind)
        optimizer = make_optimizer(model.parameters(), cfg.pretrain, cfg.pretrain.lr)  # weight decay on L too
        state = {"model": model, "optimizer": optimizer}
    dense_epochs = cfg.pretrain.epochs if cfg.score == "attention" else 0
    ft = cfg.finetune.epochs
    dense_state, dense = None, None

    def trained_dense() -> None:  # once the dense model is trained (also when a resume restored it)
        nonlocal dense_state, dense
        if dense_state is None:
            dense_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            dense = evaluate(model, data.test, loss_fn)

    def prune(s: float):
        """The dense model pruned to sparsity s: (model, its Reparam, its test metrics before fine-tuning)."""
        torch.manual_seed(cfg.seed)
        pruned = prepare_model(build_model(cfg.model, info.num_classes, info.input_shape), device)
        reparam = _reparam(cfg, pruned, kind)
        pruned.load_state_dict(dense_state)
        scores = reparam.attention() if cfg.score == "attention" else reparam.effective_norms()
        reparam.set_masks(block_topk(scores, s, cfg.scope), applied=True, zero_weights=cfg.score == "magnitude")
        check_sparsity(reparam.block_sparsity(), s, "every candidate layer removes a whole number of its blocks; "
                                                    "use --scope global, a smaller --block or a larger --min-blocks")
        return pruned, reparam, evaluate(pruned, data.test, loss_fn)

    def point(s: float, pruned, reparam, before) -> None:
        reparam.fold()
        after = evaluate(pruned, data.test, loss_fn)
        rep = S.report(pruned, {n: reparam.layers.modules[n].weight for n in reparam.layers.names()})
        run.log(event="point", **{"sparsity": s, **named("test", after), "block_sparsity": rep["sparsity"],
                                  **{f"{k}_no_finetune": v for k, v in named("test", before).items()
                                     if k != "test_loss"}})
        progress.line(f"[oneshot {cfg.score} B={cfg.block}] s={s} " + " ".join(
            f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in after if k != "loss"))

    # One checkpointed sequence of epochs: the dense training (attention), then each sparsity's fine-tuning, whose
    # pruned model and optimizer are in the checkpoints while it runs. Finished points are in the log.
    current = None  # (index of the sparsity being fine-tuned, its model, Reparam, metrics before, optimizer)
    loop = resumable_epochs(run, dense_epochs + len(cfg.sparsities) * ft, state)
    for epoch in loop:
        if epoch < dense_epochs:
            stats = train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps, loss_fn=loss_fn,
                                lr_of_step=lambda t: lr_at(cfg.pretrain, t / steps, cfg.pretrain.epochs),
                                progress=progress, desc=f"dense+attention {epoch + 1}/{cfg.pretrain.epochs}",
                                loop=loop)
            run.log(epoch=epoch + 1, train_loss=stats["loss"], **({"train_acc": stats["acc"]} if info.num_classes > 1
                                                                  else {}))
            continue
        trained_dense()
        j, e = divmod(epoch - dense_epochs, ft)
        s = cfg.sparsities[j]
        if current is None or current[0] != j:
            pruned, reparam, before = prune(s)
            ft_optimizer = make_optimizer(pruned.parameters(), cfg.finetune, cfg.finetune.lr)
            state.update(pruned=pruned, finetune_optimizer=ft_optimizer)  # restored here by a resume within it
            current = (j, pruned, reparam, before, ft_optimizer)
        _, pruned, reparam, before, ft_optimizer = current
        train_epoch(pruned, data.train, e, ft_optimizer, first_step=e * steps, loss_fn=loss_fn,
                    lr_of_step=lambda t: lr_at(cfg.finetune, t / steps, cfg.finetune.epochs), progress=progress,
                    desc=f"finetune s={s} {e + 1}/{cfg.finetune.epochs}", loop=loop)
        if e + 1 == ft:
            point(s, pruned, reparam, before)
            del state["pruned"], state["finetune_optimizer"]  # the point is done: not in later checkpoints
            current = None
    trained_dense()
    done = sum(r.get("event") == "point" for r in run.logs)
    for s in cfg.sparsities[done:]:  # without fine-tuning (--finetune.epochs 0): no epochs to checkpoint
        point(s, *prune(s))
    points = [{k: v for k, v in r.items() if k not in ("event", "time")} for r in run.logs if r.get("event") == "point"]
    return {**named("dense_test", dense), "points": points}


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
