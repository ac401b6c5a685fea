"""SequentialAttention++ step cost, measured in this one process (python -m seqattn.bench; part of make bench).

A SA++ training step computes W_eff = W (.) expand(A (.) Mask), A = n * softmax(L), for every block-sparsified layer
(forward and backward), and the optimizer also updates the logits. Not measured here: the mask updates of the
sparsification phases (every ``mask_every`` steps, default every step: a top-k over the blocks and a masked multiply of
the weights and their optimizer state). Ratio: SA++ step in a sparse phase (``sparse_phase``: the mask applied, as
between a sparsification phase's updates) / dense step of the same model; goal <= 1.3.
"""
from __future__ import annotations

import torch

from common.bench import RepeatedBatches, interleaved, report
from common.models import build_model
from common.train import Optim, make_optimizer, train_epoch
from seqattn.controller import PhaseController


def sparse_phase(model, method: str, block: int, sparsity: float = 0.9, lr: float = 0.01) -> torch.optim.Optimizer:
    """``model`` as every step of a sparse phase of ``method`` trains it (``seqattn.controller``): a run of one sparse
    phase, begun (the top-k of the method's block scores installed and applied; the weights kept). Returns the
    optimizer (``Optim()``'s SGD at ``lr``) over the controller's parameter groups, the SA++ logits included."""
    ctl = PhaseController(model, method=method, block=block, sparsity=sparsity, total_steps=1, phases=(0.0, 1.0),
                          sparsification=False, zero_pruned=False)
    optimizer = ctl.attach(make_optimizer(ctl.param_groups(), Optim(), lr))
    ctl.begin_step(0)
    return optimizer


def sapp_step_ratio(model_name: str, shape, steps: int, block: int, batch_size: int = 128) -> float:
    data = RepeatedBatches(shape, 10, batch_size, steps)

    def trainer(sapp: bool):
        torch.manual_seed(0)
        model = build_model(model_name, 10, shape)
        opt = sparse_phase(model, "sapp", block) if sapp else make_optimizer(model.parameters(), Optim(), 0.01)
        return lambda: train_epoch(model, data, 0, opt, lr_of_step=lambda s: 0.01, first_step=0)

    t = interleaved({"dense": trainer(False), "sapp": trainer(True)})
    return t["sapp"] / t["dense"]


def main() -> None:
    print(f"seqattn benchmarks (torch {torch.__version__}, {torch.get_num_threads()} threads, cpu)")
    report("SA++ / dense training step, digits cnn B=4 (bs 128)", sapp_step_ratio("cnn", (1, 8, 8), 12, 4), "<= 1.3")
    report("SA++ / dense training step, digits mlp B=4 (bs 128)", sapp_step_ratio("mlp", (1, 8, 8), 24, 4), "<= 1.3")


if __name__ == "__main__":
    main()
