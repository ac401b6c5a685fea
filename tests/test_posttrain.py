"""Post-training structured pruning: grouping, importance, the two phases, the command line and its errors."""
import copy
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from common.models import build_model
from common.store import collect
from posttrain import groups as G
from posttrain import reconstruct as R
from tests.conftest import ROOT, one_error_line, run_main

X = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
FAST = ["--model", "mlp", "--pretrain.epochs", "3", "--samples", "64", "--phase1-epochs", "3", "--phase2-epochs", "2",
        "--progress", "off"]
# the baselines' own flags (a flag a method does not use is refused)
BASELINE_FAST = {"none": ["--samples", "64"], "layerwise": ["--samples", "64", "--phase2-epochs", "2"],
                 "holistic": ["--samples", "64", "--phase2-epochs", "2"], "l1": ["--retrain.epochs", "2"]}


def trained_like(name: str) -> nn.Module:
    """A model with non-trivial BN statistics and affine parameters (as after training)."""
    torch.manual_seed(0)
    model = build_model(name, 10, (1, 8, 8))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_residual_channels_are_one_group_and_removal_gives_a_smaller_dense_model(one_thread):
    model = trained_like("resnet8")
    plan = G.plan(model, X[:1], 0.5)
    kept = plan.kept
    # the add of the stage-2 block joins its conv2/bn2 branch with its projection shortcut: same channels kept
    assert torch.equal(kept["layers.1.0.bn2"], kept["layers.1.0.shortcut.1"])
    assert torch.equal(kept["layers.1.0.conv2"], kept["layers.1.0.shortcut.0"])
    assert "fc" not in kept  # the classifier's outputs are never pruned
    total = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    before = sum(p.numel() for p in model.parameters())
    plan.remove()
    removed = total - sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    assert removed / total == pytest.approx(0.5, abs=0.05)  # one global channel ratio
    assert model.layers[1][0].bn2.num_features == len(kept["layers.1.0.bn2"])
    assert sum(p.numel() for p in model.parameters()) < 0.5 * before
    assert model(X).shape == (64, 10)


def test_group_importance_is_mean_squared_l2_over_the_group_mean_normalized():
    model = trained_like("cnn")
    conv0, bn0, conv1 = model[0], model[1], model[3]
    per_layer = [conv0.weight.flatten(1).pow(2).sum(1), bn0.weight.pow(2),
                 conv1.weight.transpose(0, 1).flatten(1).pow(2).sum(1)]
    expected = torch.stack(per_layer).mean(0)
    expected = expected / expected.mean()
    import torch_pruning as tp

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=X[:1])
    group = dg.get_pruning_group(conv0, tp.prune_conv_out_channels, list(range(32)))
    assert torch.allclose(G.importance("group-l2")(group), expected, rtol=1e-5)


def test_phase1_penalty_shrinks_the_channels_to_remove_and_teacher_stays_in_eval(one_thread):
    teacher = trained_like("cnn").requires_grad_(False)
    stats = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = copy.deepcopy(teacher).requires_grad_(True)
    plan = G.plan(student, X[:1], 0.5)
    with torch.no_grad():
        norm0 = float(sum((p * m).pow(2).sum() for p, m in plan.slices())) ** 0.5
    targets = R.TeacherOutputs(teacher, X, plan.kept)
    log = R.reconstruct(student, targets, X, epochs=8, lr=3e-3, batch_size=16, seed=0, kept=plan.kept,
                        penalty=plan.slices(), lambda0=0.05, growth=0.05)
    assert log[-1]["pruned_norm"] < 0.01 * norm0  # rows, columns, gammas to remove: ~0 before removal
    assert [r["penalty_coef"] for r in log][:3] == pytest.approx([0.05, 0.10, 0.15])
    # a removed channel now outputs only its constant ReLU(beta): removal changes the kept outputs by exactly that,
    # far less than removal straight from the dense model
    without_beta = copy.deepcopy(student)
    with torch.no_grad():
        for name, bn in without_beta.named_modules():
            if isinstance(bn, nn.BatchNorm2d):
                removed = torch.ones(bn.num_features, dtype=torch.bool)
                removed[plan.kept[name]] = False
                bn.bias[removed] = 0.0
    before = R.calibration_loss(without_beta, targets, X, plan.kept, unpruned=True)
    plan.remove()
    after = R.calibration_loss(student, targets, X, plan.kept)
    assert after == pytest.approx(before, rel=0.05, abs=1e-3)
    direct = copy.deepcopy(teacher)
    direct_plan = G.plan(direct, X[:1], 0.5)
    direct_plan.remove()
    assert after < 0.5 * R.calibration_loss(direct, targets, X, direct_plan.kept)
    for k, v in teacher.state_dict().items():  # eval-mode teacher: BN running statistics untouched
        assert torch.equal(v, stats[k]), k


def test_phase1_penalty_of_groups_without_bn_takes_the_rows_and_the_consumers_columns():
    """Without BN (the MLP): the producers' weight rows and the consumers' weight columns, never a bias."""
    mlp = build_model("mlp", 10, (1, 8, 8))
    plan = G.plan(mlp, X[:1], 0.5)
    names = {id(p): n for n, p in mlp.named_parameters()}
    slices = {names[id(p)]: m.bool() for p, m in plan.slices()}
    assert sorted(slices) == ["1.weight", "3.weight", "5.weight"]
    gone1 = ~torch.isin(torch.arange(300), plan.kept["1"])
    gone3 = ~torch.isin(torch.arange(100), plan.kept["3"])
    assert torch.equal(slices["1.weight"], gone1[:, None].expand(300, 64))
    assert torch.equal(slices["3.weight"], gone3[:, None] | gone1[None, :])
    assert torch.equal(slices["5.weight"], gone3[None, :].expand(10, 100))


def test_an_epochs_batches_of_cached_targets_equal_those_gathered_per_batch(one_thread):
    teacher = trained_like("cnn").requires_grad_(False)
    plan = G.plan(copy.deepcopy(teacher), X[:1], 0.5)
    cached = R.TeacherOutputs(teacher, X, plan.kept)
    uncached = R.TeacherOutputs(teacher, X, plan.kept, budget_bytes=0)  # recomputed for every batch
    order = R.sample_order(len(X), epoch=3, seed=1)
    sizes = []
    for (i1, t1, n1), (i2, t2, n2) in zip(cached.epoch(order, 24), uncached.epoch(order, 24), strict=True):
        assert torch.equal(i1, i2)
        sizes.append(len(i1))
        for name in t1:
            assert torch.allclose(t1[name], t2[name], atol=1e-6), name
            assert torch.allclose(n1[name], n2[name], rtol=1e-5), name
    assert sum(sizes) == len(X) and sorted(torch.cat([i for i, *_ in cached.epoch(order, 24)]).tolist()) == \
        list(range(len(X)))


def test_balanced_learning_rates_go_from_lr_over_n_to_lr_in_forward_order():
    model = trained_like("resnet8")
    groups = R.balanced_groups(model, X[:1], 1.0, balanced=True)
    names = [g["name"] for g in groups]
    n = len(names)
    assert names[0] == "conv1" and names[-1] == "fc"
    assert [g["lr"] for g in groups] == pytest.approx([1.0 / (n - k) for k in range(n)])
    assert R.balanced_groups(model, X[:1], 1.0, balanced=False)[0]["lr"] == 1.0


def test_layerwise_reconstruction_cuts_every_layer_off_from_later_errors():
    model = trained_like("cnn")
    with R.recording(model, detach_inputs=True) as out:
        model(X[:4])
    out["8"].pow(2).sum().backward()  # the last BN's output error ...
    assert model[8].weight.grad is not None  # ... reaches the BN's own parameters only
    assert all(model[i].weight.grad is None for i in (0, 1, 3, 4, 7))


def test_methods_end_to_end(runs, one_thread):
    proc = run_main("posttrain.prune", *FAST, "--ratio", "0.5", "--runs-dir", runs)  # ours, from its command line
    assert proc.returncode == 0, proc.stderr
    from common import config as C
    from common.store import execute
    from posttrain import prune

    for method in ("none", "layerwise", "holistic", "l1"):  # the baselines, in this process (same code path)
        execute(prune, C.parse_args(prune.Config, [*FAST[:4], *BASELINE_FAST[method], "--progress", "off",
                                                   "--method", method, "--runs-dir", str(runs)]))
    df = collect(runs, "posttrain.prune").set_index("config.method")
    assert (df["RP"] > 1.5).all() and (df["RF"] > 1.5).all() and (df["speedup"] > 0).all()
    assert df.loc["ours", "test_acc"] > df.loc["none", "test_acc"]
    assert df.loc["ours", "method_time"] > 0 and df.loc["l1", "retrain_time"] > 0
    log = [json.loads(x) for x in open(f"{df.loc['ours', 'run_dir']}/log.jsonl")]
    assert [r["phase"] for r in log] == ["phase1"] * 3 + ["phase2"] * 2
    assert len(list((runs / "common.pretrain").iterdir())) == 1  # every method reused one dense model
    model = build_model("mlp", 10, (1, 8, 8))
    from common.export import load_structured

    path = f"{df.loc['ours', 'run_dir']}/model.pt"
    pruned = load_structured(model, torch.load(path, weights_only=True), path)  # data: layer sizes and tensors
    assert pruned(X).shape == (64, 10) and sum(p.numel() for p in pruned.parameters()) == df.loc["ours", "params"]


def test_bad_ratio_is_one_line(runs):
    proc = run_main("posttrain.prune", *FAST, "--ratio", "1.0", "--runs-dir", runs)
    assert proc.returncode == 2 and "--ratio 1.0 is outside [0, 1)" in one_error_line(proc)
    assert not runs.exists()


def test_more_samples_than_the_training_set_is_one_line(runs):
    proc = run_main("posttrain.prune", *FAST, "--samples", "5000", "--runs-dir", runs)
    line = one_error_line(proc)
    assert proc.returncode == 2 and "cannot draw 5000 samples" in line and "1437" in line
    assert not list(runs.glob("*/*/result.json"))


def test_untraceable_model_names_the_layer(runs):
    proc = run_main("posttrain.prune", *FAST, "--model", "resnet20", "--runs-dir", runs)
    line = one_error_line(proc)
    assert proc.returncode == 2 and "Torch-Pruning cannot trace" in line and "layers.1.0.shortcut" in line
    assert not list(runs.glob("*/*/result.json"))  # nothing trained, nothing done


def test_checkpoint_of_another_architecture_is_one_line(runs, tmp_path):
    path = tmp_path / "mlp.pt"
    torch.save(build_model("mlp", 10, (1, 8, 8)).state_dict(), path)
    proc = run_main("posttrain.prune", *FAST, "--model", "cnn", "--checkpoint", path, "--runs-dir", runs)
    line = one_error_line(proc)
    assert proc.returncode == 2 and "does not match --model cnn" in line
    assert not list(runs.glob("*/*/result.json"))
    ok = run_main("posttrain.prune", *FAST, "--checkpoint", path, "--runs-dir", runs)  # the matching --model mlp
    assert ok.returncode == 0, ok.stderr
    assert not (runs / "common.pretrain").exists()  # the given weights were used, no dense model trained


def test_calibration_draw_is_seeded_without_replacement_and_unaugmented():
    from common.data import load_dataset

    data = load_dataset("digits")
    a, _ = data.sample(512, seed=3)
    assert torch.equal(a, data.sample(512, seed=3)[0]) and not torch.equal(a, data.sample(512, seed=4)[0])
    everything, _ = data.sample(data.train.num_samples, seed=3)  # drawing all of them gives a permutation ...
    rows = sorted(tuple(r.tolist()) for r in everything.flatten(1))
    assert rows == sorted(tuple(r.tolist()) for r in data.train.x.flatten(1))  # ... of the raw, unaugmented images


def test_a_job_of_several_processes_is_one_line(runs, monkeypatch):
    """The calibration is not data-parallel (and the latency timing needs the CPUs): WORLD_SIZE > 1 is refused."""
    from tests.conftest import refused_in_a_job_of

    line = refused_in_a_job_of(2, "posttrain.prune", ["--runs-dir", str(runs), *FAST], monkeypatch)
    assert line.startswith("error: posttrain.prune runs in one process, on one GPU")
    assert "(WORLD_SIZE=2)" in line and "python -m slurm.submit --gpus 1" in line
    assert not list(runs.glob("*/*/result.json")) and not list(runs.glob("common.pretrain/*"))


def test_phase1_penalty_steps_exactly_the_removed_rows_consumer_columns_and_bn_gammas(one_thread):
    """LeNet-5 (conv-BN groups whose consumers include a Linear behind a flatten, and Linear groups without BN): the
    penalty's step moves exactly what the official code penalizes -- the removed channels' conv/linear weight rows,
    their consumers' input columns and their BN gammas -- each by -lambda * w, and nothing else (no bias, no beta, no
    kept row or column, no BN statistic)."""
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    teacher = build_model("lenet5", 10, (1, 28, 28)).eval().requires_grad_(False)
    for bn in (teacher[1], teacher[5]):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    student = copy.deepcopy(teacher).requires_grad_(True)
    plan = G.plan(student, x[:1], 0.5)

    def gone(layer):
        out = torch.ones(student[layer].weight.shape[0], dtype=torch.bool)
        out[plan.kept[str(layer)]] = False
        return out

    expected = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in student.named_parameters()}
    for conv, bn in ((0, 1), (4, 5)):
        assert 0 < gone(conv).sum() < len(gone(conv)) and torch.equal(gone(conv), gone(bn))
        expected[f"{conv}.weight"][gone(conv)] = True                     # the removed conv rows
        expected[f"{bn}.weight"][gone(bn)] = True                         # their BN gammas
    expected["4.weight"][:, gone(0)] = True                               # conv 4 reads conv 0's channels
    expected["9.weight"][:, gone(4).repeat_interleave(25)] = True         # flatten: 5 x 5 columns per channel
    for linear, consumer in ((9, 11), (11, 13)):
        expected[f"{linear}.weight"][gone(linear)] = True                 # the removed Linear rows
        expected[f"{consumer}.weight"][:, gone(linear)] = True            # and the next Linear's columns
    names = {id(p): n for n, p in student.named_parameters()}
    slices = {names[id(p)]: m.bool() for p, m in plan.slices()}
    assert sorted(slices) == ["0.weight", "1.weight", "11.weight", "13.weight", "4.weight", "5.weight", "9.weight"]
    for name, mask in slices.items():
        assert torch.equal(mask, expected[name]), name

    # one phase-1 epoch whose reconstruction step moves nothing (lr 0): what moves is the penalty's step alone
    before = {k: v.clone() for k, v in student.state_dict().items()}
    targets = R.TeacherOutputs(teacher, x, plan.kept)
    R.reconstruct(student, targets, x, epochs=1, lr=0.0, batch_size=len(x), seed=0, kept=plan.kept,
                  penalty=plan.slices(), lambda0=0.25)
    for name, value in student.state_dict().items():
        want = before[name].clone()
        if name in expected:
            want[expected[name]] *= 0.75                                  # w - lambda_0 w
        assert torch.allclose(value, want, rtol=1e-6, atol=0), name
        assert torch.equal(value != before[name], expected.get(name, torch.zeros_like(value, dtype=torch.bool))
                           & (before[name] != 0)), name


def _small_convnet() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                          nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics as after training
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def test_calibrate_prunes_a_plain_model_from_unlabeled_samples_and_reconstruction_pays(one_thread):
    model, records = _small_convnet(), []
    dense = copy.deepcopy(model).eval()
    out = R.calibrate(model, X, 0.5, phase1_epochs=3, phase2_epochs=3, log=lambda **r: records.append(r))
    assert out.model is model and [m.out_channels for m in (model[0], model[3])] != [8, 16]
    assert sum(m.out_channels for m in (model[0], model[3])) == 12            # half of the 24 prunable channels
    assert model[8].out_features == 10 and model(X).shape == (64, 10)          # the classifier keeps its outputs
    assert [(r["phase"], r["epoch"]) for r in records] == [("phase1", e) for e in (1, 2, 3)] + \
        [("phase2", e) for e in (1, 2, 3)]
    assert [p.requires_grad for p in dense.parameters()] == [True] * 10       # the teacher was a copy
    removal_only = R.calibrate(copy.deepcopy(dense), X, 0.5, phase1_epochs=0, phase2_epochs=0)
    assert removal_only.updates and all(u["update"] == 0.0 for u in removal_only.updates)
    assert R.calibration_loss(model, out.targets, X, out.plan.kept) < \
        0.7 * R.calibration_loss(removal_only.model, removal_only.targets, X, removal_only.plan.kept)


def test_calibrate_defaults_are_the_scripts_tiny_profile():
    """``calibrate(model, x, ratio)`` with no options is the method ``posttrain.prune`` runs by default."""
    import inspect

    from posttrain import prune

    cfg, defaults = prune.Config(), inspect.signature(R.calibrate).parameters
    fields = {"ignore": "ignore", "phase1_epochs": "phase1_epochs", "phase2_epochs": "phase2_epochs", "lr": "lr",
              "batch_size": "batch_size", "penalty": "penalty", "penalty_growth": "penalty_growth",
              "balanced": "balanced", "seed": "sample_seed"}
    assert {k: defaults[k].default for k in fields} == {k: getattr(cfg, f) for k, f in fields.items()}
    assert cfg.method == "ours" and defaults["layerwise"].default is False


def test_calibrate_needs_no_run_store():
    code = "import sys, posttrain.reconstruct; print('common.store' in sys.modules, 'common.config' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
