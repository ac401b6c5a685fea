"""SequentialAttention++ and its baselines: schedule, layouts, attention, fused scale vs reference, the phase controller
in a plain loop, runs, resume, bad input."""
import inspect
import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from common import config as C
from common import sparsity as S
from common.data import load_dataset
from common.models import build_model
from common.store import Run, collect, execute, read_log
from common.train import lr_at
from seqattn import attention, fused, oneshot, prune
from seqattn import phases as P
from seqattn.attention import Reparam, clip_range
from seqattn.blocks import BlockLayers, block_sum, block_topk, scale_blocks
from seqattn.controller import PhaseController
from tests.conftest import one_error_line, run_main

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


def held(plan: P.Plan, phase: P.Phase) -> list[float]:
    """The sparsity every step of a sparsification phase trains with: the latest update at or before it."""
    out, current = [], 0.0  # the phase starts from all blocks
    for t in range(phase.start, phase.end):
        current = plan.targets.get(t, current)
        out.append(current)
    return out


def test_sparsification_follows_the_exponential_curve_at_every_step():
    plan = P.Plan(P.layout("sapp", P.IMAGENET), 360, sparsity=0.9, c=4.0)  # the tiny profile's 360 steps
    sparsify = [p for p in plan.phases if p.kind == "sparsify"]
    assert len(sparsify) == 7 and {p.end - p.start for p in sparsify} == {9, 54}  # 9-step phases, one of 54
    for p in sparsify:
        last = p.end - p.start - 1
        applied = held(plan, p)
        assert applied[0] == 0.0 and applied[-1] == pytest.approx(0.9)  # no jump at the first step; s at the last
        for j, value in enumerate(applied):  # the curve at the step itself, t = j / (L - 1)
            assert value == pytest.approx(P.exp_sparsity(j / last, 0.9, 4.0), abs=1e-12)
    # a long phase with an update every 14 steps: held values lag the curve by at most its rise over 14 steps
    coarse = P.Plan([("dense", 0.5), ("sparsify", 0.5)], 2800, sparsity=0.9, c=4.0, every=14)
    p = coarse.phases[1]
    applied = held(coarse, p)
    slope = 0.9 * 4.0 / (1 - math.exp(-4.0))  # ds/dt at t = 0, the steepest
    assert applied[0] == 0.0 and applied[-1] == pytest.approx(0.9) and applied == sorted(applied)
    for j, value in enumerate(applied):
        assert 0 <= P.exp_sparsity(j / (p.end - p.start - 1), 0.9, 4.0) - value <= slope * 14 / 1399 + 1e-12
    assert len([t for t in coarse.targets if p.start <= t < p.end]) == 1399 // 14 + 1
    one = P.Plan([("dense", 0.5), ("sparsify", 0.25), ("sparse", 0.25)], 4, sparsity=0.9)
    assert one.targets == {2: 0.9}  # a one-step phase trains at s
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


@pytest.mark.parametrize("shape,block", [((24, 16), 4), ((25, 18), 4), ((16, 8, 3, 3), 4), ((16, 8, 3, 3), 3),
                                         ((32, 40), 1)])
@pytest.mark.parametrize("temperature,clip", [(1.0, None), (0.5, (0.5, 2.0)), (1.0, (0.9, 1.1))])
def test_fused_softmax_scale_equals_its_autograd_reference(shape, block, temperature, clip):
    """Forward values and the gradients of W and L of the hand-written backward equal autograd's through the plain
    reference, on random weights, logits and masks, with and without clipping, exact and padded tilings."""
    g = torch.Generator().manual_seed(block + len(shape))
    view = S.BlockView(shape, block)
    n = float(view.n_blocks)
    nmask = (torch.rand(view.grid, generator=g) > 0.3).float() * n
    lo, hi = (None, None) if clip is None else (clip[0] / n, clip[1] / n)
    w0, l0 = torch.randn(shape, generator=g), torch.randn(view.grid, generator=g)
    upstream = torch.randn(shape, generator=g)
    out = []
    for fn in (fused.softmax_scale, fused.softmax_scale_reference):
        w, logits = w0.clone().requires_grad_(True), l0.clone().requires_grad_(True)
        y = fn(w, logits, nmask, view, temperature, lo, hi)
        y.backward(upstream)
        out.append((y.detach(), w.grad, logits.grad))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", [4, 3])
def test_a_model_trains_with_the_fused_scale_as_with_its_reference(block, monkeypatch):
    """Through the model's parametrizations (n * Mask cached, clip range and temperature passed on): the gradients
    equal those of the same model computing with the reference scale."""
    grads = []
    for reference in (False, True):
        with monkeypatch.context() as m:
            if reference:
                m.setattr(attention, "softmax_scale", fused.softmax_scale_reference)
            model, layers = _layers(block)
            reparam = Reparam(model, layers, "attention", temperature=0.5, clip=lambda n: (0.5, 2.0))
            for scale in reparam.scales.values():
                with torch.no_grad():
                    scale.logits.copy_(torch.randn(scale.logits.shape, generator=torch.Generator().manual_seed(1)))
            reparam.set_masks(block_topk(reparam.attention(), 0.5, "layer"), applied=True)
            x = torch.randn(5, 8, 6, 6, generator=torch.Generator().manual_seed(2))
            model(x).square().sum().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_cached_mask_follows_every_change_of_the_mask():
    cache, mask = fused.MaskCache(), torch.ones(2, 3)
    assert torch.equal(cache(mask, 6.0, False), torch.full((2, 3), 6.0))
    assert torch.equal(cache(mask, 6.0, True), mask * 6.0)
    first = cache(mask, 6.0, True)
    assert cache(mask, 6.0, True) is first                   # unchanged mask: the cached tensor
    mask[0, 1] = 0.0                                         # an in-place write bumps the version
    assert torch.equal(cache(mask, 6.0, True), mask * 6.0) and cache(mask, 6.0, True) is not first


@pytest.mark.parametrize("shape,block", [((24, 16), 4), ((25, 16), 4), ((16, 8, 3, 3), 4), ((16, 8, 3, 3), 3)])
def test_block_scaling_matches_the_block_view(shape, block):
    view = S.BlockView(shape, block)
    w, values = torch.randn(shape), torch.rand(view.grid)
    torch.testing.assert_close(scale_blocks(view, w, values), w * view.expand_reference(values))
    assert torch.equal(view.expand(values), view.expand_reference(values))  # fast path (exact tilings) = plain one
    assert view.expand(values).is_contiguous()
    torch.testing.assert_close(block_sum(view, w), view.tiles(w).sum(dim=(1, 3)))


def test_block_topk_keeps_removed_blocks_removed():
    scores = {"a": torch.arange(10.0).view(2, 5)}
    first = block_topk(scores, 0.3, "layer")
    assert first["a"].flatten().tolist() == [0, 0, 0] + [1] * 7
    reversed_scores = {"a": -scores["a"]}
    second = block_topk(reversed_scores, 0.5, "layer", within=first)
    assert second["a"].flatten()[:3].tolist() == [0, 0, 0] and int(second["a"].sum()) == 5


@pytest.mark.parametrize("kind", ["attention", "mask"])
def test_hard_pruning_zeroes_the_pruned_blocks_and_their_momentum_and_they_stay_zero(kind):
    model, layers = _layers(4)
    reparam = Reparam(model, layers, kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(5, 8, 6, 6, generator=torch.Generator().manual_seed(2))

    def step():
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()

    step()  # momentum on every weight
    masks = block_topk(reparam.effective_norms(), 0.5, "layer")
    before = {n: opt.state[w]["momentum_buffer"].clone() for n, w in layers.params.items()}
    reparam.set_masks(masks, applied=True, zero_weights=True, optimizer=opt)
    for n, w in layers.params.items():
        kept = layers.views[n].expand(masks[n]).bool()
        assert torch.equal(opt.state[w]["momentum_buffer"], torch.where(kept, before[n], 0.0)), n
    for _ in range(3):
        step()
        for n, w in layers.params.items():
            assert not w[~layers.views[n].expand(masks[n]).bool()].any(), n


# ------------------------------------------------------------------------------------------------ controller
@pytest.mark.parametrize("method", ["sapp", "acdc", "magnitude", "powerprop"])
def test_a_plain_training_loop_drives_the_controller_to_its_block_sparsity(method):
    """No store, no script: an MLP on random tensors, SGD from the controller's parameter groups, one call per step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    events = []
    ctl = PhaseController(model, method=method, block=4, sparsity=0.75, total_steps=60, phases=(0.2, 0.2, 0.2, 0.4),
                          log=lambda defer, **record: events.append((defer, record)))
    optimizer = ctl.attach(torch.optim.SGD(ctl.param_groups(), lr=0.05, momentum=0.9))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 32, 64, generator=g), torch.randint(0, 10, (60, 32), generator=g)
    for t in range(60):
        ctl.begin_step(t)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[t]), y[t]).backward()
        optimizer.step()
    assert ctl.block_sparsity() == 0.75 and ctl.applied_sparsity() == 0.75
    ctl.finish()
    assert not any(parametrize.is_parametrized(m) for m in model)  # plain layers computing W_eff
    for name, mask in ctl.reparam.masks().items():  # 64x64 and 64x32: 256 and 128 blocks of 4x4, a quarter kept
        weight = dict(model.named_parameters())[name]
        norms = S.BlockView(weight.shape, 4).norms(weight)
        assert float(mask.mean()) == 0.25 and not norms[mask == 0].any(), name
    assert model[4].weight.all()  # the classifier stays dense
    phases = [(r["step"], r["phase"]) for _, r in events if r["event"] == "phase"]
    expected = {"sapp": [(0, "dense"), (12, "sparsify"), (36, "sparse")],
                "acdc": [(0, "dense"), (12, "sparse"), (24, "dense"), (36, "sparse")]}
    assert phases == expected.get(method, [(0, "dense"), (36, "sparse")])
    updates = [(defer, r) for defer, r in events if r["event"] == "prune"]
    if method == "sapp":  # one mask update per step of the sparsification phase but its first, each without a sync
        assert [r["step"] for _, r in updates] == list(range(13, 36))
        assert all(defer and torch.is_tensor(r["sparsity"]) for defer, r in updates)
        assert ctl.logit_sd() > 0
    else:
        assert all(not defer and isinstance(r["sparsity"], float) for defer, r in updates)
        assert ctl.logit_sd() is None


@pytest.mark.parametrize("method", ["sapp", "acdc"])
def test_the_controller_in_a_plain_loop_gives_the_weights_the_script_computes(runs, method):
    cfg = C.build(prune.Config, method=method, block=4, sparsity=0.9, phases=(0.25, 0.25, 0.25, 0.25),
                  runs_dir=str(runs), **FAST)
    execute(prune, cfg)
    stored = torch.load(Run(prune.SCRIPT, cfg).dir / "model.pt", weights_only=True)
    torch.manual_seed(cfg.seed)  # the script's data order and initialization
    data = load_dataset(cfg.dataset, root=cfg.data_dir, batch_size=cfg.optim.batch_size, seed=cfg.seed)
    model = build_model(cfg.model, data.info.num_classes, data.info.input_shape)
    steps = len(data.train)
    ctl = PhaseController(model, method=method, block=4, sparsity=0.9, epochs=cfg.epochs, steps_per_epoch=steps,
                          phases=cfg.phases)
    optimizer = ctl.attach(torch.optim.SGD(ctl.param_groups(), lr=cfg.lr.lr, momentum=cfg.optim.momentum,
                                           weight_decay=cfg.optim.weight_decay))
    for epoch in range(cfg.epochs):
        for i, (x, y) in enumerate(data.train.epoch(epoch)):
            t = epoch * steps + i
            ctl.begin_step(t)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg.lr, t / steps, cfg.epochs)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    ctl.finish()
    assert model.state_dict().keys() == stored.keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, stored[name]), name


def test_the_controller_takes_the_scripts_settings_with_its_defaults(monkeypatch):
    defaults = {n: p.default for n, p in inspect.signature(PhaseController).parameters.items()
                if p.default is not inspect.Parameter.empty}
    cfg = C.build(prune.Config)
    shared = [n for n in defaults if hasattr(cfg, n) and n != "epochs"]  # the run length has no default
    assert len(shared) == 19 and {n: defaults[n] for n in shared} == {n: getattr(cfg, n) for n in shared}
    passed = {}
    monkeypatch.setattr(prune, "PhaseController", lambda model, **kwargs: passed.update(kwargs))
    prune.controller(cfg, None, 12)
    assert set(defaults) - {"total_steps"} == set(passed) and passed["epochs"] == cfg.epochs
    with pytest.raises(RuntimeError, match="attach the optimizer"):
        PhaseController(nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 2)), total_steps=10).begin_step(0)


def test_the_curve_subset_is_decoded_once_and_read_at_every_point():
    class Split:
        num_samples, batch_size, taken = 50, 16, []

        def take(self, idx):
            self.taken.append(idx)
            return idx.float(), idx

    split = Split()
    subset = prune.CurveSubset(split, 40, 0)
    first, again = list(subset.epoch(0)), list(subset.epoch(0))
    assert len(split.taken) == 3 and all(a[0] is b[0] for a, b in zip(first, again))  # 16 + 16 + 8, held
    assert torch.equal(torch.cat([y for _, y in again]), subset.indices)


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
        # the block logits moved from 0 (their SD, the largest over the layers, is what the result reports)
        assert 0 < result["logit_sd"] < 10
    else:
        assert "logit_sd" not in result  # no logits


def test_a_run_applies_the_exponential_curve_at_every_step_of_its_sparsification_phase(runs):
    # 48 steps: dense 0-11, sparsification 12-29 (18 steps), sparse 30-47
    cfg = C.build(prune.Config, method="sapp", block=4, sparsity=0.9, phases=(0.25, 0.75), runs_dir=str(runs),
                  **FAST)
    result = execute(prune, cfg)
    assert [(p["kind"], p["start"], p["end"]) for p in result["phases"]] == [
        ("dense", 0, 12), ("sparsify", 12, 30), ("sparse", 30, 48)]
    updates = {r["step"]: r["sparsity"] for r in read_log(Run(prune.SCRIPT, cfg).dir) if r.get("event") == "prune"}
    current = 0.0
    for j, t in enumerate(range(12, 30)):  # the measured block sparsity each step trains with
        current = updates.get(t, current)
        assert current == pytest.approx(P.exp_sparsity(j / 17, 0.9, 4.0), abs=1e-3)
    assert 12 not in updates and updates[29] == pytest.approx(0.9, abs=1e-3)  # step 12 trains with every block


def test_a_sparsification_phase_updates_its_masks_without_a_host_sync_or_a_write_per_step(runs, monkeypatch):
    """Each of the 17 mask updates of an 18-step sparsification phase is logged, but its sparsity stays a device
    tensor until the epoch's record flushes them (one read for all): no float() of the masks and no append to
    log.jsonl per step."""
    import common.store as store

    cfg = C.build(prune.Config, method="sapp", block=4, sparsity=0.9, phases=(0.25, 0.75), runs_dir=str(runs),
                  **FAST)
    synced, appends, real_sparsity, real_open = [], [], Reparam.block_sparsity, open

    def block_sparsity(self, sync=True):
        synced.append(sync)
        return real_sparsity(self, sync)

    def counting_open(path, mode="r", *args, **kwargs):
        if str(path).endswith("log.jsonl") and mode == "a":
            appends.append(path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(Reparam, "block_sparsity", block_sparsity)
    monkeypatch.setattr(store, "open", counting_open, raising=False)
    execute(prune, cfg)
    log = read_log(Run(prune.SCRIPT, cfg).dir)
    updates = [r for r in log if r.get("event") == "prune"]
    assert len(updates) == 17 and all(isinstance(r["sparsity"], float) for r in updates)
    assert synced.count(False) == 17 and synced.count(True) <= cfg.epochs  # the epoch records' applied_sparsity
    assert len(appends) < len(log) - 10  # the deferred updates went out with other records, not one write each
    steps = [r.get("step") for r in log if "step" in r]
    assert steps == sorted(steps)  # in the order they happened


def test_epoch_records_carry_the_phase_their_model_was_measured_in(runs, monkeypatch):
    # ACDC, 12 steps per epoch: dense 0-11, sparse 12-23, dense 24-35, sparse 36-47; epoch 1 ends a dense phase
    cfg = C.build(prune.Config, method="acdc", block=4, sparsity=0.8, phases=(0.25, 0.25, 0.25, 0.25),
                  runs_dir=str(runs), **FAST)
    measured, real = [], prune.evaluate

    def evaluate(model, split, loss_fn):  # the zero fraction of W_eff of the first hidden layer, when measured
        measured.append(float((model[1].weight == 0).float().mean()))
        return real(model, split, loss_fn)

    monkeypatch.setattr(prune, "evaluate", evaluate)
    result = execute(prune, cfg)
    assert result["steps_per_epoch"] == 12
    log = read_log(Run(prune.SCRIPT, cfg).dir)
    epochs = [r for r in log if "epoch" in r]
    assert [r["phase"] for r in epochs] == ["dense", "sparse", "dense", "sparse"]
    for record, zeros in zip(epochs, measured):
        if record["phase"] == "dense":  # the dense model's accuracy: nothing masked or pruned in it
            assert record["applied_sparsity"] == 0.0 and zeros < 0.05
        else:
            assert record["applied_sparsity"] == pytest.approx(0.8, abs=1e-3) and zeros >= 0.8 - 1e-3
    # the pruning at step 12 is logged after epoch 1's (dense) record, before epoch 2's (sparse) one
    prune_at_12 = next(i for i, r in enumerate(log) if r.get("event") == "prune" and r["step"] == 12)
    assert log.index(epochs[0]) < prune_at_12 < log.index(epochs[1])


def test_interrupted_run_resumes_to_the_same_model(runs, tmp_path, monkeypatch):
    cfg = C.build(prune.Config, method="sapp", block=4, sparsity=0.9, runs_dir=str(runs), **FAST)
    execute(prune, cfg)
    reference = torch.load(Run(prune.SCRIPT, cfg).dir / "model.pt", weights_only=True)
    other = C.replace(cfg, runs_dir=str(tmp_path / "other"), checkpoint_epoch_minutes=0.0)  # every epoch end
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
    proc = run_main("seqattn.prune", "--runs-dir", runs, *args)
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not list(runs.glob("*/*/result.json"))
