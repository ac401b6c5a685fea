"""Device handling: every tensor a run makes lives on the run's device; --device auto never falls back to the CPU
silently where a GPU was asked for.

This machine has no GPU, so a second device is emulated: ``OtherDevice`` tensors hold real CPU data but report the
``meta`` device, and under ``other_device()`` every operation that mixes one with a (non-scalar) CPU tensor, or
draws from a CPU generator into one, raises the error CUDA raises ("Expected all tensors to be on the same
device"). ``tensor.to("meta")`` / ``device="meta"`` make such tensors and ``.cpu()`` brings them back, with their
values, so whole runs compute on the emulated device exactly as on the CPU.
"""
from __future__ import annotations

import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from common import config as C
from common import train as T
from common.errors import UserError
from common.metrics import count_params, flops, latency_ms
from common.models import build_model

OTHER = torch.device("meta")
CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------------- the harness
class OtherDevice(torch.Tensor):
    """A CPU tensor ``inner`` that reports the emulated device."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        t = torch.Tensor._make_wrapper_subclass(cls, inner.shape, strides=inner.stride(),
                                                storage_offset=inner.storage_offset(), dtype=inner.dtype,
                                                device=OTHER, requires_grad=inner.requires_grad)
        t.inner = inner
        return t

    def __repr__(self):
        return f"OtherDevice({self.inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on an emulated-device tensor outside other_device()")


def _is_other(device) -> bool:
    return device is not None and torch.device(device).type == OTHER.type


class _Dispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        flat, _ = tree_flatten((args, kwargs))
        wrapped = [a for a in flat if isinstance(a, OtherDevice)]
        cpu = [a for a in flat if type(a) is torch.Tensor and a.device.type == "cpu" and a.dim() > 0]
        if wrapped and cpu:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"{OTHER} and cpu! ({func}: a CPU tensor of shape {tuple(cpu[0].shape)})")
        if "device" in kwargs and kwargs["device"] is not None:
            on_other = _is_other(kwargs["device"])
            if on_other:
                kwargs["device"] = CPU
        else:
            on_other = bool(wrapped)
        gen = kwargs.get("generator")
        if on_other and gen is not None and gen.device.type == "cpu":
            raise RuntimeError(f"Expected a '{OTHER.type}' device type for generator but found 'cpu' ({func})")
        own = {id(w.inner): w for w in wrapped}
        args, kwargs = tree_map(lambda t: t.inner if isinstance(t, OtherDevice) else t, (args, kwargs))
        out = func(*args, **kwargs)

        def wrap(t):
            if isinstance(t, torch.Tensor):
                if id(t) in own:  # an in-place op returns its (wrapped) input
                    return own[id(t)]
                if on_other:
                    return OtherDevice(t)
            return t
        return tree_map(wrap, out)


class _Function(TorchFunctionMode):
    """``torch.tensor(data, device=other)`` builds on the CPU, then moves (the dispatcher never sees the copy)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.tensor, torch.as_tensor) and _is_other(kwargs.get("device")):
            kwargs["device"] = CPU
            return func(*args, **kwargs).to(OTHER)
        return func(*args, **kwargs)


@contextmanager
def other_device():
    with _Function(), _Dispatch():
        yield OTHER


def on_other(model: nn.Module) -> nn.Module:
    return model.to(OTHER)


# ---------------------------------------------------------------------------------------------------- the harness works
def test_harness_catches_mixed_devices_and_keeps_values():
    torch.manual_seed(0)
    model = build_model("cnn", 10, (1, 8, 8))
    x = torch.randn(4, 1, 8, 8)
    expected = model(x)
    with other_device():
        moved = on_other(model)
        assert next(moved.parameters()).device == OTHER
        out = moved(x.to(OTHER))
        assert out.device == OTHER
        assert torch.allclose(out.cpu(), expected)
        with pytest.raises(RuntimeError, match="same device"):
            moved(x)
        with pytest.raises(RuntimeError, match="generator"):
            torch.randperm(5, generator=torch.Generator().manual_seed(0), device=OTHER)
        t = torch.tensor([1.0, 2.0], device=OTHER)
        assert float((t * torch.ones(2, device=OTHER)).sum()) == 3.0


# ---------------------------------------------------------------------------------------------------- metrics, export
@pytest.mark.parametrize("name,shape", [("cnn", (1, 8, 8)), ("resnet20", (3, 32, 32))])
def test_flops_and_counts_of_a_model_on_another_device(name, shape):
    model = build_model(name, 10, shape)
    with torch.no_grad():
        model.get_parameter(next(n for n, p in model.named_parameters() if p.dim() > 1)).zero_()
    expected = flops(model, shape), count_params(model)
    with other_device():
        moved = on_other(model)
        assert (flops(moved, shape), count_params(moved)) == expected
        assert latency_ms(moved, shape, repeats=1, warmup=0) > 0  # measured on a CPU copy


def test_export_report_of_a_model_on_another_device():
    from common.export import report

    model = build_model("cnn", 10, (1, 8, 8)).eval()
    conf = {"script": "gmp.prune", "config": {"exclude": ["last"]}}
    expected = report(Path("x"), conf, {}, model, model, False, (1, 8, 8))
    with other_device():
        moved = on_other(model)
        assert report(Path("x"), conf, {}, moved, moved, False, (1, 8, 8)) == expected



# ---------------------------------------------------------------------------------------------------- whole runs
METHOD_RUNS = {  # tiny runs of every method through its own compute(), end-of-run metrics included
    "bip": ("bip.prune", ["--pretrain.epochs", "2", "--epochs", "1"]),
    "hydra": ("bip.prune", ["--method", "hydra", "--pretrain.epochs", "2", "--epochs", "1", "--finetune-epochs", "1"]),
    "imp": ("bip.magnitude", ["--pretrain.epochs", "2", "--epochs", "1", "--target-sparsity", "0.36",
                              "--rewind-epoch", "1"]),
    "gmp": ("gmp.prune", ["--model", "mlp", "--exclude", "last", "--pretrain.epochs", "2", "--epochs", "3",
                          "--stabilize-epochs", "1", "--prune-epochs", "1"]),
    "sapp": ("seqattn.prune", ["--model", "mlp", "--epochs", "4", "--block", "4", "--sparsity", "0.8"]),
    "acdc": ("seqattn.prune", ["--model", "mlp", "--method", "acdc", "--epochs", "4", "--block", "4",
                               "--sparsity", "0.8"]),
    "oneshot": ("seqattn.oneshot", ["--model", "mlp", "--block", "4", "--sparsities", "0.5"]),
    "posttrain": ("posttrain.prune", ["--model", "mlp", "--pretrain.epochs", "2", "--samples", "64",
                                      "--phase1-epochs", "2", "--phase2-epochs", "1", "--latency-batch", "4"]),
    "l1": ("posttrain.prune", ["--method", "l1", "--model", "mlp", "--pretrain.epochs", "2", "--retrain.epochs", "1",
                               "--latency-batch", "4"]),
}


@pytest.mark.parametrize("method", list(METHOD_RUNS))
def test_a_whole_run_on_another_device(method, monkeypatch, tmp_path):
    """Every tensor a run makes (data, masks, scores, blocks, metrics) lives on its device: the run computes on the
    emulated one to its result, which matches the CPU's."""
    import importlib

    import torch.optim.optimizer as optimizer_module

    from common.store import execute

    name, argv = METHOD_RUNS[method]
    module = importlib.import_module(name)
    argv = [*argv, "--progress", "off", "--device", "cpu"]
    on_cpu = execute(module, C.parse_args(module.Config, [*argv, "--runs-dir", str(tmp_path / "cpu")]))
    for m in {module, importlib.import_module("common.pretrain"), importlib.import_module("bip.rewind")}:
        monkeypatch.setattr(m, "resolve_device", lambda _: OTHER, raising=False)
    fused = optimizer_module._get_fused_kernels_supported_devices()  # fused Adam runs on the emulated device's data
    monkeypatch.setattr(optimizer_module, "_get_fused_kernels_supported_devices", lambda: [*fused, OTHER.type])
    with other_device():
        result = execute(module, C.parse_args(module.Config, [*argv, "--runs-dir", str(tmp_path / "other")]))
    if name == "posttrain.prune":  # Torch-Pruning swaps the pruned tensors through ``.data``, which the emulation
        return                      # does not follow: the run must complete, its numbers are not comparable
    for key in ("test_acc", "sparsity", "flops", "effective_flops", "params", "nonzero_params"):
        if key in on_cpu:
            assert result[key] == pytest.approx(on_cpu[key], rel=1e-6), key


# ---------------------------------------------------------------------------------------------------- --device auto
def _no_cuda(monkeypatch, driver="12.2"):
    for name in T.GPU_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(T, "driver_cuda_version", lambda: driver)


@pytest.mark.parametrize("env", ["SLURM_JOB_GPUS=0", "SLURM_GPUS_ON_NODE=1", "CUDA_VISIBLE_DEVICES=0"])
def test_auto_in_a_job_given_gpus_refuses_the_cpu(monkeypatch, capsys, tmp_path, env):
    from common.cli import main

    _no_cuda(monkeypatch)
    name, value = env.split("=")
    monkeypatch.setenv(name, value)
    code = main("gmp.prune", ["--model", "mlp", "--runs-dir", str(tmp_path), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: --device auto in a job that was given GPUs") and env in err[-1]
    assert f"CUDA {torch.version.cuda}" in err[-1] and "driver supports CUDA 12.2" in err[-1]
    assert "--device cpu" in err[-1]


def test_device_cuda_without_a_driver_names_both_versions(monkeypatch):
    _no_cuda(monkeypatch, driver=None)
    with pytest.raises(UserError, match=rf"--device cuda, but CUDA is unusable: .*CUDA {torch.version.cuda}.*"
                                        r"no NVIDIA driver found"):
        T.resolve_device("cuda")


@pytest.mark.parametrize("env", [{}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"},
                                 {"SLURM_GPUS_ON_NODE": "0"}])
def test_auto_without_a_gpu_request_uses_the_cpu_and_says_so(monkeypatch, capsys, env):
    _no_cuda(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert T.resolve_device("auto") == CPU
    line = capsys.readouterr().err.strip()
    assert line.startswith("device: cpu (no CUDA: ") and f"CUDA {torch.version.cuda}" in line and "12.2" in line


CUDA13 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # a CUDA 13 torch: no sm_70


def _a_gpu(monkeypatch, capability, archs, name="Tesla V100-SXM2-32GB"):
    """torch.cuda as on a machine with one GPU of compute ``capability`` and a torch built for ``archs``."""
    for var in T.GPU_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(T, "_cuda_available", lambda: (True, []))
    for attr, value in [("device_count", 1), ("current_device", 0), ("get_device_capability", capability),
                        ("get_arch_list", archs), ("get_device_name", name)]:
        monkeypatch.setattr(torch.cuda, attr, lambda *a, v=value: v)
    for attr in ("benchmark", "allow_tf32"):  # resolve_device sets them: restored afterwards
        monkeypatch.setattr(torch.backends.cudnn, attr, getattr(torch.backends.cudnn, attr))
    monkeypatch.setattr(torch.backends.cuda, "matmul", types.SimpleNamespace(allow_tf32=False))


def test_a_gpu_the_installed_torch_has_no_kernels_for_is_one_line_and_nothing_runs(monkeypatch, capsys, tmp_path):
    from common.cli import main

    _a_gpu(monkeypatch, (7, 0), CUDA13)
    code = main("gmp.prune", ["--model", "mlp", "--runs-dir", str(tmp_path), "--progress", "off", "--device", "cuda"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"error: cuda:0 is a Tesla V100-SXM2-32GB (sm_70), and torch {torch.__version__} (CUDA "
                      f"{torch.version.cuda}) has no kernels for it (built for {' '.join(CUDA13)}); install a torch "
                      "built with sm_70 kernels (make install TORCH_INDEX=..., see README: Installing for your GPUs), "
                      "or pass --device cpu")
    assert not list(tmp_path.rglob("result.json")) and not list(tmp_path.rglob("*.pt"))
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")  # --device auto in a job given a GPU: the same line
    with pytest.raises(UserError, match=r"^cuda:0 is a Tesla V100-SXM2-32GB \(sm_70\), and torch .* no kernels"):
        T.resolve_device("auto")


@pytest.mark.parametrize("capability, archs, runs", [
    ((8, 9), ["sm_80", "sm_86", "sm_90"], True),   # an L4 runs sm_86 kernels (same major, lower minor)
    ((8, 0), ["sm_86", "sm_90"], False),           # but an A100 cannot run sm_86 ones
    ((12, 0), ["sm_80", "compute_90"], True),      # PTX the driver compiles for a newer GPU
    ((9, 0), ["sm_90a"], True), ((10, 0), ["sm_90a"], False),  # arch-specific kernels: that GPU only
    ((7, 0), CUDA13, False), ((7, 0), ["sm_70", "sm_80"], True), ((7, 0), [], True)])  # []: torch cannot tell
def test_which_gpus_a_torch_build_has_kernels_for(capability, archs, runs, monkeypatch, capsys):
    assert T.runs_on(capability, archs) is runs
    if runs and archs:
        _a_gpu(monkeypatch, capability, archs, name="GPU")
        assert T.resolve_device("cuda") == torch.device("cuda")
        assert capsys.readouterr().err.startswith("device: cuda:0 (GPU, torch ")


def test_every_run_prints_its_device(monkeypatch, capsys, tmp_path):
    from common.cli import main

    _no_cuda(monkeypatch)
    assert main("common.pretrain", ["--model", "mlp", "--train.epochs", "1", "--runs-dir", str(tmp_path),
                                    "--progress", "off", "--device", "cpu"]) == 0
    assert any(line.startswith("device: cpu (") for line in capsys.readouterr().err.splitlines())
