"""BiP, Hydra, IMP and OMP: the algorithm's gradients, masks, passes per step, the scripts end to end, bad input."""
import json

import pytest
import torch
from torch import nn

from bip.prune import BiLevelSteps
from bip.scores import ScoredWeights
from common import sparsity as S
from common.models import build_model
from common.store import collect
from tests.conftest import one_error_line, run_cli

FAST = ["--pretrain.epochs", "4", "--progress", "off"]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", 10, (1, 8, 8))


def test_scores_weights_and_model_tensors_never_share_storage():
    model = _mlp()
    w = ScoredWeights(S.prunable(model, ()), 0.8)
    ptrs = [t.data_ptr() for group in (w.z, w.theta, w.scores, w.masks) for t in group]
    assert len(set(ptrs)) == len(ptrs)
    with torch.no_grad():
        w.theta[0].add_(1.0)
    assert not torch.equal(w.theta[0].abs(), w.scores[0])   # scores did not move with the weights


def test_first_mask_is_the_global_magnitude_mask_and_sparsity_is_exact():
    model = _mlp()
    params = S.prunable(model, ())
    ref = S.global_topk(S.magnitudes(params), 0.9)
    w = ScoredWeights(params, 0.9)
    for mask, name in zip(w.masks, w.names):
        assert torch.equal(mask.bool(), ref[name])
    assert 1 - w.density() == pytest.approx(0.9, abs=1e-6)
    for z, theta, mask in zip(w.z, w.theta, w.masks):  # the model computes with z = mask (.) theta
        assert torch.equal(z.detach(), theta.detach() * mask)


def test_structured_masks_remove_whole_filters_or_channels_at_a_uniform_ratio():
    model = build_model("cnn", 10, (1, 8, 8))
    params = {n: p for n, p in S.prunable(model, ("first",)).items() if p.dim() == 4}
    for structure, dim in (("filter", 0), ("channel", 1)):
        w = ScoredWeights(params, 0.5, structure)
        for mask in w.masks:
            per_unit = mask.transpose(0, dim).reshape(mask.shape[dim], -1)
            assert ((per_unit == 0).all(1) | (per_unit == 1).all(1)).all()   # whole units
            assert per_unit[:, 0].mean().item() == pytest.approx(0.5)         # same ratio in every layer


@pytest.mark.parametrize("inv_gamma", [0.0, 0.3])
def test_upper_gradient_is_straight_through_plus_the_closed_form_implicit_gradient(inv_gamma):
    model = _mlp()
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    w = ScoredWeights(S.prunable(model, ()), 0.7)
    # reference by autograd: z = theta (.) (mask + s - s.detach()) gives d/ds = theta (.) grad_z (straight-through)
    theta = [t.detach().clone().requires_grad_(True) for t in w.theta]
    scores = [s.detach().clone().requires_grad_(True) for s in w.scores]
    zs = {n: t * (m + s - s.detach()) for n, t, m, s in zip(w.names, theta, w.masks, scores)}
    loss = nn.functional.cross_entropy(torch.func.functional_call(model, zs, (x,)), y)
    g_s = torch.autograd.grad(loss, scores, retain_graph=True)
    g_theta = torch.autograd.grad(loss, theta, retain_graph=True)
    g_z = torch.autograd.grad(loss, list(zs.values()))
    expected = [gs - inv_gamma * gz * gt for gs, gz, gt in zip(g_s, g_z, g_theta)]
    # ours, from the single backward pass through the model's z tensors
    out = nn.functional.cross_entropy(model(x), y)
    w.set_score_grads(list(torch.autograd.grad(out, w.z)), inv_gamma)
    for g, e in zip(w.score_grads(), expected):
        assert torch.allclose(g, e, atol=1e-7, rtol=1e-5)


def test_one_bip_iteration_is_two_forwards_and_two_backwards():
    model = _mlp()
    calls = {"fwd": 0, "bwd": 0}
    first = model[5]  # the classifier (no in-place ReLU after it, which backward hooks forbid)
    first.register_forward_hook(lambda *a: calls.__setitem__("fwd", calls["fwd"] + 1))
    first.register_full_backward_hook(lambda *a: calls.__setitem__("bwd", calls["bwd"] + 1))
    w = ScoredWeights(S.prunable(model, ()), 0.8)
    others = [p for p in model.parameters() if all(p is not z for z in w.z)]
    step = BiLevelSteps(model, w, torch.optim.SGD(w.theta + others, lr=0.01), torch.optim.SGD([w.score_param], lr=0.1),
                        1e-4, torch.device("cpu"))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    before = [t.detach().clone() for t in w.theta]
    step.lower(x, y, 0.01)
    step.upper(x, y, 0.1)
    assert calls == {"fwd": 2, "bwd": 2}
    moved = [(t.detach() != b) for t, b in zip(w.theta, before)]
    assert all(not (mv & (m == 0)).any() for mv, m in zip(moved, w.masks))  # pruned weights get no loss gradient
    assert all(torch.equal(z.detach(), t.detach() * m) for z, t, m in zip(w.z, w.theta, w.masks))


def test_rewind_replay_equals_the_stored_dense_model(runs):
    dense = run_cli("common.pretrain", "--model", "mlp", "--train.epochs", "3", "--runs-dir", runs)
    replay = run_cli("bip.rewind", "--model", "mlp", "--pretrain.epochs", "3", "--epoch", "3", "--runs-dir", runs)
    assert dense.returncode == 0 and replay.returncode == 0, replay.stderr
    (d,), (r,) = (runs / "common.pretrain").iterdir(), (runs / "bip.rewind").iterdir()
    a, b = (torch.load(p / "model.pt", weights_only=True) for p in (d, r))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bip_hydra_and_retraining_end_to_end(runs):
    for method in ("bip", "hydra"):
        proc = run_cli("bip.prune", *FAST, "--method", method, "--epochs", "2", "--finetune-epochs", "1",
                       "--target-sparsity", "0.8", "--runs-dir", runs)
        assert proc.returncode == 0, proc.stderr
    df = collect(runs, "bip.prune").set_index("config.method")
    assert (df["sparsity"] - 0.8).abs().max() < 1e-4 and (df["test_acc"] > 0.5).all()
    assert (df["method_time"] > 0).all() and (df["method_time"] < df["wall_time"]).all() and df["val_acc"].notna().all()
    assert df.loc["bip", "ig_ratio"] < 1e-2                                  # the paper's gamma: a tiny IG term
    weights = torch.load(f"{df.loc['bip', 'run_dir']}/model.pt", weights_only=True)
    assert float((weights["1.weight"] == 0).float().mean()) > 0.5             # the model is saved masked
    phases = [r["phase"] for r in map(json.loads, open(f"{df.loc['hydra', 'run_dir']}/log.jsonl")) if "phase" in r]
    assert phases == ["hydra", "hydra", "finetune"]
    proc = run_cli("bip.retrain", *FAST, "--epochs", "2", "--finetune-epochs", "1", "--target-sparsity", "0.8",
                   "--rewind-epoch", "1", "--retrain-epochs", "1", "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert result["pruned_test_acc"] == pytest.approx(df.loc["bip", "test_acc"])  # the BiP run was reused
    assert len(list((runs / "bip.prune").iterdir())) == 2


def test_imp_reports_every_round_with_cumulative_time_and_omp_one_point(runs):
    proc = run_cli("bip.magnitude", *FAST, "--epochs", "1", "--target-sparsity", "0.5", "--rewind-epoch", "0",
                   "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("bip.magnitude", *FAST, "--method", "omp", "--epochs", "1", "--target-sparsity", "0.5",
                   "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    df = collect(runs, "bip.magnitude")
    imp = df[df["config.method"] == "imp"].sort_values("round")
    assert list(imp["target_sparsity"].round(4)) == [0.2, 0.36, 0.488, 0.5]   # 20% of the rest per round, clipped
    assert (imp["sparsity"] - imp["target_sparsity"]).abs().max() < 1e-4
    assert imp["method_time"].is_monotonic_increasing
    omp = df[df["config.method"] == "omp"]
    assert len(omp) == 1 and omp["sparsity"].iloc[0] == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("script,args,message", [
    ("bip.prune", ["--target-sparsity", "1.0"], "--target-sparsity 1.0 is outside [0, 1)"),
    ("bip.magnitude", ["--target-sparsity", "-0.1"], "--target-sparsity -0.1 is outside [0, 1)"),
    ("bip.prune", ["--gamma", "0"], "--gamma 0.0 must be positive"),
    ("bip.prune", ["--gamma", "-1"], "--gamma -1.0 must be positive"),
    ("bip.prune", ["--structure", "filter"], "model mlp has no prunable conv layer"),
    ("bip.prune", ["--model", "cnn", "--structure", "channel", "--target-sparsity", "0.6"],
     "leaves layer 0.weight (1 input channels) with none under a per-layer ratio"),
    ("bip.prune", ["--scope", "layer", "--target-sparsity", "0.9995"],
     "leaves layer 5.weight (1000 weights) with none"),
    ("bip.magnitude", ["--rewind-epoch", "31"], "--rewind-epoch 31 is outside the dense training (0..30 epochs)"),
    ("bip.retrain", ["--rewind-epoch", "40"], "--rewind-epoch 40 is outside the dense training"),
    ("bip.magnitude", ["--target-sparsity", "0.99", "--max-rounds", "10"],
     "needs 21 rounds to reach --target-sparsity 0.99, more than --max-rounds 10"),
])
def test_bad_input_is_one_line_and_nothing_is_done(runs, script, args, message):
    proc = run_cli(script, "--runs-dir", runs, *args)
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not list(runs.glob("*/*/result.json"))


def test_incremental_threshold_equals_kthvalue_as_scores_drift():
    """The projection's threshold, searched near the last one, is exactly torch.kthvalue's at every step (small
    drifts, large jumps, ties) — so the mask is the exact global top-k."""
    from bip.scores import Threshold

    g = torch.Generator().manual_seed(0)
    for n, sparsity in ((20000, 0.2), (20000, 0.91), (3000, 0.99)):
        flat = torch.rand(n, generator=g)
        k = round(sparsity * n)
        threshold = Threshold()
        for step in range(60):
            scale = 0.5 if step % 17 == 5 else 1e-3             # now and then a jump far outside the band
            flat = flat + scale * torch.randn(n, generator=g)
            if step == 30:
                flat[:500] = flat[k]                                # a block of ties at the threshold
            assert torch.equal(threshold(flat, k), torch.kthvalue(flat, k).values), (n, sparsity, step)
