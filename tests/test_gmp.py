import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.ao.pruning import CubicSL, WeightNormSparsifier

from common.store import collect
from gmp.schedule import GradualPruner, PruningSteps, cubic_sparsity
from tests.conftest import ROOT, one_error_line, run_main

FAST = ["--model", "mlp", "--exclude", "last", "--pretrain.epochs", "3", "--epochs", "6", "--stabilize-epochs", "1",
        "--prune-epochs", "3", "--progress", "off"]


@pytest.mark.parametrize("s_i,s_f,t0,dt,n", [(0.05, 0.9, 3, 2, 5), (0.0, 0.98, 0, 1, 40), (0.2, 0.5, 10, 7, 3)])
def test_cubic_schedule_equals_torch_cubicsl_at_every_step(s_i, s_f, t0, dt, n):
    model = nn.Sequential(nn.Linear(4, 4))
    sparsifier = WeightNormSparsifier(sparsity_level=s_f)
    sparsifier.prepare(model, [{"tensor_fqn": "0.weight"}])
    scheduler = CubicSL(sparsifier, init_sl=s_i, init_t=t0, delta_t=dt, total_t=n, initially_zero=True)
    for t in range(t0 + n * dt + 10):
        assert cubic_sparsity(t, s_i, s_f, t0, n, dt) == pytest.approx(scheduler.get_last_sl()[0], abs=1e-12), t
        sparsifier.step()
        scheduler.step()


def test_update_points():
    plan = PruningSteps(t0=24, dt=12, n=14)
    updates = [t for t in range(400) if plan.is_update(t)]
    assert updates == list(range(24, 24 + 15 * 12, 12))
    assert plan.sparsity(updates[0], 0.05, 0.9) == pytest.approx(0.05)
    assert plan.sparsity(updates[-1], 0.05, 0.9) == pytest.approx(0.9)


def test_gmp_and_oneshot_end_to_end(runs):
    for method in ("gmp", "oneshot"):
        proc = run_main("gmp.prune", *FAST, "--method", method, "--target-sparsity", "0.8", "--runs-dir", runs)
        assert proc.returncode == 0, proc.stderr
    df = collect(runs, "gmp.prune")
    assert set(df["config.method"]) == {"gmp", "oneshot"}
    assert (df["sparsity"].sub(0.8).abs() < 1e-4).all()
    assert (df["test_acc"] > 0.5).all()
    (dense,) = list((runs / "common.pretrain").iterdir())  # both reused the one dense model
    gmp_dir = df[df["config.method"] == "gmp"]["run_dir"].iloc[0]
    log = [json.loads(x) for x in open(f"{gmp_dir}/log.jsonl")]
    prunes = [r for r in log if r.get("event") == "prune"]
    assert len(prunes) == 4 and prunes[0]["step"] == 12 and prunes[-1]["target_sparsity"] == pytest.approx(0.8)
    weights = torch.load(f"{gmp_dir}/model.pt", weights_only=True)
    assert float((weights["1.weight"] == 0).float().mean()) == pytest.approx(0.8, abs=1e-3)
    again = run_main("gmp.prune", *FAST, "--method", "gmp", "--target-sparsity", "0.8", "--runs-dir", runs)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["hash"] == df[df["config.method"] == "gmp"]["hash"].iloc[0]


def test_no_weight_decay_in_finetuning_is_logged(runs):
    proc = run_main("gmp.prune", *FAST, "--finetune-weight-decay", "0", "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (runs / "gmp.prune").iterdir()
    epochs = [json.loads(x) for x in open(run_dir / "log.jsonl") if '"epoch"' in x]
    assert [e["weight_decay"] for e in epochs] == [5e-4] * 4 + [0.0] * 2


@pytest.mark.parametrize("args,message", [
    (["--target-sparsity", "1.0"], r"--target-sparsity 1.0 is outside [0, 1)"),
    (["--target-sparsity", "-0.2"], r"outside [0, 1)"),
    (["--stabilize-epochs", "5", "--prune-epochs", "30", "--epochs", "20"], "stages exceed the total"),
    (["--update-every", "0"], "--update-every 0.0 must be positive"),
    (["--model", "nope"], "--model 'nope' is not one of: mlp, cnn"),
    (["--dataset", "nope"], "--dataset 'nope' is not one of: digits"),
    (["--method", "magic"], "--method 'magic' is not one of"),
])
def test_bad_input_is_one_line_and_nothing_is_done(runs, args, message):
    proc = run_main("gmp.prune", "--runs-dir", runs, *args)
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not list(runs.glob("*/*/result.json"))


def test_missing_dataset_names_the_expected_folder(tmp_path, runs):
    proc = run_main("gmp.prune", "--dataset", "cifar10", "--model", "resnet20", "--data-dir", tmp_path / "nodata",
                    "--runs-dir", runs)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "CIFAR-10 not found" in line and str(tmp_path / "nodata") in line and "--download" in line
    assert not list(runs.glob("*/*/result.json"))


def test_nan_loss_records_a_failed_run(runs):
    proc = run_main("gmp.prune", *FAST, "--pretrain.lr", "1e30", "--runs-dir", runs)
    assert proc.returncode == 3
    assert "run failed: training loss became" in one_error_line(proc)
    (run_dir,) = (runs / "common.pretrain").iterdir()
    assert not (run_dir / "result.json").exists()
    assert "lower the learning rate" in json.loads((run_dir / "failed.json").read_text())["reason"]


def test_corrupt_checkpoint_reruns_from_scratch(runs):
    ok = run_main("common.pretrain", "--model", "mlp", "--train.epochs", "2", "--runs-dir", runs)
    (run_dir,) = (runs / "common.pretrain").iterdir()
    (run_dir / "result.json").unlink()
    (run_dir / "checkpoint.pt").write_bytes(b"\x80\x02not a checkpoint")
    proc = run_main("common.pretrain", "--model", "mlp", "--train.epochs", "2", "--runs-dir", runs)
    assert proc.returncode == 0 and "corrupt or truncated" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["test_acc"] == json.loads(ok.stdout.splitlines()[-1])["test_acc"]


def test_a_run_that_misses_its_target_sparsity_is_recorded_failed(runs, monkeypatch, one_thread, capsys):
    """A cubic schedule that ends after the run (here: four times the pruning stage) leaves the final masks below s_f:
    the run is failed with the reason, never done."""
    from common.cli import main
    from gmp import prune

    schedule = prune.pruning_steps
    monkeypatch.setattr(prune, "pruning_steps", lambda cfg, steps: PruningSteps(
        t0=(s := schedule(cfg, steps)).t0, dt=s.dt, n=4 * s.n))
    code = main("gmp.prune", [*FAST, "--target-sparsity", "0.8", "--runs-dir", str(runs)])
    err = capsys.readouterr().err
    assert code == 3 and "error: run failed: final sparsity" in err and "misses the target 0.8000" in err
    (run_dir,) = (runs / "gmp.prune").iterdir()
    assert not (run_dir / "result.json").exists()
    reason = json.loads((run_dir / "failed.json").read_text())["reason"]
    assert "past the run's end (step 72)" in reason and "lengthen --epochs" in reason


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))


def _train(model, optimizer, pruner, steps, start=0):
    """A plain training loop on random tensors, the pruner stepped once per optimizer step."""
    g = torch.Generator().manual_seed(1)
    for t in range(start, start + steps):
        x, y = torch.randn(16, 20, generator=g), torch.randint(0, 5, (16,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        pruner.mask_grads()
        optimizer.step()
        pruner.step(t)


def test_gradual_pruner_in_a_plain_loop_follows_the_cubic_schedule_and_keeps_pruned_weights_zero():
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    records = []
    pruner = GradualPruner(model, optimizer, final_sparsity=0.8, initial_sparsity=0.1, start_step=3, end_step=17,
                           every=4, log=lambda **r: records.append(r))
    assert pruner.sparsity() == 0.0 and not records and pruner.last_update == 15  # dense until step 3
    _train(model, optimizer, pruner, 25)
    assert [r["step"] for r in records] == [3, 7, 11, 15]
    assert [r["target_sparsity"] for r in records] == [cubic_sparsity(t, 0.1, 0.8, 3, 3, 4) for t in (3, 7, 11, 15)]
    assert records[0]["target_sparsity"] == pytest.approx(0.1) and records[-1]["target_sparsity"] == 0.8
    assert list(pruner.params) == ["0.weight", "2.weight"]  # the classifier stays dense
    for name, layer in (("0.weight", model[0]), ("2.weight", model[2])):  # per layer: exactly round(0.8 n) each
        pruned = layer.weight == 0
        assert int(pruned.sum()) == round(0.8 * layer.weight.numel())
        assert torch.equal(pruned, pruner.masks.masks[name] == 0)
        assert not optimizer.state[layer.weight]["momentum_buffer"][pruned].any()
    assert records[-1]["layer_sparsity"] == pytest.approx({"0.weight": 0.8, "2.weight": 0.8})
    assert pruner.sparsity() == records[-1]["sparsity"] == pytest.approx(0.8)
    assert (model[4].weight != 0).all()


def test_gradual_pruner_from_start_to_start_prunes_once_at_construction():
    """One-shot pruning: start_step == end_step == 0 sets the final masks before the first step (global ranking)."""
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dense = {n: p.detach().abs().clone() for n, p in model.named_parameters()}
    pruner = GradualPruner(model, optimizer, final_sparsity=0.7, scope="global", exclude=("first", "last"))
    assert list(pruner.params) == ["2.weight"] and pruner.sparsity() == pytest.approx(0.7, abs=1e-3)
    threshold = dense["2.weight"].flatten().kthvalue(round(0.7 * 1200)).values
    assert torch.equal(model[2].weight == 0, dense["2.weight"] <= threshold)  # the smallest magnitudes went
    masks = pruner.state_dict()
    _train(model, optimizer, pruner, 10)
    assert all(torch.equal(masks[n], m) for n, m in pruner.masks.masks.items())  # frozen: no further update
    assert int((model[2].weight == 0).sum()) == round(0.7 * 1200)


@pytest.mark.parametrize("kwargs", [{"final_sparsity": 0.5, "initial_sparsity": 0.6}, {"final_sparsity": 1.0},
                                    {"final_sparsity": 0.5, "every": 0}, {"final_sparsity": 0.5, "start_step": 5}])
def test_gradual_pruner_refuses_an_impossible_schedule(kwargs):
    with pytest.raises(ValueError):
        GradualPruner(_net(), **kwargs)


def test_the_pruner_in_a_plain_loop_gives_the_scripts_weights(runs, one_thread):
    """gmp.prune's run and the same schedule driven by hand: the same dense start, batches, SGD and masks, so the
    same weights, bit for bit."""
    from common import config as C
    from common.data import load_dataset
    from common.pretrain import load_dense
    from common.store import Run, execute, execute_dependencies
    from gmp import prune

    cfg = C.parse_args(prune.Config, [*FAST, "--target-sparsity", "0.8", "--device", "cpu", "--runs-dir", str(runs)])
    execute(prune, cfg)
    by_script = torch.load(Run(prune.SCRIPT, cfg).dir / "model.pt", weights_only=True)

    model, _ = load_dense(cfg, execute_dependencies(prune, cfg), torch.device("cpu"))
    data = load_dataset(cfg.dataset, batch_size=cfg.optim.batch_size, seed=cfg.seed, val_size=cfg.val_size)
    steps = len(data.train)  # every stage's LR is 0.01, every weight decay 5e-4 (FAST's fine-tuning ends before 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    pruner = GradualPruner(model, optimizer, final_sparsity=0.8, initial_sparsity=0.05, start_step=steps,
                           end_step=4 * steps, every=steps, exclude=("last",))
    t = 0
    for epoch in range(6):
        model.train()
        for x, y in data.train.epoch(epoch):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            pruner.mask_grads()
            optimizer.step()
            pruner.step(t)
            t += 1
    assert t == 6 * steps and pruner.sparsity() == pytest.approx(0.8, abs=1e-3)
    assert by_script.keys() == model.state_dict().keys()
    assert all(torch.equal(by_script[k], v) for k, v in model.state_dict().items())


def test_the_pruner_needs_no_run_store():
    code = "import sys, gmp.schedule; print('common.store' in sys.modules, 'common.config' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
