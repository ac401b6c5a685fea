"""BiP, Hydra, IMP and OMP: the algorithm's gradients, masks, passes per step, the scripts end to end, bad input."""
import json
import subprocess
import sys
from functools import partial

import pytest
import torch
from torch import nn

from bip.bilevel import BiLevelSteps, bip_steps, hydra_steps
from bip.masks import magnitude_masks
from bip.scores import ScoredWeights
from common import sparsity as S
from common.models import build_model
from common.store import collect
from tests.conftest import ROOT, one_error_line, run_main

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
    ref = S.topk_masks(S.magnitudes(params), 0.9, "global", ties="exact")
    w = ScoredWeights(params, 0.9)
    for mask, name in zip(w.masks, w.names):
        assert torch.equal(mask.bool(), ref[name])
    assert 1 - w.density() == pytest.approx(0.9, abs=1e-6)
    for z, theta, mask in zip(w.z, w.theta, w.masks):  # the model computes with z = mask (.) theta
        assert torch.equal(z.detach(), theta.detach() * mask)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_projection_prunes_every_score_tied_with_the_threshold(scope):
    """BiP's top-k is a threshold (ties="prune_all"): k = round(0.25 * 8) = 2, the 2nd smallest |theta| = 1 is tied
    three times, all three are pruned (and the 0)."""
    params = {"w": nn.Parameter(torch.tensor([[0.0, 1.0, -1.0, 1.0], [2.0, 3.0, 4.0, 5.0]]))}
    w = ScoredWeights(params, 0.25, scope=scope)
    assert w.masks[0].tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert w.aimed_sparsity() == 0.25 and 1 - w.density() == 0.5


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
                        1e-4)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    before = [t.detach().clone() for t in w.theta]
    step.lower(x, y, 0.01)
    step.upper(x, y, 0.1)
    assert calls == {"fwd": 2, "bwd": 2}
    moved = [(t.detach() != b) for t, b in zip(w.theta, before)]
    assert all(not (mv & (m == 0)).any() for mv, m in zip(moved, w.masks))  # pruned weights get no loss gradient
    assert all(torch.equal(z.detach(), t.detach() * m) for z, t, m in zip(w.z, w.theta, w.masks))


def test_the_upper_step_returns_its_loss_and_grad_z_for_the_logged_ig_ratio():
    """What the epoch's record reads: the upper step's grad_z l at z = top-k(m_t) (.) theta, left unchanged by the
    step, and ig_ratio = ||(1/gamma) grad_z (.) grad_theta|| / ||grad_m l|| computed from it."""
    model = _mlp()
    w = ScoredWeights(S.prunable(model, ()), 0.8)
    others = [p for p in model.parameters() if all(p is not z for z in w.z)]
    step = BiLevelSteps(model, w, torch.optim.SGD(w.theta + others, lr=0.01), torch.optim.SGD([w.score_param], lr=0.1),
                        1e-4)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    zs = {n: z.detach().clone().requires_grad_(True) for n, z in zip(w.names, w.z)}
    expected_loss = nn.functional.cross_entropy(torch.func.functional_call(model, zs, (x,)), y)
    expected = torch.autograd.grad(expected_loss, list(zs.values()))
    loss, grad_z = step.upper(x, y, 0.1)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=0, atol=0)
    for g, e in zip(grad_z, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    ig = sum(float((1e-4 * m * g * g).pow(2).sum()) for g, m in zip(expected, w.masks)) ** 0.5
    ste = sum(float((g * t.detach()).pow(2).sum()) for g, t in zip(expected, w.theta)) ** 0.5
    assert w.ig_ratio(list(grad_z), 1e-4) == pytest.approx(ig / ste, rel=1e-12)


def test_rewind_replay_equals_the_stored_dense_model(runs):
    dense = run_main("common.pretrain", "--model", "mlp", "--train.epochs", "3", "--runs-dir", runs)
    replay = run_main("bip.rewind", "--model", "mlp", "--pretrain.epochs", "3", "--epoch", "3", "--runs-dir", runs)
    assert dense.returncode == 0 and replay.returncode == 0, replay.stderr
    (d,), (r,) = (runs / "common.pretrain").iterdir(), (runs / "bip.rewind").iterdir()
    a, b = (torch.load(p / "model.pt", weights_only=True) for p in (d, r))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bip_hydra_and_retraining_end_to_end(runs):
    for method, own in (("bip", []), ("hydra", ["--finetune-epochs", "1"])):  # BiP does not fine-tune
        proc = run_main("bip.prune", *FAST, "--method", method, "--epochs", "2", *own,
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
    proc = run_main("bip.retrain", *FAST, "--epochs", "2", "--target-sparsity", "0.8",
                    "--rewind-epoch", "1", "--retrain-epochs", "1", "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert result["pruned_test_acc"] == pytest.approx(df.loc["bip", "test_acc"])  # the BiP run was reused
    assert len(list((runs / "bip.prune").iterdir())) == 2


def test_imp_reports_every_round_with_cumulative_time_and_omp_one_point(runs):
    proc = run_main("bip.magnitude", *FAST, "--epochs", "1", "--target-sparsity", "0.5", "--rewind-epoch", "0",
                    "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    proc = run_main("bip.magnitude", *FAST, "--method", "omp", "--epochs", "1", "--target-sparsity", "0.5",
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
    proc = run_main(script, "--runs-dir", runs, *args)
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not list(runs.glob("*/*/result.json"))


def test_incremental_threshold_equals_the_reference_selection_as_scores_drift():
    """The projection's threshold, searched near the last one, is exactly the reference's at every step (small
    drifts, large jumps, ties) — so the mask is the exact global top-k."""
    from bip.scores import Threshold, kth_smallest_reference

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
            assert torch.equal(threshold(flat, k), kth_smallest_reference(flat, k)), (n, sparsity, step)


def _adversarial_scores():
    """Score vectors that stress a selection: ties at every rank, all equal, negatives, +-inf, NaN, n = 1, 2."""
    g = torch.Generator().manual_seed(0)
    inf, nan = float("inf"), float("nan")
    yield torch.tensor([0.5])
    yield torch.tensor([2.0, -1.0])
    yield torch.full((257,), 0.25)                                           # all equal
    yield torch.randint(0, 4, (1000,), generator=g).float()                  # a few values, ties everywhere
    yield torch.randn(1001, generator=g)                                     # negatives
    yield torch.randn(1000, generator=g).abs().round(decimals=1)             # duplicates at many ranks
    yield torch.tensor([inf, -inf, 0.0, -0.0, 1.0, inf, -inf, 1.0])
    yield torch.where(torch.rand(500, generator=g) < 0.1, inf, torch.randn(500, generator=g))
    yield torch.tensor([1.0, nan, 3.0, 2.0, 4.0, nan, -1.0])                 # NaN ranks above every number
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        yield torch.randn(999, generator=g).to(dtype)
        yield torch.randint(0, 5, (999,), generator=g).to(dtype)


def test_topk_threshold_equals_the_reference_selection_and_gives_the_same_masks():
    """The CUDA default (topk over the smaller side), run on the CPU here, selects exactly the reference's value at
    every k of adversarial vectors and at chosen k of large ones, so the mask (scores > threshold) is the same."""
    from bip.scores import kth_smallest_reference, topk_kthvalue

    def check(flat, k):
        ref, got = kth_smallest_reference(flat, k), topk_kthvalue(flat, k)
        assert got.dtype == flat.dtype and got.shape == ref.shape
        assert torch.equal(flat > got, flat > ref), (flat.numel(), k, ref, got)
        assert torch.equal(got, ref) or (ref.isnan() and got.isnan()), (flat.numel(), k, ref, got)

    for flat in _adversarial_scores():
        for k in range(1, flat.numel() + 1):
            check(flat, k)
    g = torch.Generator().manual_seed(1)
    big = torch.randn(3_000_000, generator=g)
    big[::7] = big[1000]                                                      # a block of ties at one rank
    for k in (1, 12345, 1_500_000, 1_500_001, 2_700_000, 2_999_999, 3_000_000):
        check(big, k)


def test_structured_and_layerwise_projections_take_the_same_threshold_rule(monkeypatch):
    """Per-layer and structured masks go through the same selection: topk and kthvalue give the same masks, and a
    sparsity that prunes nothing (k = 0) keeps every unit."""
    from bip import scores as B

    torch.manual_seed(0)
    model = build_model("cnn", 10, (1, 8, 8))
    params = {n: p for n, p in S.prunable(model, ()).items() if p.dim() == 4}
    for structure, scope, sparsity in (("filter", "global", 0.5), ("channel", "global", 0.5),
                                       ("unstructured", "layer", 0.8), ("unstructured", "layer", 0.0)):
        ref = [m.clone() for m in ScoredWeights(params, sparsity, structure, scope).masks]
        with monkeypatch.context() as m:
            m.setattr(B, "kth_smallest", B.topk_kthvalue)
            got = ScoredWeights(params, sparsity, structure, scope).masks
        assert all(torch.equal(a, b) for a, b in zip(ref, got)), (structure, scope)
        if sparsity == 0.0:
            assert all(bool(mask.all()) for mask in got)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_projection_equals_the_cpu_one():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    for scores in (torch.rand(2_000_003, generator=g), torch.randint(0, 50, (2_000_003,), generator=g).float()):
        params = {"w": nn.Parameter(scores.clone())}
        cpu = ScoredWeights(params, 0.9).flat_mask
        cuda = ScoredWeights({"w": nn.Parameter(scores.cuda())}, 0.9).flat_mask
        assert torch.equal(cpu, cuda.cpu())


@pytest.mark.parametrize("target,rounds", [*((round(1 - 0.8 ** n, 6), n) for n in range(1, 21)), (0.893, 10),
                                           (0.5, 4), (0.99, 21)])
def test_imp_takes_the_rounds_of_the_grid_point_its_target_rounds(target, rounds):
    """1 - 0.8^n written to 6 decimals (or 0.893 for 89.26%) is n rounds, the last pruning to the target itself; a
    target between grid points takes the next round."""
    from bip import magnitude

    targets = magnitude.round_sparsities(magnitude.Config(target_sparsity=target))
    assert len(targets) == rounds and targets[-1] == target
    assert targets[:-1] == pytest.approx([1 - 0.8 ** r for r in range(1, rounds)])


def test_dense_model_and_rewind_replay_hold_out_the_validation_split(runs, monkeypatch, one_thread):
    """The dense model (and its replay for rewinding) trains on exactly the training split of the run that starts
    from it: the validation samples of --val-size are never trained on."""
    from bip import magnitude
    from bip.config import data_of
    from common import config as C
    from common import pretrain
    from common.store import execute

    seen = []

    def recording(*args, **kwargs):
        seen.append(load(*args, **kwargs))
        return seen[-1]

    load = pretrain.load_dataset
    monkeypatch.setattr(pretrain, "load_dataset", recording)
    cfg = C.parse_args(magnitude.Config, [*FAST, "--epochs", "1", "--target-sparsity", "0.2", "--rewind-epoch", "1",
                                          "--val-size", "100", "--runs-dir", str(runs)])
    execute(magnitude, cfg)
    data = data_of(cfg, torch.device("cpu"), cfg.batch_size)
    (dense,) = seen
    assert torch.equal(dense.train.x, data.train.x) and torch.equal(dense.train.y, data.train.y)
    assert dense.train.num_samples == 1437 - 100
    for script in ("common.pretrain", "bip.rewind"):
        (run_dir,) = (runs / script).iterdir()
        assert json.loads((run_dir / "config.json").read_text())["config"]["val_size"] == 100
    (dense_dir,) = (runs / "common.pretrain").iterdir()
    assert json.loads((dense_dir / "result.json").read_text())["train_samples"] == 1437 - 100


def _bn_steps(cnn):
    params = {n: p for n, p in S.prunable(cnn, ()).items()}
    w = ScoredWeights(params, 0.5)
    others = [p for p in cnn.parameters() if all(p is not z for z in w.z)]
    return BiLevelSteps(cnn, w, torch.optim.SGD(w.theta + others, lr=0.01), torch.optim.SGD([w.score_param], lr=0.1),
                        1e-4)


def test_batchnorm_running_statistics_move_once_per_iteration_by_the_lower_step(one_thread):
    import copy

    torch.manual_seed(0)
    cnn = build_model("cnn", 10, (1, 8, 8)).train()
    bns = [m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    step = _bn_steps(cnn)
    stats = lambda: [t.clone() for bn in bns for t in (bn.running_mean, bn.running_var)]  # noqa: E731
    for it in range(3):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        before = stats()
        step.lower(x, y, 0.01)
        after_lower = stats()
        assert all(not torch.equal(a, b) for a, b in zip(after_lower, before))     # the training step moves them
        twin = copy.deepcopy(cnn)                                                  # upper: batch statistics
        expected = nn.functional.cross_entropy(twin(x), y)
        loss, _ = step.upper(x, y, 0.1)
        assert torch.allclose(loss, expected, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(stats(), after_lower))       # ... and leaves them alone
        assert all(int(bn.num_batches_tracked) == it + 1 and bn.track_running_stats for bn in bns)
    hydra = BiLevelSteps(cnn, step.w, step.opt_theta, step.opt_m, 0.0, hydra=True)
    hydra.upper(x, y, 0.1)                                                        # Hydra's score step: its training
    assert all(not torch.equal(a, b) for a, b in zip(stats(), after_lower))
    assert all(int(bn.num_batches_tracked) == 4 for bn in bns)


@pytest.mark.parametrize("structure,dim", [("filter", 0), ("channel", 1)])
def test_structured_masks_rank_units_by_the_sum_of_their_signed_scores(structure, dim):
    """Like the unstructured top-k, a negative score votes for pruning: a unit of large negative scores (large under
    any norm) goes first, and the first mask is the L1-norm magnitude mask."""
    model = build_model("cnn", 10, (1, 8, 8))
    params = {n: p for n, p in S.prunable(model, ("first",)).items() if p.dim() == 4}
    w = ScoredWeights(params, 0.5, structure)
    for mask, theta in zip(w.masks, w.theta):
        l1 = theta.detach().abs().transpose(0, dim).reshape(theta.shape[dim], -1).sum(1)
        kept = mask.transpose(0, dim).reshape(mask.shape[dim], -1)[:, 0].bool()
        assert l1[kept].min() > l1[~kept].max()
    with torch.no_grad():
        s = w.scores[0]
        s.copy_(torch.rand_like(s) + 1.0)                      # every unit: positive scores in [1, 2)
        units = s.transpose(0, dim)
        units[0] = -5.0                                        # unit 0: the largest L2 norm, the smallest sum
        units[1] = 0.01                                        # unit 1: small and positive
    w.project()
    kept = w.masks[0].transpose(0, dim).reshape(s.shape[dim], -1)[:, 0]
    assert kept[0] == 0 and kept[1] == 0 and kept[2:].sum() == s.shape[dim] // 2


def test_bip_run_that_misses_its_target_sparsity_is_recorded_failed(runs):
    """--score-init 0: every score ties at the threshold, all of them are pruned; the run fails, with the cause."""
    proc = run_main("bip.prune", *FAST, "--epochs", "1", "--score-init", "0", "--target-sparsity", "0.5",
                    "--runs-dir", runs)
    assert proc.returncode == 3, proc.stderr
    line = one_error_line(proc)
    assert "misses the target 0.5000" in line and "--score-init 0" in line
    (run_dir,) = (runs / "bip.prune").iterdir()
    assert (run_dir / "failed.json").exists() and not (run_dir / "result.json").exists()
    assert "--score-init 0" in json.loads((run_dir / "failed.json").read_text())["reason"]


def test_the_sparsity_checked_at_the_end_is_the_one_the_projection_aims_at():
    """Whole channels: 29 of 32 (and 58 of 64) pruned is 90.6% for --target-sparsity 0.9, a run that is not failed."""
    model = build_model("cnn", 10, (1, 8, 8))
    params = {n: p for n, p in S.prunable(model, ("first",)).items() if p.dim() == 4}
    w = ScoredWeights(params, 0.9, "channel")
    assert w.aimed_sparsity() == pytest.approx(1 - w.density()) == pytest.approx(0.90625)
    w = ScoredWeights(S.prunable(_mlp(), ()), 0.7, scope="layer")
    assert w.aimed_sparsity() == pytest.approx(1 - w.density(), abs=1e-12)


def test_bip_prune_refuses_a_job_of_several_processes(runs, monkeypatch):
    """BiP's bi-level steps are not data-parallel: under torchrun / a multi-task Slurm job (WORLD_SIZE > 1) every
    process would compute the whole run, so the script ends with one line naming the fix, before any training."""
    from tests.conftest import refused_in_a_job_of

    line = refused_in_a_job_of(4, "bip.prune", ["--runs-dir", str(runs), *FAST], monkeypatch)
    assert line.startswith("error: bip.prune runs in one process, on one GPU (the two levels' steps are not "
                           "data-parallel); this job has 4 processes (WORLD_SIZE=4)")
    assert "python -m slurm.submit --gpus 1" in line
    assert not list(runs.glob("*/*/result.json")) and not list(runs.glob("common.pretrain/*"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threshold_works_under_a_float64_default_dtype(dtype):
    """The first band width comes from quantiles of the scores: their levels take the scores' dtype, whatever torch's
    default dtype is."""
    from bip.scores import Threshold, kth_smallest_reference

    flat = torch.rand(5000, generator=torch.Generator().manual_seed(0)).to(dtype)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        threshold = Threshold()
        for step in range(3):  # the full selection first, then the band around it
            flat = flat + 1e-3 * step
            assert torch.equal(threshold(flat, 4000), kth_smallest_reference(flat, 4000)), step
        assert threshold.width > 0
    finally:
        torch.set_default_dtype(before)


def _batches(n, shape, classes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, *shape, generator=g), torch.randint(0, classes, (16,), generator=g)) for _ in range(n)]


def test_bip_steps_in_a_plain_loop_keep_the_model_at_the_target_sparsity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))
    classifier = model[4].weight.detach().clone()
    steps = bip_steps(model, 0.75, partial(torch.optim.SGD, lr=0.05, momentum=0.9),
                      partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    magnitude = [m.clone() for m in steps.w.masks]
    for x, y in _batches(30, (20,), 5):
        steps.lower(x, y)
        steps.upper(x, y)
    assert steps.w.names == ["0.weight", "2.weight"]        # the classifier is not pruned, but trained with theta
    n = 20 * 40 + 40 * 30
    assert 1 - steps.w.density() == round(0.75 * n) / n     # exactly the global top-k
    assert sum(int((layer.weight == 0).sum()) for layer in (model[0], model[2])) == round(0.75 * n)
    assert any(not torch.equal(m, m0) for m, m0 in zip(steps.w.masks, magnitude))  # the scores moved the mask
    assert not torch.equal(model[4].weight, classifier)


def test_hydra_steps_in_a_plain_loop_learn_a_filter_mask_then_fine_tune_under_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                          nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    steps = hydra_steps(model, 0.5, partial(torch.optim.SGD, lr=0.05), partial(torch.optim.SGD, lr=0.5),
                        structure="filter", exclude=("first",))
    assert steps.w.names == ["3.weight"] and steps.inv_gamma == 0.0
    theta, batches = steps.w.theta[0].detach().clone(), _batches(20, (1, 8, 8), 10)
    for x, y in batches:                                     # scores only: the weights stay, the mask moves
        steps.upper(x, y)
    assert torch.equal(steps.w.theta[0], theta) and int(model[1].num_batches_tracked) == 20
    mask = steps.w.masks[0].clone()
    for x, y in batches:                                     # fine-tuning: the weights move under the fixed mask
        steps.lower(x, y)
    assert torch.equal(steps.w.masks[0], mask) and not torch.equal(steps.w.theta[0], theta)
    removed = (model[3].weight == 0).flatten(1).all(1)      # whole filters, half of them
    assert int(removed.sum()) == 8 and (model[3].weight[~removed] != 0).flatten(1).any(1).all()


def test_magnitude_masks_in_a_plain_loop_prune_round_by_round_within_the_last_mask():
    """IMP's rounds with ``common.sparsity.Masks`` enforcing them; the last round starts from rewound (dense) weights,
    where ``within`` keeps what earlier rounds pruned."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    masks = S.Masks(S.prunable(model, ("last",)))
    n = 20 * 40 + 40 * 30
    for r, sparsity in enumerate((0.2, 0.36, 0.488)):
        before = {k: m.clone() for k, m in masks.masks.items()}
        if r == 2:  # rewinding: the pruned weights are dense again
            model.load_state_dict(start)
        masks.set(magnitude_masks(model, sparsity, within=masks.masks), optimizer)
        assert all(not (masks.masks[k] > before[k]).any() for k in before)     # pruned once, pruned for good
        assert sum(int((m == 0).sum()) for m in masks.masks.values()) == round(sparsity * n)
        for x, y in _batches(5, (20,), 5, seed=r):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            masks.mask_grads()
            optimizer.step()
            masks.apply()
        assert sum(int((model[i].weight == 0).sum()) for i in (0, 2)) == round(sparsity * n)
    omp = magnitude_masks(model, 0.5, scope="layer", exclude=())               # OMP per layer, every layer
    assert [round(1 - float(m.float().mean()), 3) for m in omp.values()] == [0.5, 0.5, 0.5]


def test_the_steps_and_masks_need_no_run_store():
    code = "import sys, bip.bilevel, bip.masks; print('common.store' in sys.modules, 'common.config' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
