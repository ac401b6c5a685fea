"""common.distributed and the data-parallel path of common.train.

With torch's group and CUDA calls stubbed (no second process): the GPU a rank takes, the collectives' timeout, and the
barrier after a dataset is read. With 2 real CPU ranks (a gloo group, started once for the module): evaluation
sharded over the ranks equals one process, ``--sync-bn`` makes BatchNorm's statistics the global batch's, gradient
accumulation across ranks equals one process's step, and seqattn.oneshot keeps one DDP wrapper whatever the number of
sparsities. Gradient accumulation in one process and its bad inputs.
"""
import datetime
import gc
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from common import config as C
from common import data as D
from common import distributed
from common import train as T
from common.errors import UserError
from common.store import Run
from tests.conftest import one_error_line, run_main


@pytest.fixture
def fake_group(monkeypatch):
    """A world of 2 ranks on a node whose task sees 1 GPU: what init_from_env asks of torch is recorded."""
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    monkeypatch.delenv("PRUNING_DDP_BACKEND", raising=False)
    monkeypatch.setattr(distributed, "active", lambda: False)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda i: calls.setdefault("device", i))
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, timeout: calls.update(backend=backend, timeout=timeout))
    return calls


def test_a_rank_takes_its_local_rank_modulo_the_gpus_it_sees_and_a_30_minute_timeout(fake_group):
    assert distributed.init_from_env()
    assert fake_group == {"device": 0, "backend": "nccl", "timeout": datetime.timedelta(minutes=30)}


def test_the_timeout_is_a_setting(fake_group, monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    distributed.init_from_env()
    assert fake_group["timeout"] == datetime.timedelta(minutes=90)


@pytest.mark.parametrize("bad", ["0", "-5", "soon", "inf"])
def test_a_bad_timeout_is_one_line_before_any_group_is_joined(fake_group, monkeypatch, bad):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
    with pytest.raises(UserError, match=f"PRUNING_DDP_TIMEOUT_MINUTES='{bad}' is not a positive number of minutes"):
        distributed.init_from_env()
    assert fake_group == {}


def test_every_rank_waits_for_the_others_once_its_data_is_read(monkeypatch):
    waits = []
    monkeypatch.setattr(D, "barrier", lambda: waits.append("barrier"))
    D.load_dataset("digits")
    assert waits == ["barrier"]


# ---------------------------------------------------------------------------------------------------- 2 real ranks
# Every case below builds the same model and data in each rank and in this process (fixed seeds), so that what the 2
# ranks compute can be compared with one process.
def _features(n: int) -> torch.Tensor:
    """``n`` samples of 8 features whose first one is the sample's position / n (it identifies the sample)."""
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(n))
    x[:, 0] = torch.arange(n) / n
    return x


def _bce(out, y, reduction="mean"):
    return nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), y, reduction=reduction)


def _eval_case(n: int, outputs: int):
    """(model, test split, loss) of ``n`` samples in batches of 64; ``outputs`` 1: a one-logit model (AUC)."""
    x = _features(n)
    torch.manual_seed(1)
    model = nn.Linear(8, outputs)
    y = (torch.rand(n) < 0.4).float() if outputs == 1 else torch.randint(0, outputs, (n,))
    split = D.TensorSplit(x, y, batch_size=64, train=False)
    return model, split, _bce if outputs == 1 else nn.functional.cross_entropy


# 301 samples: a last batch of 45 (sharded 23 / 22); 257: a last batch of 1, which cannot be sharded over 2 ranks
EVAL_CASES = {"classifier": (301, 3), "one-logit": (301, 1), "last batch of 1": (257, 3)}


def _evaluated(n: int, outputs: int) -> dict:
    """evaluate's metrics, and the samples this process evaluated (their positions)."""
    model, split, loss_fn = _eval_case(n, outputs)
    seen = []
    model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0][:, 0] * n))
    metrics = T.evaluate(model, split, loss_fn)
    return {**metrics, "samples": torch.cat(seen).round().long()}


def _bn_case():
    """(model with BatchNorm2d and BatchNorm1d, training split of 200 images in batches of 64, optimizer)."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(200, 3, 8, 8, generator=g), torch.randint(0, 4, (200,), generator=g)
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    split = D.TensorSplit(x, y, batch_size=64, train=True, seed=0)
    return model, split, T.make_optimizer(model.parameters(), T.Optim(batch_size=64), 0.1)


def _mlp_case(accumulate: int):
    """(model without BatchNorm, training split of 301 samples in batches of 64, optimizer stepping every
    ``accumulate`` micro-batches)."""
    x = _features(301)
    y = torch.randint(0, 3, (301,), generator=torch.Generator().manual_seed(4))
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    split = D.TensorSplit(x, y, batch_size=64, train=True, seed=0)
    return model, split, T.make_optimizer(model.parameters(), T.Optim(batch_size=64, accumulate=accumulate), 0.1)


def _trained(model, split, optimizer, epochs: int = 2) -> dict:
    """The model's state after ``epochs`` of ``train_epoch``, the optimizer steps ``after_step`` saw, and the
    model's module types."""
    steps = []
    for epoch in range(epochs):
        T.train_epoch(model, split, epoch, optimizer, lr_of_step=lambda s: 0.1, first_step=epoch * len(split),
                      after_step=steps.append)
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "steps": steps,
            "types": sorted({type(m).__name__ for m in model.modules()})}


def _ddp_wrappers() -> int:
    gc.collect()
    return sum(isinstance(o, nn.parallel.DistributedDataParallel) for o in gc.get_objects())


def _oneshot(runs_dir: str) -> dict:
    """seqattn.oneshot with 2 sparsities (each fine-tuned with DDP): the live DDP wrappers after it, and its points."""
    from common.store import execute
    from seqattn import oneshot

    cfg = C.build(oneshot.Config, block=4, sparsities=(0.5, 0.9), runs_dir=runs_dir, progress="off",
                  **{"pretrain.epochs": 1, "finetune.epochs": 1})
    result = execute(oneshot, cfg)
    return {"wrappers": _ddp_wrappers(), "points": len(result["points"])}


def _rank_main(rank: int, folder: str) -> None:
    """One of the 2 ranks: every case, its results saved to ``folder``/rank<r>.pt."""
    os.environ["PRUNING_DDP_BACKEND"] = "gloo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))
    try:
        out = {"evaluate": {name: _evaluated(*case) for name, case in EVAL_CASES.items()}}
        for sync in (False, True):
            distributed.set_sync_batchnorm(sync)
            out[f"sync_bn={sync}"] = _trained(*_bn_case(), epochs=1)
        distributed.set_sync_batchnorm(False)
        out["accumulate=2"] = _trained(*_mlp_case(2))
        out["oneshot"] = _oneshot(f"{folder}/runs")
        torch.save(out, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """What each of 2 CPU ranks (a gloo group) computed, in rank order."""
    folder = tmp_path_factory.mktemp("ranks")
    torch.multiprocessing.spawn(_rank_main, args=(str(folder),), nprocs=2)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("case", EVAL_CASES)
def test_sharded_evaluation_equals_one_process_on_every_rank(two_ranks, case, one_thread):
    one = _evaluated(*EVAL_CASES[case])
    n = EVAL_CASES[case][0]
    shards = [ranks["evaluate"][case] for ranks in two_ranks]
    for metrics in shards:  # counts exactly, the loss within float rounding, the AUC of all the scores
        assert metrics.keys() == one.keys()
        assert metrics.get("acc") == one.get("acc")
        assert metrics.get("auc", 0) == pytest.approx(one.get("auc", 0), rel=1e-12)
        assert metrics["loss"] == pytest.approx(one["loss"], rel=1e-6)
    if case == "last batch of 1":  # cannot be sharded: every rank evaluates all of it
        assert all(torch.equal(m["samples"], torch.arange(n)) for m in shards)
    else:  # each sample once, on one rank, and no rank evaluates all
        both = torch.cat([m["samples"] for m in shards])
        assert torch.equal(both.sort().values, torch.arange(n)) and all(len(m["samples"]) < n for m in shards)


def _bn_gap(a: dict, b: dict, names=("running_mean", "running_var")) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if k.endswith(names))


def test_sync_bn_gives_the_running_statistics_and_weights_of_one_process(two_ranks, one_thread):
    """One epoch of 4 steps (the last of 8 samples) on a model with BatchNorm2d and BatchNorm1d: with --sync-bn both
    ranks' running statistics and weights are those of one process on the whole batches within 1e-5; without it,
    each rank normalizes with its shard's statistics and the running statistics are off by more than 1e-3."""
    one = _trained(*_bn_case(), epochs=1)["state"]
    for ranks in two_ranks:
        synced = ranks["sync_bn=True"]
        assert "SumSyncBatchNorm" in synced["types"] and "BatchNorm2d" not in synced["types"]
        assert _bn_gap(synced["state"], one) < 1e-5
        assert all(torch.allclose(synced["state"][k].float(), one[k].float(), atol=1e-5) for k in one)
        assert synced["state"]["1.num_batches_tracked"] == one["1.num_batches_tracked"] == 4
        assert _bn_gap(ranks["sync_bn=False"]["state"], one) > 1e-3
        assert "BatchNorm2d" in ranks["sync_bn=False"]["types"]


def test_sync_bn_leaves_one_process_unchanged(one_thread):
    distributed.set_sync_batchnorm(True)
    try:
        model, split, optimizer = _bn_case()
        assert distributed.wrap(model) is model
        assert not any(isinstance(m, distributed.SumSyncBatchNorm) for m in model.modules())
    finally:
        distributed.set_sync_batchnorm(False)


def test_the_sync_bn_option_is_execution_only():
    from common import pretrain

    cfg = C.parse_args(pretrain.Config, ["--sync-bn"])
    assert cfg.sync_bn and Run(pretrain.SCRIPT, cfg).hash == Run(pretrain.SCRIPT, pretrain.Config()).hash
    T.apply_runtime(cfg)
    try:
        assert distributed._sync_bn == [True]
    finally:
        T.apply_runtime(pretrain.Config())
    assert distributed._sync_bn == []


def test_accumulation_over_two_ranks_equals_one_process_steps(two_ranks, one_thread):
    """2 ranks, 2 micro-batches per step (the first without DDP's reduction) against one process, one batch per step:
    the same weights within float rounding, and the same optimizer steps."""
    one = _trained(*_mlp_case(1))
    for ranks in two_ranks:
        got = ranks["accumulate=2"]
        assert got["steps"] == one["steps"] == list(range(10))
        assert all(torch.allclose(got["state"][k], one["state"][k], atol=1e-6) for k in one["state"])


def test_oneshot_keeps_one_ddp_wrapper_whatever_the_number_of_sparsities(two_ranks):
    """The dense model and the 2 pruned models are each trained with DDP: only the last one's wrapper is alive."""
    assert [ranks["oneshot"] for ranks in two_ranks] == [{"wrappers": 1, "points": 2}] * 2


# ---------------------------------------------------------------------------------------------------- accumulation
def test_accumulation_gives_the_weights_of_one_batch_per_step(one_thread):
    """Two epochs of 5 steps (the last of 45 samples: micro-batches of 23 and 22): k = 2 and k = 4 against k = 1,
    within float rounding, with after_step called once per optimizer step."""
    one = _trained(*_mlp_case(1))
    for k in (2, 4):
        got = _trained(*_mlp_case(k))
        assert got["steps"] == one["steps"] == list(range(10))
        assert all(torch.allclose(got["state"][key], one["state"][key], atol=1e-6) for key in one["state"])


def test_accumulation_runs_micro_batches():
    """k = 4 at batch 64: 4 forwards of 16 per step; the last batch, of 45 samples: 12, 11, 11, 11."""
    model, split, optimizer = _mlp_case(4)
    sizes = []
    model.register_forward_pre_hook(lambda module, inputs: sizes.append(len(inputs[0])))
    T.train_epoch(model, split, 0, optimizer, lr_of_step=lambda s: 0.1, first_step=0)
    assert sizes == [16] * 16 + [12, 11, 11, 11]


def test_accumulate_one_keeps_every_stored_hash():
    from common import pretrain

    default = Run(pretrain.SCRIPT, pretrain.Config())
    assert Run(pretrain.SCRIPT, C.parse_args(pretrain.Config, ["--train.accumulate", "1"])).hash == default.hash
    assert Run(pretrain.SCRIPT, C.parse_args(pretrain.Config, ["--train.accumulate", "2"])).hash != default.hash


@pytest.mark.parametrize("script,args,message", [
    ("common.pretrain", ["--train.accumulate", "0"], "error: --train.accumulate 0 must be > 0"),
    ("gmp.prune", ["--optim.accumulate", "0"], "error: --optim.accumulate 0 must be > 0"),
    ("common.pretrain", ["--train.batch-size", "100", "--train.accumulate", "3"],
     "error: batch size 100 is not divisible by accumulate 3"),
])
def test_a_bad_accumulation_is_one_line_and_nothing_is_stored(tmp_path, script, args, message):
    proc = run_main(script, *args, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2 and one_error_line(proc).startswith(message), proc.stderr
    assert not (tmp_path / "runs").exists()
