"""Criteo: the TSV loader on generated files in the real format, the model, a short SA++ run, bad files."""
import math
import random

import numpy as np

import pytest
import torch

from common import config as C
from common.criteo import N_CAT, N_INT, VOCAB, CriteoNet, hash_ids, read_tsv
from common.data import load_dataset
from common.store import execute
from seqattn import prune
from tests.conftest import one_error_line, run_cli

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


def test_sapp_on_criteo_sparsifies_only_the_first_dense_layer(tmp_path, runs):
    write_tsv(tmp_path / "criteo" / "train.txt", n=210)
    cfg = C.build(prune.Config, prune.PRESETS, "criteo", data_dir=str(tmp_path), runs_dir=str(runs), epochs=3,
                  block=10, sparsity=0.9, progress="off", **{"optim.batch_size": 64})
    result = execute(prune, cfg)
    assert math.isfinite(result["test_loss"]) and result["block_sparsity"] == pytest.approx(0.9)
    layers = {x["layer"]: x for x in result["layers"]}
    # 90% of its blocks masked; a kept block may still be all zero (zeroed in an earlier cycle, not regrown yet)
    assert layers["net.0.weight"]["block_sparsified"] and layers["net.0.weight"]["sparsity"] >= 0.9 - 1e-6
    assert all(layers[f"net.{i}.weight"]["sparsity"] == 0 for i in (2, 4, 6))


def test_wrong_column_count_names_the_line(tmp_path, runs):
    write_tsv(tmp_path / "criteo" / "train.txt", n=20, bad_line=7)
    proc = run_cli("seqattn.prune", "--preset", "criteo", "--data-dir", tmp_path, "--runs-dir", runs,
                   "--epochs", "1", "--block", "10")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "line 7: 39 tab-separated columns, expected 40" in line
    assert not list(runs.glob("*/*/result.json"))
