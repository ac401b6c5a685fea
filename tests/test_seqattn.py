"""SequentialAttention++ and its baselines: schedule, layouts, attention, fused backward, runs, resume, bad input."""
import json
import math

import pytest
import torch
from torch import nn

from common import config as C
from common import sparsity as S
from common.store import Run, collect, execute
from seqattn import oneshot, prune
from seqattn import phases as P
from seqattn.attention import Reparam, clip_range
from seqattn.blocks import BlockLayers, block_sum, block_topk, expand, scale_blocks
from tests.conftest import one_error_line, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"model": "mlp", "epochs": 4, "progress": "off"}


# ------------------------------------------------------------------------------------------------ schedule, layout
@pytest.mark.parametrize("c", [2.0, 4.0, 8.0])
def test_exponential_schedule_ends_and_is_front_loaded(c):
    assert P.exp_sparsity(0.0, 0.9, c) == 0.0
    assert P.exp_sparsity(1.0, 0.9, c) == pytest.approx(0.9)
    values = [P.exp_sparsity(t / 10, 0.9, c) for t in range(11)]
    assert values == sorted(values) and values[5] > 0.45  # faster than linear at the start
    assert P.exp_sparsity(0.3, 0.9, 4.0) == pytest.approx(0.9 * (1 - math.exp(-1.2)) / (1 - math.exp(-4)))


def test_paper_layouts():
    for skeleton in (P.IMAGENET, P.CRITEO):
        for method in ("acdc", "sapp", "magnitude", "powerprop"):
            assert sum(f for _, f in P.layout(method, skeleton)) == pytest.approx(1.0)
    acdc = P.layout("acdc", P.IMAGENET)
    assert [k for k, _ in acdc] == ["dense", "sparse"] * 8 and acdc[0][1] == 0.10 and acdc[-1][1] == 0.15
    assert acdc[-2] == ("dense", 0.10)  # the last dense phase is 5% longer (ACDC: dense 75-85 of 100)
    sapp = P.layout("sapp", P.IMAGENET)
    kinds = [k for k, _ in sapp]
    assert kinds == ["dense"] + ["sparsify", "sparse", "dense"] * 6 + ["sparsify", "sparse"]
    assert sapp[-2][1] == pytest.approx(0.15) and sapp[-1][1] == pytest.approx(0.15)
    assert P.layout("sapp", P.IMAGENET, sparsify=False) == acdc
    assert P.layout("magnitude", P.CRITEO) == [("dense", pytest.approx(0.8)), ("sparse", 0.2)]


def test_plan_updates_reach_the_target_monotonically():
    plan = P.Plan(P.layout("sapp", P.IMAGENET), 1000, sparsity=0.9, c=4.0, updates=5)
    sparsify = [p for p in plan.phases if p.kind == "sparsify"]
    assert len(sparsify) == 7 and plan.phases[-1].kind == "sparse" and plan.phases[-1].end == 1000
    for p in sparsify:
        steps = sorted(s for s in plan.targets if p.start <= s < p.end)
        assert steps[0] == p.start and len(steps) == 5
        targets = [plan.targets[s] for s in steps]
        assert targets == sorted(targets) and targets[-1] == pytest.approx(0.9)
    short = P.Plan(P.layout("sapp", P.IMAGENET), 1000, sparsity=0.9, short_dense_steps=3)
    assert all(p.end - p.start == 3 for p in short.phases[1:] if p.kind == "dense")
    assert short.phases[-1].end == 1000


# ------------------------------------------------------------------------------------------------ attention
def _layers(block=4, min_blocks=1):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16 * 4 * 4, 24), nn.Linear(24, 2))
    return model, BlockLayers(model, block, ("last",), min_blocks)


def test_attention_has_mean_one_and_clipping_bounds_it():
    model, layers = _layers()
    reparam = Reparam(model, layers, "attention", clip=lambda n: clip_range("relative", n, 0.25))
    for scale in reparam.scales.values():
        with torch.no_grad():
            scale.logits.normal_(0, 3)
    for name, a in reparam.attention().items():
        assert a.min() >= 0.25 - 1e-6 and a.max() <= 4.0 + 1e-6
    plain = Reparam(*_layers(), "attention")
    for scale in plain.scales.values():
        with torch.no_grad():
            scale.logits.normal_(0, 1)
        assert float(scale.attention().detach().mean()) == pytest.approx(1.0, abs=1e-5)
    assert clip_range("literal", 100, 0.1) == (10.0, 1000.0) and clip_range("none", 100, 0.1) is None


@pytest.mark.parametrize("block", [4, 3])
def test_fused_softmax_backward_equals_autograd(block):
    grads = []
    for fused in (True, False):
        model, layers = _layers(block)
        reparam = Reparam(model, layers, "attention", temperature=0.5, clip=lambda n: (0.5, 2.0))
        for scale in reparam.scales.values():
            scale.fused = fused
            with torch.no_grad():
                scale.logits.copy_(torch.randn(scale.logits.shape, generator=torch.Generator().manual_seed(1)))
        reparam.set_masks(block_topk(reparam.attention(), 0.5, "layer"), applied=True)
        x = torch.randn(5, 8, 6, 6, generator=torch.Generator().manual_seed(2))
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,block", [((24, 16), 4), ((25, 16), 4), ((16, 8, 3, 3), 4), ((16, 8, 3, 3), 3)])
def test_block_scaling_matches_the_block_view(shape, block):
    view = S.BlockView(shape, block)
    w, values = torch.randn(shape), torch.rand(view.grid)
    torch.testing.assert_close(scale_blocks(view, w, values), w * expand(view, values))
    torch.testing.assert_close(expand(view, values), view.expand(values))
    torch.testing.assert_close(block_sum(view, w), view.tiles(w).sum(dim=(1, 3)))


def test_block_topk_keeps_removed_blocks_removed():
    scores = {"a": torch.arange(10.0).view(2, 5)}
    first = block_topk(scores, 0.3, "layer")
    assert first["a"].flatten().tolist() == [0, 0, 0] + [1] * 7
    reversed_scores = {"a": -scores["a"]}
    second = block_topk(reversed_scores, 0.5, "layer", within=first)
    assert second["a"].flatten()[:3].tolist() == [0, 0, 0] and int(second["a"].sum()) == 5


# ------------------------------------------------------------------------------------------------ runs
@pytest.mark.parametrize("method", ["sapp", "acdc", "magnitude", "powerprop"])
def test_every_method_reaches_exact_block_sparsity(runs, method):
    cfg = C.build(prune.Config, method=method, block=4, sparsity=0.8, runs_dir=str(runs), **FAST)
    result = execute(prune, cfg)
    assert result["block_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert result["test_acc"] > 0.25  # 48 steps from scratch: learning, not converged
    weights = torch.load(Run(prune.SCRIPT, cfg).dir / "model.pt", weights_only=True)
    for name in ("1.weight", "3.weight"):  # both hidden layers, whole 4x4 blocks zero
        view = S.BlockView(weights[name].shape, 4)
        norms = view.norms(weights[name])
        assert float((norms == 0).float().mean()) == pytest.approx(0.8, abs=2e-3)
    assert not (weights["5.weight"] == 0).any()  # the classifier stays dense
    log = [json.loads(x) for x in open(Run(prune.SCRIPT, cfg).dir / "log.jsonl")]
    phases = [r["phase"] for r in log if r.get("event") == "phase"]
    assert phases[0] == "dense" and phases[-1] == "sparse"
    if method == "sapp":
        assert "sparsify" in phases and any(r.get("event") == "track" for r in log)


def test_interrupted_run_resumes_to_the_same_model(runs, tmp_path, monkeypatch):
    cfg = C.build(prune.Config, method="sapp", block=4, sparsity=0.9, runs_dir=str(runs), **FAST)
    execute(prune, cfg)
    reference = torch.load(Run(prune.SCRIPT, cfg).dir / "model.pt", weights_only=True)
    other = C.replace(cfg, runs_dir=str(tmp_path / "other"))
    real = prune.train_epoch

    def crash_at_epoch_2(model, split, epoch, *args, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(model, split, epoch, *args, **kwargs)

    monkeypatch.setattr(prune, "train_epoch", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(prune, other)
    monkeypatch.setattr(prune, "train_epoch", real)
    assert not Run(prune.SCRIPT, other).done
    execute(prune, other)
    resumed = torch.load(Run(prune.SCRIPT, other).dir / "model.pt", weights_only=True)
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0)


def test_oneshot_reports_every_sparsity(runs):
    for score in ("attention", "magnitude"):
        cfg = C.build(oneshot.Config, score=score, block=4, sparsities=(0.5, 0.9), runs_dir=str(runs),
                      progress="off", **{"pretrain.epochs": 3, "finetune.epochs": 1})
        execute(oneshot, cfg)
    df = collect(runs, oneshot.SCRIPT)
    assert len(df) == 4 and set(df["sparsity"]) == {0.5, 0.9}
    assert (df["block_sparsity"] - df["sparsity"]).abs().max() < 0.01 and (df["test_acc"] > 0.2).all()


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args,message", [
    (["--block", "0"], "--block 0 must be a positive block size"),
    (["--block", "400"], "--block 400 is larger than every prunable layer"),
    (["--phases", "0.5,0.2,0.1,0.1"], "sum to 0.9, not 1"),
    (["--c", "0"], "--c 0.0 must be > 0"),
    (["--temperature", "-1"], "--temperature -1.0 must be > 0"),
    (["--sparsity", "1.0"], "--sparsity 1.0 is outside [0, 1)"),
])
def test_bad_input_is_one_line_and_nothing_is_done(runs, args, message):
    proc = run_cli("seqattn.prune", "--runs-dir", runs, *args)
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not list(runs.glob("*/*/result.json"))
