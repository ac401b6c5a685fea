"""The GPU check (``python -m figures.gpu_check``) at tiny sizes on the CPU: every section runs and lands in the JSON
with plausible values; a failing section is recorded with its error while the others still run; the environment's
failure ends the check; bad options are one error line."""
from __future__ import annotations

import json

import pytest
import torch

from figures import gpu_check
from tests.conftest import run_cli

SCRIPT_NAMES = {"pretrain", "bip", "imp", "gmp", "sapp", "acdc", "oneshot", "posttrain"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick check on the CPU, as a user starts it: (the finished process, its JSON)."""
    out = tmp_path_factory.mktemp("gpu-check") / "gpu-check.json"
    proc = run_cli("figures.gpu_check", "--device", "cpu", "--quick", "--out", out, env={"OMP_NUM_THREADS": "1"},
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_every_section_runs_and_every_check_holds(quick):
    proc, result = quick
    sections = result["sections"]
    assert set(sections) == set(gpu_check.SECTIONS)
    for name, section in sections.items():
        assert section["status"] == "ok", (name, section.get("error"))
        assert section["seconds"] > 0 and "error" not in section, name
    assert result["ok"] and result["failed_checks"] == [] and result["quick"]
    assert result["total_seconds"] > 0
    assert "gpu-check: [11/11] sparse_inference: ok" in proc.stderr


def test_the_environment_names_versions_cpus_and_device(quick):
    env = quick[1]["sections"]["environment"]
    assert env["torch"] == torch.__version__ and env["python"].count(".") == 2
    assert env["cpus"]["count"] >= 1 and env["cpus"]["affinity"] and env["cpus"]["workers_auto"] >= 1
    assert env["device"].startswith("cpu") and env["gpu"] is None


def test_every_script_runs_through_the_store_and_is_exported(quick):
    scripts = quick[1]["sections"]["scripts"]
    assert set(scripts["runs"]) == SCRIPT_NAMES and all(scripts["checks"].values())
    for name, run in scripts["runs"].items():
        assert run["result_json"] and 0.0 <= run["test_acc"] <= 1.0, name
        if name == "oneshot":  # one model per sparsity point, none kept
            assert run["export"] is None
            continue
        assert run["export"]["file"] == "model.pt2", name
        assert 0 < run["export"]["effective_flops"] <= run["export"]["flops"], name
    assert scripts["runs"]["pretrain"]["test_acc"] >= 0.5  # digits: chance is 0.1
    assert scripts["runs"]["bip"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert scripts["dense_runs"] == 1  # the pruning runs start from the pretrain row's model


def test_a_run_resumed_within_an_epoch_equals_the_uninterrupted_one(quick):
    resume = quick[1]["sections"]["resume"]
    for name in ("deterministic", "default"):
        assert resume[name]["killed_mid_run"], name
        assert [(r["from_epoch"], r["from_step"]) for r in resume[name]["resumed_from"]] == [(1, 4)], name
    assert resume["deterministic"]["identical"] and resume["deterministic"]["max_abs_weight_difference"] == 0.0
    assert resume["default"]["max_abs_weight_difference"] == 0.0  # a CPU computes the same bits without asking


def test_the_loader_step_times_threshold_and_ddp_give_plausible_values(quick):
    sections = quick[1]["sections"]
    jpeg = sections["jpeg_loader"]
    for name, shape in (("tinyimagenet", [3, 64, 64]), ("imagenet", [3, 224, 224])):
        assert jpeg[name]["input"] == shape and jpeg[name]["images"] == 4 * jpeg[name]["batch_size"], name
        assert jpeg[name]["images_per_s"] > 0 and jpeg[name]["table_a100_images_per_s"] > 0, name
    steps = sections["step_times"]
    rows = [k for k in steps if k.startswith(("imagenet_resnet50_", "cifar10_"))]
    assert sorted(rows) == ["cifar10_resnet18_dense_128", "imagenet_resnet50_bip_256", "imagenet_resnet50_dense_256",
                            "imagenet_resnet50_eval_512", "imagenet_resnet50_sapp_256"]
    for row in rows:
        assert steps[row]["step_ms"] > 0 and steps[row]["epoch_hours"] > 0, row
        assert steps[row]["table_a100_epoch_hours"] > 0, row
    assert steps["imagenet_resnet50_bip_256"]["table_a100_epoch_hours"] == pytest.approx(
        2 * steps["imagenet_resnet50_dense_256"]["table_a100_epoch_hours"])  # BiP's step costs two dense steps
    threshold = sections["bip_threshold"]["100000"]
    assert threshold["kept"] == threshold["expected_kept"] == 10_000 and threshold["threshold_equals_kthvalue"]
    ddp = sections["ddp"]
    assert ddp["ranks"] == 2 and ddp["max_abs_difference_between_ranks"] == 0.0
    assert ddp["max_abs_difference_to_one_process"] < 1e-5  # fp32 on a CPU: the same steps up to rounding


def test_the_kept_measurements_are_there(quick):
    sections = quick[1]["sections"]
    methods = sections["method_steps"]
    assert {"dense", "bip", "masked_imp_omp", "gmp", "sapp", "acdc"} <= set(methods["methods"])
    assert {"bip_over_dense", "sapp_over_dense", "masked_over_dense"} <= set(methods["ratios"])
    assert sections["bf16_agreement"]["checks"]["within_tolerance"]
    assert sections["repeatability"]["deterministic"]["max_abs_weight_difference"] == 0.0
    sparse = sections["sparse_inference"]
    assert sparse["mlp_csr_90"]["equal"] and sparse["criteo-first-layer_bsr8_95"]["equal"]
    assert "CUDA only" in sparse["semi_structured_2_4"]["skipped"]


# ---------------------------------------------------------------------------------------------------- failures
def _broken(ctx, out):
    out["measured_before_failing"] = 1
    raise RuntimeError("no kernel image is available")


def test_a_failing_section_is_recorded_with_its_error_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "gpu-check.json"
    monkeypatch.setitem(gpu_check.SECTIONS, "bip_threshold", _broken)
    code = gpu_check.main(["--device", "cpu", "--quick", "--only", "bip_threshold,bf16_agreement", "--out", str(out)])
    assert code == 0
    sections = json.loads(out.read_text())["sections"]
    failed = sections["bip_threshold"]
    assert failed["status"] == "failed" and failed["measured_before_failing"] == 1
    assert failed["error"]["type"] == "RuntimeError" and failed["error"]["message"] == "no kernel image is available"
    assert failed["error"]["traceback"][-1] == "RuntimeError: no kernel image is available"
    assert 1 < len(failed["error"]["traceback"]) <= gpu_check.TRACEBACK_LINES
    assert sections["environment"]["status"] == "ok" and sections["bf16_agreement"]["status"] == "ok"  # ran after it
    assert sections["scripts"] == {"status": "skipped", "why": "not asked for (--only)"}
    assert "bip_threshold: failed" in capsys.readouterr().err


def test_the_json_is_written_as_each_section_ends(tmp_path, monkeypatch):
    out = tmp_path / "gpu-check.json"
    seen = {}

    def reading(ctx, result):
        seen.update(json.loads(out.read_text())["sections"])

    monkeypatch.setitem(gpu_check.SECTIONS, "bf16_agreement", reading)  # runs after bip_threshold (SECTIONS' order)
    assert gpu_check.main(["--device", "cpu", "--quick", "--only", "bf16_agreement,bip_threshold", "--out",
                           str(out)]) == 0
    assert seen["environment"]["status"] == seen["bip_threshold"]["status"] == "ok"
    assert seen["bf16_agreement"]["status"] == "pending" and seen["resume"]["status"] == "skipped"


@pytest.mark.parametrize("error, code", [(RuntimeError("driver crashed"), 1), (None, 2)])
def test_a_failing_environment_ends_the_check_with_one_error_line(tmp_path, monkeypatch, capsys, error, code):
    from common import train

    out = tmp_path / "gpu-check.json"
    if error is None:  # a user error: CUDA asked for where none is usable
        monkeypatch.setattr(train, "_cuda_available", lambda: (False, []))
    else:
        def environment(ctx, result):
            raise error
        monkeypatch.setitem(gpu_check.SECTIONS, "environment", environment)
    assert gpu_check.main(["--device", "cuda", "--quick", "--only", "bf16_agreement", "--out", str(out)]) == code
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    assert ("CUDA is unusable" if error is None else "the environment section failed: RuntimeError: driver crashed") \
        in lines[0]
    sections = json.loads(out.read_text())["sections"]
    assert sections["environment"]["status"] == "failed"
    assert sections["bf16_agreement"] == {"status": "skipped", "why": "the environment section failed"}


@pytest.mark.parametrize("args, message", [
    (["--only", "resume,nosuch"], "error: --only nosuch: no such section; choose among environment, scripts, "),
    (["--device", "gpu"], "error: --device gpu is not a device this code runs on; use auto, cpu, cuda or cuda:N"),
])
def test_a_bad_option_is_one_error_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "gpu-check.json"
    assert gpu_check.main(["--quick", *args, "--out", str(out)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert not out.exists()
