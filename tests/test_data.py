"""Tests of common/data.py on tiny datasets written in their real on-disk formats."""

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from common.data import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DATASETS, IMAGENET_MEAN,
                         IMAGENET_STD, DatasetInfo, crop_flip, dataset_info, load_dataset, plain_input)
from common.errors import DatasetMissing, UserError
from tests.conftest import ROOT

# ----------------------------------------------------------------------------- writers


def cifar_images(n: int, labels: np.ndarray) -> np.ndarray:
    """uint8 (n, 3, 32, 32): R = 20 * label, G = index % 256, B = index // 256 (+ 100),
    plus a per-position pattern in the first row so the plane layout is checkable."""
    x = np.zeros((n, 3, 32, 32), np.uint8)
    x[:, 0] = (20 * labels)[:, None, None]
    x[:, 1] = (np.arange(n) % 256)[:, None, None]
    x[:, 2] = (100 + np.arange(n) // 256)[:, None, None]
    x[:, 0, 0, :] = np.arange(32) * 3  # R plane, row 0: 0, 3, ..., 93
    return x


def write_cifar_batch(path: Path, x: np.ndarray, labels: np.ndarray, label_key: bytes,
                      protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    """An official-format python pickle batch: N x 3072 uint8 rows of R, G, B planes."""
    batch = {b"batch_label": b"test", b"data": x.reshape(len(x), 3072), label_key: labels.tolist(),
             b"filenames": [b"img_%d.png" % i for i in range(len(x))]}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = (labels // 5).tolist()
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def write_python2_cifar_batch(path: Path, x: np.ndarray, labels: np.ndarray, label_key: bytes) -> None:
    """A batch as the official files hold it: Python 2's cPickle, protocol 2 (byte strings as STRING opcodes, the
    array through ``numpy.core.multiarray._reconstruct`` and its state, the labels a list of ints)."""
    def string(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def integer(n):
        return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)

    rows = x.reshape(len(x), 3072)
    dtype = (b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
             + b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b")
             + b"\x87R(" + integer(1) + integer(len(rows)) + integer(3072) + b"\x86" + dtype + b"\x89"
             + string(rows.tobytes()) + b"tb")
    path.write_bytes(b"\x80\x02}(" + string(b"batch_label") + string(b"test") + string(b"data") + array
                     + string(label_key) + b"](" + b"".join(integer(int(v)) for v in labels) + b"eu.")


@pytest.fixture
def cifar10_root(tmp_path):
    """CIFAR-10 with 5 training batches of 12 images (60 total) and 20 test images."""
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    labels = np.arange(60) % 10
    x = cifar_images(60, labels)
    for i in range(5):
        sl = slice(12 * i, 12 * (i + 1))
        write_cifar_batch(base / f"data_batch_{i + 1}", x[sl], labels[sl], b"labels")
    test_labels = (np.arange(20) * 3) % 10
    write_cifar_batch(base / "test_batch", cifar_images(20, test_labels), test_labels, b"labels")
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    labels = (np.arange(40) * 7) % 100
    write_cifar_batch(base / "train", cifar_images(40, labels % 13), labels, b"fine_labels")
    write_cifar_batch(base / "test", cifar_images(10, labels[:10] % 13), labels[:10], b"fine_labels")
    return tmp_path


COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]


def write_jpeg(path: Path, colour, size) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)


@pytest.fixture
def tiny_root(tmp_path):
    """Tiny-ImageNet tree with 3 classes (wnids.txt deliberately unsorted): 4 train + 2 val images each."""
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n03000000", "n01000000", "n02000000"]  # sorted order -> labels 2, 0, 1
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for w in wnids:
        label = sorted(wnids).index(w)
        for k in range(4):
            write_jpeg(base / "train" / w / "images" / f"{w}_{k}.JPEG", COLOURS[label], (64, 64))
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for k in range(2):
            name = f"val_{label * 2 + k}.JPEG"
            write_jpeg(base / "val" / "images" / name, COLOURS[label], (64, 64))
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.fixture
def imagenet_root(tmp_path):
    base = tmp_path / "imagenet"
    for label, w in enumerate(["n01", "n02", "n03"]):
        for k in range(2):
            write_jpeg(base / "train" / w / f"{w}_{k}.JPEG", COLOURS[label], (300, 260))
        write_jpeg(base / "val" / w / f"val_{w}.JPEG", COLOURS[label], (260, 300))
    return tmp_path


def collect(split, epoch=0):
    xs, ys = zip(*split.epoch(epoch))
    return torch.cat(xs), torch.cat(ys)


def raw(x, mean, std):
    """Undo normalization: back to 0..255 pixel values."""
    return (x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]) * 255


# ----------------------------------------------------------------------------- registry


def test_registry_and_info():
    assert set(DATASETS) == {"digits", "fashionmnist", "cifar10", "cifar100", "tinyimagenet", "imagenet", "criteo",
                             "imagefolder"}
    assert dataset_info("digits") == DatasetInfo("digits", 10, (1, 8, 8))
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("tinyimagenet").input_shape == (3, 64, 64)
    assert dataset_info("imagenet") == DatasetInfo("imagenet", 1000, (3, 224, 224))


def test_unknown_dataset():
    for call in (lambda: dataset_info("mnist"), lambda: load_dataset("mnist")):
        with pytest.raises(UserError) as e:
            call()
        assert "mnist" in str(e.value) and "cifar10" in str(e.value) and "digits" in str(e.value)


@pytest.mark.parametrize("name, expected", [
    ("cifar10", "cifar-10-batches-py/data_batch_1"),
    ("cifar100", "cifar-100-python/train"),
    ("tinyimagenet", "tiny-imagenet-200/wnids.txt"),
    ("imagenet", "imagenet/train"),
])
def test_missing_dataset(tmp_path, name, expected):
    with pytest.raises(DatasetMissing) as e:
        load_dataset(name, root=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / expected) in msg and "\n" not in msg
    if name == "cifar10":
        assert "test_batch" in msg


def test_cifar_download_uses_torchvision_then_own_reader(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake_cifar10(root, train, download):  # stands in for the network download
        calls.append((root, download))
        base = Path(root) / "cifar-10-batches-py"
        base.mkdir()
        labels = np.arange(10)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            write_cifar_batch(base / name, cifar_images(10, labels), labels, b"labels")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    data = load_dataset("cifar10", root=str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True)] and data.train.num_samples == 50
    load_dataset("cifar10", root=str(tmp_path), download=True)  # files present: no second download
    assert len(calls) == 1

    def failing(root, train, download):
        raise OSError("no route\nto host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", failing)
    with pytest.raises(UserError) as e:
        load_dataset("cifar100", root=str(tmp_path), download=True)
    assert "CIFAR-100" in str(e.value) and "no route to host" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["tinyimagenet", "imagenet"])
def test_missing_undownloadable(tmp_path, name):
    with pytest.raises(UserError) as e:
        load_dataset(name, root=str(tmp_path), download=True)
    assert "cannot be downloaded" in str(e.value) and str(tmp_path) in str(e.value)


# ----------------------------------------------------------------------------- digits


def test_digits_split_fixed_and_stratified():
    a = load_dataset("digits", seed=0, batch_size=100)
    b = load_dataset("digits", seed=1, batch_size=100)
    assert (a.train.num_samples, a.test.num_samples, a.val) == (1437, 360, None)
    assert len(a.train) == 15 and len(a.test) == 1
    xa, ya = collect(a.test)
    xb, yb = collect(b.test)
    assert xa.shape == (360, 1, 8, 8) and xa.dtype == torch.float32
    assert torch.equal(xa, xb) and torch.equal(ya, yb)  # test split independent of the seed
    assert set(torch.bincount(ya, minlength=10).tolist()) <= {35, 36, 37}  # stratified
    # The training set is the same for both seeds (only its order differs) and is standardized.
    ta, la = collect(a.train)
    tb, lb = collect(b.train)
    assert not torch.equal(la, lb)
    key = lambda x: sorted(map(tuple, x.flatten(1).tolist()))  # noqa: E731
    assert key(ta) == key(tb)
    assert abs(ta.mean().item()) < 1e-4 and abs(ta.std().item() - 1) < 1e-3


def test_digits_val_carve():
    a = load_dataset("digits", seed=0, val_size=100)
    b = load_dataset("digits", seed=5, val_size=100)
    assert (a.train.num_samples, a.val.num_samples, a.test.num_samples) == (1337, 100, 360)
    assert all(torch.equal(u, v) for u, v in zip(collect(a.val), collect(b.val)))
    assert torch.bincount(collect(a.val)[1], minlength=10).min() >= 9  # stratified
    with pytest.raises(UserError):
        load_dataset("digits", val_size=1437)


def test_determinism_and_sample():
    a = load_dataset("digits", seed=3, batch_size=64)
    b = load_dataset("digits", seed=3, batch_size=64)  # e.g. a resumed run
    for (xa, ya), (xb, yb) in zip(a.train.epoch(4), b.train.epoch(4)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert all(torch.equal(u, v) for u, v in zip(collect(a.train, 7), collect(b.train, 7)))
    assert not torch.equal(collect(a.train, 7)[1], collect(a.train, 8)[1])
    x, y = a.sample(50, seed=1)
    assert x.shape == (50, 1, 8, 8) and y.shape == (50,)
    x2, _ = a.sample(50, seed=1)
    assert torch.equal(x, x2)
    with pytest.raises(UserError) as e:
        a.sample(1438, seed=0)
    assert "1438" in str(e.value) and "1437" in str(e.value)


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_load_layout_labels_normalization(cifar10_root):
    data = load_dataset("cifar10", root=str(cifar10_root), batch_size=16, eval_batch_size=8)
    assert (data.train.num_samples, data.test.num_samples, len(data.train), len(data.test)) == (60, 20, 4, 3)
    x, y = collect(data.test)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(y, torch.tensor((np.arange(20) * 3) % 10))
    # A known pixel: exactly (v / 255 - mean) / std.
    expected = (20 * y[5].item() / 255 - CIFAR10_MEAN[0]) / CIFAR10_STD[0]
    assert x[5, 0, 10, 10].item() == pytest.approx(expected, abs=1e-6)
    r = raw(x, CIFAR10_MEAN, CIFAR10_STD).round()
    assert torch.equal(r[:, 0, 5, 5], 20 * y.float())  # labels matched to images
    assert torch.equal(r[:, 1, 0, 0], torch.arange(20).float())  # order kept
    assert torch.equal(r[0, 0, 0], torch.arange(32).float() * 3)  # plane/row-major layout


def test_cifar_train_labels_survive_augmentation(cifar10_root):
    data = load_dataset("cifar10", root=str(cifar10_root), batch_size=16, seed=1)
    x, y = collect(data.train, 2)
    r = raw(x, CIFAR10_MEAN, CIFAR10_STD).round()
    # The centre pixel is never in the padding: its colour still encodes label and index.
    assert torch.equal(r[:, 0, 16, 16], 20 * y.float())
    assert sorted(r[:, 1, 16, 16].long().tolist()) == list(range(60))  # every sample once


def test_cifar_crop_zero_pads_raw_pixels(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    x = np.full((64, 3, 32, 32), 255, np.uint8)
    labels = np.zeros(64, np.int64)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_cifar_batch(base / name, x, labels, b"labels")
    data = load_dataset("cifar10", root=str(tmp_path), batch_size=100)
    xb, _ = next(data.train.epoch(0))
    zero = torch.tensor([-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)])[:, None, None]
    full = torch.tensor([(1 - m) / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)])[:, None, None]
    is_zero = torch.isclose(xb, zero.expand(3, 32, 32), atol=1e-6)
    assert torch.all(is_zero | torch.isclose(xb, full.expand(3, 32, 32), atol=1e-6))
    padded = 0
    for m in is_zero[:, 0]:
        rows, cols = m.all(1), m.all(0)
        # Zeros form a border of <= 4 rows on one side and <= 4 columns on one side.
        assert torch.equal(m, rows[:, None] | cols[None, :])
        top, bottom = int(rows[:4].sum()), int(rows[-4:].sum())
        left, right = int(cols[:4].sum()), int(cols[-4:].sum())
        assert rows.sum() == top + bottom and cols.sum() == left + right
        assert top * bottom == 0 and left * right == 0
        padded += bool(rows.any() or cols.any())
    assert padded > 32  # P(no padding) = 1/81 per sample


def test_crop_flip_matches_torchvision():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    for (i, j), flip in [((0, 0), False), ((8, 3), True), ((4, 4), False), ((2, 7), True)]:
        ref = TF.crop(TF.pad(img, 4), i, j, 32, 32)
        ref = TF.hflip(ref) if flip else ref
        out = crop_flip(img[None], 4, torch.tensor([[i, j]]), torch.tensor([flip]))
        assert torch.equal(out[0], ref)


def test_cifar_flips_happen(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    x = np.zeros((40, 3, 32, 32), np.uint8)
    x[:] = (np.arange(32) * 8)[None, None, None, :]  # horizontal ramp
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_cifar_batch(base / name, x, np.zeros(40, np.int64), b"labels")
    data = load_dataset("cifar10", root=str(tmp_path), batch_size=200)
    xb, _ = next(data.train.epoch(0))
    row = xb[:, 0, 16, 12:20]  # never padded (offsets <= 4 px)
    increasing = (row.diff(dim=1) > 0).all(1)
    decreasing = (row.diff(dim=1) < 0).all(1)
    assert torch.all(increasing | decreasing)
    assert 40 < increasing.sum() < 160  # p = 0.5 each over 200 samples


def test_cifar_determinism_and_val(cifar10_root):
    def load(seed, **kw):
        return load_dataset("cifar10", root=str(cifar10_root), batch_size=16, seed=seed, **kw)

    a, b = load(0), load(0)
    for (xa, ya), (xb, yb) in zip(a.train.epoch(3), b.train.epoch(3)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(collect(a.train, 3)[0], collect(a.train, 4)[0])
    assert not torch.equal(collect(a.train, 3)[0], collect(load(1).train, 3)[0])

    v0, v1 = load(0, val_size=20), load(1, val_size=20)
    assert (v0.train.num_samples, v0.val.num_samples) == (40, 20)
    xv, yv = collect(v0.val)
    assert torch.equal(xv, collect(v1.val)[0])  # same carve for every seed
    assert torch.bincount(yv, minlength=10).tolist() == [2] * 10  # stratified
    ident = lambda x: raw(x, CIFAR10_MEAN, CIFAR10_STD)[:, 1, 16, 16].round().long().tolist()  # noqa: E731
    val_ids, train_ids = ident(xv), ident(collect(v0.train)[0])
    assert val_ids == sorted(val_ids)  # eval split: fixed order, not augmented
    assert sorted(val_ids + train_ids) == list(range(60))


def test_cifar_sample(cifar10_root):
    data = load_dataset("cifar10", root=str(cifar10_root), val_size=10)
    x, y = data.sample(50, seed=0)
    r = raw(x, CIFAR10_MEAN, CIFAR10_STD).round()
    assert len(set(r[:, 1, 0, 5].long().tolist())) == 50  # distinct samples
    assert torch.equal(r[:, 0, 5, 5], 20 * y.float())
    assert torch.equal(r[:, 0, 0], (torch.arange(32).float() * 3).expand(50, 32))  # not augmented
    with pytest.raises(UserError) as e:
        data.sample(51, seed=0)
    assert "51" in str(e.value) and "50" in str(e.value)


def test_cifar100(cifar100_root):
    data = load_dataset("cifar100", root=str(cifar100_root), batch_size=8)
    x, y = collect(data.test)
    assert x.shape == (10, 3, 32, 32)
    assert torch.equal(y, torch.tensor((np.arange(10) * 7) % 100))
    r = raw(x, CIFAR100_MEAN, CIFAR100_STD).round()
    assert torch.equal(r[:, 0, 5, 5], 20 * (y % 13).float())
    xt, yt = collect(data.train)
    assert xt.shape == (40, 3, 32, 32) and sorted(yt.tolist()) == sorted(((np.arange(40) * 7) % 100).tolist())


@pytest.mark.parametrize("writer", ["python2", 2, 4, 5])
def test_cifar_batches_read_the_same_however_python_pickled_them(tmp_path, writer):
    """Python 2's cPickle (the official files), and Python 3's protocols 2 (bytes via _codecs.encode), 4 and 5
    (the array through numpy's _frombuffer): all read as data by the restricted reader, to the same tensors."""
    from common.data import _read_cifar_batches

    labels = (np.arange(14) * 3) % 10
    x = cifar_images(14, labels)
    path = tmp_path / "data_batch_1"
    if writer == "python2":
        write_python2_cifar_batch(path, x, labels, b"labels")
    else:
        write_cifar_batch(path, x, labels, b"labels", protocol=writer)
    assert pickle.loads(path.read_bytes(), encoding="bytes")[b"data"].shape == (14, 3072)  # a real pickle of it
    images, targets = _read_cifar_batches([path], b"labels")
    assert images.dtype == torch.uint8 and torch.equal(images, torch.from_numpy(x))
    assert targets.dtype == torch.int64 and targets.tolist() == labels.tolist()


def test_a_cifar_batch_of_the_wrong_shape_is_one_line(tmp_path):
    from common.data import _read_cifar_batches

    path = tmp_path / "test_batch"
    write_cifar_batch(path, cifar_images(3, np.zeros(3, np.int64)), np.zeros(2, np.int64), b"labels")  # 3 rows, 2
    with pytest.raises(UserError, match="is not a CIFAR python batch .* not rows of 3072 bytes with one b'labels'"):
        _read_cifar_batches([path], b"labels")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match="is refused: not a CIFAR python batch"):
        _read_cifar_batches([path], b"labels")


# ----------------------------------------------------------------------------- Tiny-ImageNet / ImageNet


def colour_of(x):
    """Centre pixel colour (0..255) of normalized ImageNet-statistics images."""
    c = x.shape[-1] // 2
    return raw(x, IMAGENET_MEAN, IMAGENET_STD)[:, :, c, c]


def check_colours(x, y):
    expected = torch.tensor(COLOURS, dtype=torch.float32)[y]
    assert (colour_of(x) - expected).abs().max() < 6  # JPEG tolerance


def test_tinyimagenet(tiny_root):
    data = load_dataset("tinyimagenet", root=str(tiny_root), batch_size=5, eval_batch_size=4, workers=0)
    assert (data.train.num_samples, data.test.num_samples, len(data.train), len(data.test)) == (12, 6, 3, 2)
    x, y = collect(data.test)
    assert x.shape == (6, 3, 64, 64) and y.dtype == torch.long
    assert torch.equal(y, torch.tensor([2, 2, 0, 0, 1, 1]))  # annotation order, sorted-wnid labels
    check_colours(x, y)
    xt, yt = collect(data.train, 1)
    assert xt.shape == (12, 3, 64, 64) and sorted(yt.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    check_colours(xt, yt)
    # Deterministic per (seed, epoch), whatever the number of workers; epochs differ.
    again = load_dataset("tinyimagenet", root=str(tiny_root), batch_size=5, workers=1)
    xa, ya = collect(again.train, 1)
    assert torch.equal(xt, xa) and torch.equal(yt, ya)
    assert not torch.equal(yt, collect(data.train, 2)[1])
    # Carving and sampling.
    v = load_dataset("tinyimagenet", root=str(tiny_root), val_size=3, workers=0)
    assert (v.train.num_samples, v.val.num_samples) == (9, 3)
    assert sorted(collect(v.val)[1].tolist()) == [0, 1, 2]
    xs, ys = v.sample(9, seed=0)
    assert xs.shape == (9, 3, 64, 64) and sorted(ys.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    check_colours(xs, ys)


def test_tinyimagenet_padding_is_zero(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("n01\n")
    for k in range(8):
        write_jpeg(base / "train" / "n01" / "images" / f"n01_{k}.JPEG", (255, 255, 255), (64, 64))
    write_jpeg(base / "val" / "images" / "val_0.JPEG", (255, 255, 255), (64, 64))
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t1\t1\n")
    data = load_dataset("tinyimagenet", root=str(tmp_path), batch_size=8, workers=0)
    x, _ = collect(data.train)
    zero = -IMAGENET_MEAN[0] / IMAGENET_STD[0]
    corners = x[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.isclose(corners, torch.tensor(zero), atol=1e-5).any()


def test_imagenet(imagenet_root):
    data = load_dataset("imagenet", root=str(imagenet_root), batch_size=4, eval_batch_size=2, workers=0)
    assert (data.train.num_samples, data.test.num_samples) == (6, 3)
    x, y = collect(data.test)
    assert x.shape == (3, 3, 224, 224) and torch.equal(y, torch.tensor([0, 1, 2]))
    check_colours(x, y)
    xt, yt = collect(data.train, 0)
    assert xt.shape == (6, 3, 224, 224) and sorted(yt.tolist()) == [0, 0, 1, 1, 2, 2]
    check_colours(xt, yt)
    assert all(torch.equal(u, v) for u, v in zip(collect(data.train, 0), collect(data.train, 0)))


def test_global_rng_untouched(imagenet_root):
    data = load_dataset("imagenet", root=str(imagenet_root), batch_size=4, workers=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    collect(data.train, 0)
    load_dataset("digits").train.epoch(0).__next__()
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- plain inputs (what exports take)


def normalized(x, plain):
    mean = torch.tensor(plain.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(plain.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def test_every_dataset_describes_its_plain_input():
    for name in set(DATASETS) - {"imagefolder"}:  # its own folder's: test_imagefolder_plain_input
        plain = plain_input(name)
        assert plain.how and (plain.mean is None) == (plain.std is None) == (name == "criteo"), name
        assert plain.range == (None if name == "criteo" else (0.0, 1.0)), name
        assert f"(batch, {', '.join(map(str, dataset_info(name).input_shape))})" in plain.how, name
    assert "/ 16" in plain_input("digits").how and "ToTensor" in plain_input("cifar10").how


def test_plain_digits_normalized_are_the_loaders_inputs():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, te = train_test_split(np.arange(len(digits.target)), test_size=360, random_state=0, stratify=digits.target)
    x = torch.tensor(digits.images[np.sort(te)] / 16, dtype=torch.float32).unsqueeze(1)
    assert torch.equal(normalized(x, plain_input("digits")), load_dataset("digits").test.x)


def test_plain_images_normalized_are_the_loaders_inputs(cifar10_root, tiny_root):
    x, _ = collect(load_dataset("cifar10", root=str(cifar10_root)).test)
    plain = torch.from_numpy(cifar_images(20, (np.arange(20) * 3) % 10)).float() / 255  # ToTensor of the images
    assert torch.equal(normalized(plain, plain_input("cifar10")), x)
    x, _ = collect(load_dataset("tinyimagenet", root=str(tiny_root), workers=0).test)
    names = [line.split("\t")[0] for line in
             (tiny_root / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text().splitlines()]
    plain = torch.stack([TF.to_tensor(Image.open(tiny_root / "tiny-imagenet-200" / "val" / "images" / n).convert("RGB"))
                         for n in names])
    assert torch.allclose(normalized(plain, plain_input("tinyimagenet")), x, atol=1e-6)


# ----------------------------------------------------------------------------- your own image folder, cached lists


@pytest.fixture
def folder(tmp_path):
    """An image folder of 3 classes: 6 training images each (JPEG and PNG, 20-25 x 16 pixels: shorter side 16) and 2
    validation images; a class's images are its colour, a shade darker each."""
    base = tmp_path / "mine"
    for split, n in (("train", 6), ("val", 2)):
        for label, name in enumerate(["cat", "dog", "emu"]):
            for k in range(n):
                path = base / split / name / f"{k}.{'png' if k % 2 else 'jpg'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (20 + k, 16), tuple(max(0, c - 10 * k) for c in COLOURS[label])).save(path)
    return base


@pytest.fixture
def fresh_lists(monkeypatch):
    """This process's memory of folder lists emptied, so that each load reads the cache file (or lists anew)."""
    import common.data

    monkeypatch.setattr(common.data, "_LISTS", {})
    return common.data._LISTS


class Options:
    """The dataset fields of a run's config."""

    def __init__(self, root, dataset="imagefolder", image_size=0, image_mean=(), image_std=()):
        self.dataset, self.data_dir = dataset, str(root)
        self.image_size, self.image_mean, self.image_std = image_size, image_mean, image_std


def test_imagefolder_reads_classes_size_and_normalization_from_the_images(folder, fresh_lists):
    from common.data import sample_normalization, folder_list

    info = dataset_info(Options(folder))
    assert info == DatasetInfo("imagefolder", 3, (3, 16, 16))  # the median shorter side of the images
    data = load_dataset(Options(folder), root=str(folder), batch_size=4, workers=0)
    assert (data.train.num_samples, data.test.num_samples) == (18, 6)
    x, y = collect(data.test)
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 1, 1, 2, 2]
    mean, std = sample_normalization(folder_list(folder), 16)
    assert abs(float(x.mean())) < 1.5 and 0.2 < mean[0] < 0.7 and min(std) > 0.2  # standardized with computed values
    stated = Options(folder, image_size=12, image_mean=(0.5,), image_std=(0.25,))
    assert dataset_info(stated).input_shape == (3, 12, 12)
    x, _ = collect(load_dataset(stated, root=str(folder), workers=0).test)
    pixel = x[0, :, 6, 6] * 0.25 + 0.5  # the centre of the first cat: its colour, in [0, 1]
    assert torch.allclose(pixel, torch.tensor(COLOURS[0]) / 255, atol=0.02) and x.shape == (6, 3, 12, 12)


def test_imagefolder_plain_input(folder, fresh_lists):
    plain = plain_input(Options(folder, image_size=16, image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.3, 0.4)))
    assert (plain.mean, plain.std, plain.range) == ((0.4, 0.5, 0.6), (0.2, 0.3, 0.4), (0.0, 1.0))
    assert "Resize(18) and CenterCrop(16), shape (batch, 3, 16, 16)" in plain.how
    x, _ = collect(load_dataset(Options(folder, image_size=16, image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.3, 0.4)),
                                root=str(folder), workers=0).test)
    import torchvision.transforms as T

    tf = T.Compose([T.Resize(18), T.CenterCrop(16), T.ToTensor()])
    first = tf(Image.open(folder / "val" / "cat" / "0.jpg").convert("RGB"))
    assert torch.allclose(normalized(first[None], plain), x[:1], atol=1e-6)


def test_the_file_list_is_cached_and_rebuilt_when_the_folder_changes(folder, fresh_lists, monkeypatch):
    import common.data
    from common.data import FILE_LIST, folder_list

    first = folder_list(folder)
    assert json.loads((folder / FILE_LIST).read_text())["digest"] == first.digest
    fresh_lists.clear()
    real_scan = common.data._scan
    monkeypatch.setattr(common.data, "_scan", lambda base: pytest.fail("listed again"))
    assert load_dataset(Options(folder), root=str(folder), workers=0).train.num_samples == 18  # read from the cache
    assert folder_list(folder).samples("train") == first.samples("train")
    scans = []
    monkeypatch.setattr(common.data, "_scan", lambda base: scans.append(base) or real_scan(base))
    Image.new("RGB", (16, 16), COLOURS[1]).save(folder / "train" / "dog" / "new.png")  # a new image
    fresh_lists.clear()
    changed = folder_list(folder)
    assert scans == [folder] and len(changed.splits["train"]) == 19 and changed.digest != first.digest
    fresh_lists.clear()
    assert folder_list(folder).digest == changed.digest and scans == [folder]  # the rewritten cache matches again


def test_imagenet_is_listed_once(imagenet_root, fresh_lists, monkeypatch):
    import common.data

    load_dataset("imagenet", root=str(imagenet_root), workers=0)
    assert (imagenet_root / "imagenet" / ".filelist.json").is_file()
    fresh_lists.clear()
    monkeypatch.setattr(common.data, "_scan", lambda base: pytest.fail("listed again"))
    data = load_dataset("imagenet", root=str(imagenet_root), workers=0)
    assert data.train.num_samples == 6 and collect(data.test)[1].tolist() == [0, 1, 2]


def test_a_folder_that_cannot_hold_its_cache_keeps_it_in_the_users_cache(folder, fresh_lists, tmp_path, monkeypatch,
                                                                           capsys):
    import common.data
    from common.data import FILE_LIST, folder_list

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (folder / FILE_LIST).mkdir()  # the cache's place is taken: it cannot be written there
    listed = folder_list(folder)
    (kept,) = (tmp_path / "cache" / "image-folder-lists").iterdir()
    assert json.loads(kept.read_text())["folder"] == str(folder)
    fresh_lists.clear()
    monkeypatch.setattr(common.data, "_scan", lambda base: pytest.fail("listed again"))
    assert folder_list(folder).digest == listed.digest and capsys.readouterr().err == ""


def test_a_run_on_an_image_folder_is_identified_by_its_files_not_its_path(folder, fresh_lists, tmp_path):
    from common import config as C
    from common import pretrain
    from common.store import config_hash

    def run_hash(root, *args):
        return config_hash(C.parse_args(pretrain.Config, ["--dataset", "imagefolder", "--data-dir", str(root), *args]))

    copy = tmp_path / "elsewhere"
    shutil.copytree(folder, copy)
    assert run_hash(folder) == run_hash(copy)  # the same files under another path: the same run
    assert run_hash(folder) != run_hash(folder, "--image-size", "12")
    (copy / "val" / "emu" / "1.png").unlink()
    assert run_hash(folder) != run_hash(copy)
    assert "image_size" not in C.canonical_json(pretrain.Config())  # other datasets: their hashes as before
    with pytest.raises(UserError, match="does not apply to --dataset digits"):
        C.parse_args(pretrain.Config, ["--image-size", "12"])


@pytest.mark.parametrize("layout, message", [
    ("loose", "{base}/train holds no class folders (2 images lie in it directly); put each class's images in a "
              "folder of its own, {base}/train/<class>/"),
    ("empty class", "{base}/train/b holds no image file (.jpg, .jpeg, .png"),
    ("other classes", "{base}/train and {base}/val hold different class folders ('b' is in one only)"),
    ("no val", "image folder not found: expected {base}/train/<class>/<images> and {base}/val/<class>/<images>"),
])
def test_an_image_folder_without_class_folders_is_one_line(tmp_path, layout, message):
    from tests.conftest import one_error_line, run_main

    base = tmp_path / "bad"
    if layout == "loose":
        write_jpeg(base / "train" / "x.jpg", COLOURS[0], (8, 8))
        write_jpeg(base / "train" / "y.jpg", COLOURS[1], (8, 8))
        (base / "val").mkdir()
    else:
        for split in ("train",) + (() if layout == "no val" else ("val",)):
            write_jpeg(base / split / "a" / "x.jpg", COLOURS[0], (8, 8))
        if layout != "no val":
            (base / ("train" if layout == "empty class" else "val") / "b").mkdir()
            if layout == "empty class":
                (base / "val" / "b").mkdir()
                (base / "train" / "b" / "notes.txt").write_text("no images here")
    runs = tmp_path / "runs"
    proc = run_main("common.pretrain", "--dataset", "imagefolder", "--data-dir", base, "--runs-dir", runs)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert line.startswith("error: " + message.format(base=base)), line
    assert not runs.exists() or not list(runs.glob("*/*"))


# ----------------------------------------------------------------------------- data-parallel shards, resumes, workers
class CountingFiles(torch.utils.data.Dataset):
    """Stands in for ImageFiles: item ``(index, aug_seed)`` is ``([index, aug_seed % 1000], index % 3)``; every
    decode is recorded."""

    def __init__(self, n: int):
        self.n, self.decoded = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        self.decoded.append(key[0])
        return torch.tensor([float(key[0]), float(key[1] % 1000)]), key[0] % 3


def _loader(n=23, batch_size=5):
    from common.data import LoaderSplit

    files = CountingFiles(n)
    return LoaderSplit(files, files, batch_size=batch_size, train=True, seed=3, workers=0,
                       device=torch.device("cpu")), files


def _interleave(parts):
    """The rows of a global batch from the ranks' shards (rank r holds rows r, r + W, ...)."""
    out = torch.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, p in enumerate(parts):
        out[r::len(parts)] = p
    return out


def test_loader_split_ranks_decode_only_their_rows_and_together_give_the_one_process_batches():
    split, files = _loader()
    whole = list(split.epoch(1))
    assert sorted(files.decoded) == list(range(23))
    shards = []
    for rank in range(2):
        files.decoded.clear()
        shards.append(list(split.epoch(1, rank=rank, world=2)))
        # exactly this rank's rows of each global batch, each decoded once
        assert files.decoded == [int(i) for x, _ in shards[-1] for i in x[:, 0]]
        assert files.decoded == [int(i) for x, _ in whole for i in x[rank::2, 0]]
    assert len(shards[0]) == len(shards[1]) == len(whole) == 5
    for b, (x, y) in enumerate(whole):
        assert torch.equal(_interleave([shards[r][b][0] for r in range(2)]), x)
        assert torch.equal(_interleave([shards[r][b][1] for r in range(2)]), y)
    assert sorted(i for s in shards for x, _ in s for i in x[:, 0].int().tolist()) == list(range(23))


def test_an_epoch_resumed_at_a_batch_decodes_nothing_before_it():
    split, files = _loader()
    whole = list(split.epoch(2))
    files.decoded.clear()
    rest = list(split.epoch(2, start=3))
    assert len(rest) == 2 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, whole[3:]))
    assert files.decoded == [int(i) for x, _ in whole[3:] for i in x[:, 0]]
    files.decoded.clear()
    part = list(split.epoch(2, start=4, rank=1, world=2))
    assert files.decoded == [int(i) for i in whole[4][0][1::2, 0]] and len(part) == 1


def test_tensor_split_follows_the_same_rule(cifar10_root):
    data = load_dataset("cifar10", root=str(cifar10_root), batch_size=7)
    whole = list(data.train.epoch(1))
    shards = [list(data.train.epoch(1, rank=r, world=3)) for r in range(3)]
    for b, (x, y) in enumerate(whole):
        assert torch.equal(_interleave([s[b][0] for s in shards]), x)   # augmentation included
        assert torch.equal(_interleave([s[b][1] for s in shards]), y)
    later = list(data.train.epoch(1, start=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(later, whole[2:])) and len(later) == len(whole) - 2


def test_a_last_batch_too_small_for_the_ranks_is_a_user_error():
    split, _ = _loader(n=21)  # batches of 5: the last holds 1 sample
    with pytest.raises(UserError, match="the last batch of 1 samples .* cannot give each of the 2 processes a sample"):
        list(split.epoch(0, rank=0, world=2))


def test_workers_auto_follows_the_jobs_cpus(monkeypatch):
    from common.data import auto_workers, resolve_workers

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)  # a task not bound
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "9")
    assert auto_workers() == 8 and resolve_workers("auto") == 8   # one CPU left to the training process
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")                    # torchrun: 2 ranks share the task's CPUs
    assert auto_workers() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    assert auto_workers() == 4
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert auto_workers() == 1
    assert resolve_workers("0") == 0 and resolve_workers(6) == 6   # an explicit number wins
    with pytest.raises(UserError, match="--workers -1 is neither auto nor a number of processes >= 0"):
        resolve_workers("-1")


def test_workers_and_threads_follow_the_cpu_affinity_not_the_jobs_cpu_count(monkeypatch):
    """A site that binds tasks, and srun not given --cpus-per-task: the job says 8 CPUs per task, its task runs on one
    core (as under taskset -c 0). One DataLoader worker and one torch thread there, not 7 workers on that core."""
    from common.data import auto_workers, describe_cpus, process_cpus

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert (process_cpus(), auto_workers()) == (1, 1)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 8, 9}, raising=False)
    assert (process_cpus(), auto_workers()) == (6, 5)
    assert describe_cpus().startswith("cpus: 6 (affinity 0-3,8-9; SLURM_CPUS_PER_TASK 8): ")
    assert describe_cpus().endswith(" torch threads, --workers auto = 5")
    if shutil.which("taskset"):  # the real affinity of a process started on one core
        code = "from common.data import auto_workers, process_cpus; print(process_cpus(), auto_workers())"
        proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, SLURM_CPUS_PER_TASK="8", PYTHONPATH=str(ROOT)), cwd=ROOT,
                              timeout=120)
        assert proc.stdout.split() == ["1", "1"], proc.stderr


def test_bad_workers_is_one_error_line():
    from tests.conftest import one_error_line, run_main

    proc = run_main("common.pretrain", "--model", "mlp", "--train.epochs", "1", "--workers", "many", "--runs-dir",
                    "/nonexistent/never-made")
    assert proc.returncode == 2
    assert one_error_line(proc) == "error: --workers many is neither auto nor a number of processes >= 0"


# ----------------------------------------------------------------------------- the stratified split, without sklearn


def sklearn_split(labels, test_size: int, seed: int):
    """scikit-learn's stratified split of ``labels``' positions, or None where it raises ValueError."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=labels)
    except ValueError:
        return None


def ours_or_none(labels, test_size: int, seed: int):
    from common.data import stratified_split

    try:
        return stratified_split(labels, test_size, seed)
    except ValueError:
        return None


def assert_same_split(labels, test_size: int, seed: int) -> bool:
    """Our split equals scikit-learn's (both parts, in the same order), or both raise ValueError; True if it split."""
    theirs, ours = sklearn_split(labels, test_size, seed), ours_or_none(labels, test_size, seed)
    assert (theirs is None) == (ours is None), (labels, test_size, seed)
    if theirs is not None:
        for a, b in zip(theirs, ours):
            assert np.array_equal(a, b) and a.dtype == b.dtype, (labels, test_size, seed)
    return theirs is not None


def test_stratified_split_is_scikit_learns_on_digits_and_random_labels():
    from common.data import digits_arrays

    target = digits_arrays()[1]
    for test_size, seed in [(360, 0), (360, 1), (100, 0), (1000, 7)]:
        assert assert_same_split(target, test_size, seed)
    assert assert_same_split(np.repeat(np.arange(10), 7), 13, 0)  # all classes tied: the tie broken by the RNG
    rng = np.random.default_rng(0)
    split = refused = 0
    for _ in range(150):  # uneven classes (Dirichlet proportions), every size from tiny to large
        n, k = int(rng.integers(2, 300)), int(rng.integers(1, 15))
        labels = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 0.5))) * 3 - 5  # labels need not be 0..k-1
        ok = assert_same_split(labels, int(rng.integers(1, n)), int(rng.integers(0, 2**31)))
        split, refused = split + ok, refused + (not ok)
    assert split > 40 and refused > 40  # both outcomes well exercised


def test_stratified_split_raises_where_scikit_learn_does():
    from common.data import stratified_split

    cases = [(np.array([0, 0, 1, 1, 2]), 2),      # a class of one sample
             (np.repeat(np.arange(10), 5), 9),    # fewer test samples than classes
             (np.repeat(np.arange(10), 5), 41),   # fewer train samples than classes
             (np.repeat(np.arange(3), 4), 0), (np.repeat(np.arange(3), 4), 12)]  # nothing to test / to train
    for labels, test_size in cases:
        assert sklearn_split(labels, test_size, 0) is None
        with pytest.raises(ValueError):
            stratified_split(labels, test_size, 0)


def test_stratified_split_is_scikit_learns_on_fashionmnist_validation_splits():
    import common.data as D

    folder = D.fashion_folder(Path("data"))
    if folder is None:
        pytest.skip("Fashion-MNIST is not installed (Debian's dataset-fashion-mnist)")
    labels = D.read_idx(D._idx_file(folder, D.FASHION_FILES["train"][1]))
    assert len(labels) == 60000
    for val_size in (100, 1000, 10000):  # the --val-size values the recipes and figures use
        assert assert_same_split(labels, val_size, D.VAL_SPLIT_SEED)
    assert assert_same_split(labels, 1000, 3)


def test_digits_read_directly_are_load_digits():
    from sklearn.datasets import load_digits

    from common.data import digits_arrays

    images, target = digits_arrays()
    digits = load_digits()
    assert images.dtype == digits.images.dtype and np.array_equal(images, digits.images)
    assert target.dtype == digits.target.dtype and np.array_equal(target, digits.target)


def test_loading_data_imports_no_scikit_learn():
    code = ("import sys, common.data as d; data = d.load_dataset('digits', val_size=100); "
            "print(data.train.num_samples, data.val.num_samples, 'sklearn' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.split() == ["1337", "100", "False"], proc.stderr


def test_digits_without_scikit_learn_is_one_error_line(tmp_path):
    """A scikit-learn without its bundled digits file (here an empty package found first on the path)."""
    from tests.conftest import one_error_line, run_cli

    (tmp_path / "sklearn").mkdir()
    (tmp_path / "sklearn" / "__init__.py").write_text("")
    proc = run_cli("common.pretrain", "--dataset", "digits", "--model", "mlp", "--train.epochs", "1", "--runs-dir",
                   tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 2
    expected = tmp_path / "sklearn" / "datasets" / "data" / "digits.csv.gz"
    assert one_error_line(proc) == (f"error: the digits data set not found: expected {expected}; (re)install "
                                    f"scikit-learn (pip install scikit-learn), which bundles it")
    assert not list((tmp_path / "runs").rglob("*.json"))  # nothing stored
