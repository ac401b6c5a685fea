"""Criteo: the TSV loader on generated files in the real format, the model, its metrics (log-loss, ROC AUC), the
preset, a short SA++ run and its table, a run too short to prune, bad files."""
import json
import math
import random

import numpy as np

import pytest
import torch
from sklearn.metrics import roc_auc_score

from common import config as C
from common.criteo import N_CAT, N_INT, VOCAB, CriteoNet, hash_ids, read_tsv
from common.metrics import roc_auc
from common.data import load_dataset
from common.store import Run, collect, execute, read_log
from common.train import evaluate, make_optimizer
from figures.seqattn import tab_seqattn_blocks
from seqattn import prune
from tests.conftest import one_error_line, run_main

pytestmark = pytest.mark.usefixtures("one_thread")


def write_tsv(path, n=140, seed=0, bad_line=None):
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for i in range(1, n + 1):
            ints = [str(rng.randint(-3, 900)) if rng.random() > 0.2 else "" for _ in range(N_INT)]
            cats = [f"{rng.randint(0, 40):08x}" if rng.random() > 0.1 else "" for _ in range(N_CAT)]
            label = str(int(ints[0] != "" and int(ints[0]) > 450))
            fields = [label, *ints, *cats]
            if i == bad_line:
                fields = fields[:-1]  # 39 columns
            fh.write("\t".join(fields) + "\n")
    return path


def test_reader_transforms_integers_and_hashes_categories(tmp_path):
    path = tmp_path / "criteo" / "train.txt"
    path.parent.mkdir()
    path.write_text("1\t3\t\t-2" + "\t0" * (N_INT - 3) + "\t68fd1e64\t\t68fd1e64" + "\tabc" * (N_CAT - 3) + "\n")
    x, y = read_tsv(path)
    assert x.shape == (1, N_INT + N_CAT) and y.tolist() == [1]
    assert x[0, 0] == pytest.approx(math.log(4.0)) and x[0, 1] == 0 and x[0, 2] == 0  # log(1+x); empty, <0 -> 0
    ids = x[0, N_INT:]
    assert ids[0] == ids[2] != 0 and ids[1] == 0 and (ids < VOCAB).all() and (ids == ids.round()).all()
    values = np.array([f"{v:08x}".encode() for v in range(200)], dtype="S8")
    ids = hash_ids(values)
    assert (ids == hash_ids(values.copy())).all() and len(set(ids.tolist())) > 190  # deterministic, few collisions


def test_loader_holds_out_the_last_seventh_and_the_model_runs(tmp_path):
    write_tsv(tmp_path / "criteo" / "train.txt", n=140)
    data = load_dataset("criteo", root=tmp_path, batch_size=32)
    assert data.train.num_samples == 120 and data.test.num_samples == 20
    assert (tmp_path / "criteo").glob("train.txt.*.pt")  # parsed once, cached
    x, y = next(iter(data.train))
    model = CriteoNet(1, (1, 1, N_INT + N_CAT))
    assert model(x).shape == (32, 1) and model.net[0].in_features == 390
    again = load_dataset("criteo", root=tmp_path, batch_size=32)  # from the cache
    assert torch.equal(again.test.x, data.test.x)


def test_roc_auc_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    for n, levels in ((2, 2), (50, 3), (1000, 10**6)):  # few distinct scores (many ties) and almost none
        scores = torch.randint(0, levels, (n,), generator=g).float()
        labels = torch.randint(0, 2, (n,), generator=g)
        labels[:2] = torch.tensor([0, 1])
        assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([1, 1])))  # one class: undefined


def test_one_logit_models_report_log_loss_and_auc_and_no_accuracy(tmp_path):
    write_tsv(tmp_path / "criteo" / "train.txt", n=140)
    data = load_dataset("criteo", root=tmp_path, batch_size=8)  # 20 test examples in 3 batches
    torch.manual_seed(0)
    model = CriteoNet()
    metrics = evaluate(model, data.test, prune.loss_of(1))
    assert set(metrics) == {"loss", "auc"}
    with torch.no_grad():
        logits = model(data.test.x).reshape(-1)
    y = data.test.y.float()
    log_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
    assert metrics["loss"] == pytest.approx(log_loss, rel=1e-5)
    assert metrics["auc"] == pytest.approx(roc_auc_score(y.numpy(), logits.numpy()), abs=1e-9)


def test_criteo_preset_puts_weight_decay_on_the_logits_only():
    cfg = C.build(prune.Config, prune.PRESETS, "criteo")
    with torch.device("meta"):  # shapes only
        model = CriteoNet()
    ctl = prune.controller(cfg, model, steps_per_epoch=1)
    optimizer = make_optimizer(ctl.param_groups(), cfg.optim, cfg.lr.lr)
    logits = {id(p) for p in ctl.reparam.logits()}
    assert len(logits) == 1  # one layer block-sparsified: net.0
    decay = {all(id(p) in logits for p in g["params"]): g["weight_decay"] for g in optimizer.param_groups}
    assert decay[True] > 0 and decay[False] == 0.0


def test_sapp_on_criteo_sparsifies_only_the_first_dense_layer(tmp_path, runs):
    write_tsv(tmp_path / "criteo" / "train.txt", n=210)
    cfg = C.build(prune.Config, prune.PRESETS, "criteo", data_dir=str(tmp_path), runs_dir=str(runs), epochs=3,
                  block=10, sparsity=0.9, progress="off", **{"optim.batch_size": 64})
    result = execute(prune, cfg)
    assert math.isfinite(result["test_loss"]) and result["block_sparsity"] == pytest.approx(0.9)
    assert 0.0 <= result["test_auc"] <= 1.0 and "test_acc" not in result  # one logit: log-loss and AUC
    # the file was parsed by the one "prepare data" run it declares and executed first (a Slurm job of its own)
    (script, first), = prune.dependencies(cfg)
    prepared = json.loads((Run(script, first).dir / "result.json").read_text())
    assert script == "common.prepare" and (prepared["train_samples"], prepared["test_samples"]) == (180, 30)
    epochs = [r for r in read_log(Run(prune.SCRIPT, cfg).dir) if "epoch" in r]
    assert len(epochs) == 3 and all("test_auc" in r and "test_acc" not in r and "train_acc" not in r for r in epochs)
    layers = {x["layer"]: x for x in result["layers"]}
    # 90% of its blocks masked; a kept block may still be all zero (zeroed in an earlier cycle, not regrown yet)
    assert layers["net.0.weight"]["block_sparsified"] and layers["net.0.weight"]["sparsity"] >= 0.9 - 1e-6
    assert all(layers[f"net.{i}.weight"]["sparsity"] == 0 for i in (2, 4, 6))
    # the block table reads the Criteo run (eval loss, no accuracy)
    paths = tab_seqattn_blocks.draw(collect(runs, prune.SCRIPT), "tiny", tmp_path / "tab")
    table = next(p for p in paths if p.suffix == ".csv").read_text()
    assert "eval loss (BCE)" in table and f"{result['test_loss']:.4f}" in table


def test_a_run_too_short_to_reach_its_sparsity_is_recorded_failed(tmp_path, runs):
    write_tsv(tmp_path / "criteo" / "train.txt", n=210)  # 180 training examples: one batch of 256, one step
    proc = run_main("seqattn.prune", "--preset", "criteo", "--data-dir", tmp_path, "--runs-dir", runs, "--epochs", "1",
                    "--block", "10", "--sparsity", "0.9", "--optim.batch-size", "256", "--progress", "off")
    assert proc.returncode == 3
    line = one_error_line(proc)
    assert "final sparsity 0.0000 misses the target 0.9000" in line and "raise --epochs" in line
    (run_dir,) = runs.glob("seqattn.prune/*")
    assert not (run_dir / "result.json").exists()
    assert "raise --epochs" in json.loads((run_dir / "failed.json").read_text())["reason"]


def test_wrong_column_count_names_the_line(tmp_path, runs):
    write_tsv(tmp_path / "criteo" / "train.txt", n=20, bad_line=7)
    proc = run_main("seqattn.prune", "--preset", "criteo", "--data-dir", tmp_path, "--runs-dir", runs,
                    "--epochs", "1", "--block", "10")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "line 7: 39 tab-separated columns, expected 40" in line
    assert not list(runs.glob("*/*/result.json"))
