import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from common import sparsity as S
from common.errors import UserError
from common.models import build_model


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn", 10, (1, 8, 8))


def test_prunable_exclusions():
    m = _model()
    names = list(S.prunable(m, exclude=()))
    assert len(names) == 4  # 3 convs + the classifier
    assert list(S.prunable(m, ("last",))) == names[:-1]
    assert list(S.prunable(m, ("first", "last"))) == names[1:-1]
    assert list(S.prunable(m, (names[1].rsplit(".", 1)[0],))) == [n for i, n in enumerate(names) if i != 1]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 0.99])
def test_exact_global_topk_equals_torch_global_unstructured(sparsity):
    ours, ref = _model(1), _model(1)
    params = S.prunable(ours, exclude=())
    masks = S.topk_masks(S.magnitudes(params), sparsity, "global", ties="exact")
    modules = [(mod, "weight") for mod in ref.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    torch_prune.global_unstructured(modules, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for (name, mask), (mod, _) in zip(masks.items(), modules):
        assert torch.equal(mask, mod.weight_mask.bool()), name


def test_layer_topk_has_uniform_ratio():
    params = S.prunable(_model(), exclude=())
    masks = S.topk_masks(S.magnitudes(params), 0.75, "layer", ties="exact")
    for n, m in masks.items():
        assert int((~m).sum()) == round(0.75 * m.numel()), n


def test_topk_tie_rules_on_tied_scores():
    """k = round(2/6 * 6) = 2, the k-th smallest score 1.0 is tied three times: "exact" prunes exactly 2 (the 0 and
    one of the 1s), "prune_all" every score <= 1.0 (4); both keep every score above the k-th smallest."""
    scores = torch.tensor([[1.0, 3.0, 0.0], [1.0, 2.0, 1.0]])
    exact = S.topk_mask(scores, 2 / 6, ties="exact")
    assert exact.shape == scores.shape and exact.dtype == torch.bool
    assert int((~exact).sum()) == 2 and not exact[0, 2] and int((~exact)[scores == 1.0].sum()) == 1
    assert exact[scores > 1.0].all()
    prune_all = S.topk_mask(scores, 2 / 6, ties="prune_all")
    assert torch.equal(prune_all, scores > 1.0)
    kth = S.topk_mask(scores, 2 / 6, ties="prune_all", kth=lambda flat, k: torch.sort(flat).values[k - 1])
    assert torch.equal(kth, prune_all)
    distinct = torch.randperm(50).float()  # no ties: the two rules give the same mask
    assert torch.equal(S.topk_mask(distinct, 0.3, ties="exact"), S.topk_mask(distinct, 0.3, ties="prune_all"))
    for ties in ("exact", "prune_all"):
        assert S.topk_mask(scores, 0.01, ties=ties).all()  # k = 0 prunes nothing
    with pytest.raises(ValueError, match="tie rule"):
        S.topk_mask(scores, 0.5, ties="random")
    named = S.topk_masks({"a": scores, "b": scores + 10}, 0.25, "global", ties="prune_all")
    assert torch.equal(named["a"], scores > 1.0) and named["b"].all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_through_momentum_and_weight_decay(optimizer):
    torch.manual_seed(0)
    model = _model()
    params = S.prunable(model, exclude=())
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=5e-4))
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    masks = S.Masks(params)
    for step in range(50):  # momentum builds up on every weight before the pruning at step 10
        if step == 10:
            masks.set(S.topk_masks(S.magnitudes(params), 0.8, "global", ties="exact"), opt)
            pruned = {n: ~m.bool() for n, m in masks.masks.items()}
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        masks.mask_grads()
        opt.step()
        masks.apply()
        if step >= 10:
            for n, p in params.items():
                assert torch.count_nonzero(p[pruned[n]]) == 0, (step, n)
    assert abs((1 - masks.density()) - 0.8) < 1e-3


def test_masks_state_roundtrip():
    params = S.prunable(_model(), exclude=())
    masks = S.Masks(params)
    masks.set(S.topk_masks(S.magnitudes(params), 0.5, "layer", ties="exact"))
    other = S.Masks(S.prunable(_model(2), exclude=()))
    other.load_state_dict(masks.state_dict())
    assert all(torch.equal(masks.masks[n], other.masks[n]) for n in masks.masks)
    with pytest.raises(UserError, match="do not match"):
        S.Masks(S.prunable(_model(), exclude=("last",))).load_state_dict(masks.state_dict())


@pytest.mark.parametrize("shape,block", [((8, 3, 3, 3), 4), ((5, 7, 3, 3), 4), ((10, 13), 3), ((6, 4), 8)])
def test_block_view_layout_and_roundtrip(shape, block):
    w = torch.randn(shape)
    view = S.BlockView(w.shape, block)
    m = view.to_matrix(w)
    if w.dim() == 4:  # (H*W*Cin) x Cout: row index = (h, w, cin), column = cout
        cout, cin, kh, kw = shape
        assert m.shape == (kh * kw * cin, cout)
        assert m[(1 * kw + 2) * cin + 1, 3] == w[3, 1, 1, 2]
    else:
        assert torch.equal(m, w.t())
    assert torch.equal(view.from_matrix(m), w)
    norms = view.norms(w)
    assert norms.shape == view.grid and view.n_blocks == norms.numel()
    # the norm of every tile equals the norm of the weights that the tile's expanded mask selects
    for r in range(view.grid[0]):
        for c in range(view.grid[1]):
            one = torch.zeros(view.grid)
            one[r, c] = 1
            sel = view.expand(one).bool()
            assert torch.allclose(w[sel].norm(), norms[r, c], atol=1e-6)
    assert view.expand(torch.ones(view.grid)).shape == w.shape


@pytest.mark.parametrize("shape,block", [((8, 3, 3, 3), 4), ((8, 4, 3, 3), 4), ((16, 8, 3, 3), 4), ((12, 8), 4),
                                         ((10, 13), 3), ((6, 4), 8)])
def test_block_expand_fast_path_equals_the_reference(shape, block):
    """Exact tilings take the fast broadcast; values and gradients equal the padded-matrix reference's."""
    view = S.BlockView(shape, block)
    assert view.exact == (shape in ((8, 4, 3, 3), (16, 8, 3, 3), (12, 8)))
    values = torch.rand(view.grid, requires_grad=True)
    g = torch.randn(shape)
    fast, ref = view.expand(values), view.expand_reference(values)
    assert torch.equal(fast, ref) and fast.is_contiguous() and fast.shape == shape
    (grad_fast,) = torch.autograd.grad(fast, values, g)
    (grad_ref,) = torch.autograd.grad(ref, values, g)
    torch.testing.assert_close(grad_fast, grad_ref)


def test_block_size_zero_is_an_error():
    with pytest.raises(UserError, match="block size"):
        S.BlockView((4, 4), 0)


def test_structured_views():
    w = torch.randn(6, 4, 3, 3)
    assert torch.allclose(S.filter_norms(w), torch.stack([w[i].norm() for i in range(6)]))
    assert torch.allclose(S.channel_norms(w), torch.stack([w[:, j].norm() for j in range(4)]))
    keep = torch.tensor([1.0, 0, 1, 0])
    mask = S.expand_structured(keep, w.shape, dim=1)
    assert torch.equal(mask[:, 1], torch.zeros(6, 3, 3)) and torch.equal(mask[:, 2], torch.ones(6, 3, 3))


def test_report_is_exact():
    model = _model()
    params = S.prunable(model, exclude=("last",))
    masks = S.Masks(params)
    masks.set(S.topk_masks(S.magnitudes(params), 0.9, "global", ties="exact"))
    rep = S.report(model, params)
    total = sum(p.numel() for p in params.values())
    assert rep["prunable_params"] == total
    assert rep["nonzero_prunable_params"] == total - round(0.9 * total)
    assert rep["sparsity"] == pytest.approx(round(0.9 * total) / total, abs=0)
    assert rep["params"] == sum(p.numel() for p in model.parameters())
    assert len(rep["layers"]) == len(params)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_outside_unit_interval(bad):
    with pytest.raises(UserError, match=r"outside \[0, 1\)"):
        S.check_sparsity(bad)


def test_a_layer_pattern_that_matches_no_layer_is_refused_naming_the_layers():
    m = _model()
    with pytest.raises(UserError, match=r"^--exclude fc,conv\*: no layer of the model matches; its Conv2d/Linear "
                                        r"layers are: 0, 3, 7, 12; .* \(or first, last\)$"):
        S.prunable(m, ("first", "7", "fc", "conv*"))  # only the patterns that match nothing are named
    with pytest.raises(UserError, match=r"^--ignore fc: .* layers are: 0, 3, 7, 12; [^(]*$"):
        S.check_patterns(m, ("fc",), "ignore")
    assert list(S.prunable(m, ("first", "last", "[37]"))) == []  # a pattern matching some layers is fine


@pytest.mark.parametrize("script,option,extra", [
    ("gmp.prune", "--exclude", ()), ("bip.prune", "--exclude", ()), ("bip.retrain", "--exclude", ()),
    # global IMP/OMP checks its layers once its dense model is trained (here for 1 epoch)
    ("bip.magnitude", "--exclude", ("--pretrain.epochs", "1")),
    ("seqattn.prune", "--exclude", ()), ("seqattn.oneshot", "--exclude", ()), ("posttrain.prune", "--ignore", ()),
])
def test_every_script_refuses_a_layer_pattern_that_matches_nothing(runs, script, option, extra):
    from tests.conftest import one_error_line, run_main

    proc = run_main(script, "--model", "mlp", option, "3,clasifier", *extra, "--progress", "off", "--runs-dir", runs)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert f"{option} clasifier: no layer of the model matches; its Conv2d/Linear layers are: 1, 3, 5;" in line
    assert not list(runs.glob(f"{script}/*/result.json"))
