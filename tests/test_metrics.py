"""Metrics: parameter counts, FLOPs against analytic oracles, latency."""

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import prune

from common.metrics import count_params, flops, latency_ms, paired_latency_ms
from common.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")


def zero_half(weight):
    """Zero the first half of a weight tensor's entries in place."""
    with torch.no_grad():
        weight.view(-1)[: weight.numel() // 2] = 0


def test_count_params_counts_zeros():
    layer = nn.Linear(10, 6)  # 60 weights + 6 biases
    zero_half(layer.weight)
    assert count_params(layer) == {"params": 66, "nonzero_params": 36}


def test_count_params_sees_torch_prune_masks():
    layer = nn.Linear(10, 6)
    prune.l1_unstructured(layer, "weight", amount=30)
    assert count_params(layer) == {"params": 66, "nonzero_params": 36}


@pytest.mark.parametrize(
    "conv, input_shape",
    [
        (nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16)),
        (nn.Conv2d(4, 6, 5, stride=2, bias=False), (4, 15, 15)),
        (nn.Conv2d(4, 8, 3, padding=1, groups=2), (4, 8, 8)),
    ],
)
def test_conv_flops_are_twice_the_macs(conv, input_shape):
    out_h, out_w = conv(torch.zeros(1, *input_shape)).shape[-2:]
    k_h, k_w = conv.kernel_size
    macs = conv.out_channels * out_h * out_w * (conv.in_channels // conv.groups) * k_h * k_w
    assert flops(conv, input_shape) == {"flops": 2 * macs, "effective_flops": 2 * macs}


def test_linear_flops_and_half_zeroed_weight():
    layer = nn.Linear(20, 7)
    assert flops(layer, (20,))["flops"] == 2 * 20 * 7
    zero_half(layer.weight)
    assert flops(layer, (20,)) == {"flops": 280, "effective_flops": 140}


def test_effective_flops_scale_only_the_sparse_layer():
    conv, fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 6 * 6, 5)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), fc)
    conv_flops, fc_flops = 2 * 4 * 36 * 9, 2 * 144 * 5
    zero_half(conv.weight)  # 36 weights -> 18 zeros
    assert flops(model, (1, 6, 6)) == {"flops": conv_flops + fc_flops, "effective_flops": conv_flops // 2 + fc_flops}


def test_effective_flops_are_attributed_inside_nested_models():
    model = build_model("resnet20", 10, (3, 32, 32))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            zero_half(m.weight)
    result = flops(model, (3, 32, 32))
    assert result["flops"] == 81_102_080  # 40.55M MACs, the usual ResNet-20 figure
    assert result["effective_flops"] == pytest.approx(result["flops"] / 2, abs=2)


def test_flops_shrink_after_removing_channels():
    torch.manual_seed(0)
    big = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1))
    keep = torch.arange(8)  # remove output channels 8..15 of the first conv
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    with torch.no_grad():
        big[0].weight[8:] = 0
        big[0].bias[8:] = 0
        small[0].weight.copy_(big[0].weight[keep])
        small[0].bias.copy_(big[0].bias[keep])
        small[2].weight.copy_(big[2].weight[:, keep])
        small[2].bias.copy_(big[2].bias)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(small(x), big(x))  # same function, fewer channels

    f_big, f_small = flops(big, (3, 8, 8)), flops(small, (3, 8, 8))
    assert f_small["flops"] == f_big["flops"] // 2
    assert f_small["flops"] < f_big["effective_flops"] < f_big["flops"]  # zeros count less, removal even less


def test_flops_keep_train_eval_mode_and_bn_statistics():
    model = build_model("cnn", 10, (1, 8, 8)).train()
    model[1].eval()  # a mixed state must survive too
    stats = model[1].running_mean.clone()
    flops(model, (1, 8, 8))
    assert model.training and not model[1].training and model[4].training
    assert torch.equal(model[1].running_mean, stats)


def test_latency_is_positive_and_restores_state():
    model = build_model("cnn", 10, (1, 8, 8)).train()
    threads = torch.get_num_threads()
    ms = latency_ms(model, (1, 8, 8), batch_size=4, repeats=5, warmup=1, threads=2)
    assert isinstance(ms, float) and ms > 0
    assert model.training and torch.get_num_threads() == threads


def test_paired_latency_measures_each_model_alternately_and_ranks_a_bigger_model_slower():
    small, big = build_model("mlp", 10, (1, 8, 8)), build_model("cnn", 10, (1, 8, 8))
    threads = torch.get_num_threads()
    ms = paired_latency_ms({"small": small, "big": big}, (1, 8, 8), batch_size=64, rounds=3, repeats=5, warmup=1)
    assert list(ms) == ["small", "big"] and all(isinstance(v, float) and v > 0 for v in ms.values())
    assert ms["big"] > ms["small"]  # the CNN costs ~100x the MLP's FLOPs
    assert torch.get_num_threads() == threads
