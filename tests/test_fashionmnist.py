"""Fashion-MNIST (common/data.py): the official IDX files, written small in their real format, read through the real
loader from every place it looks; the real files too where Debian's dataset-fashion-mnist put them."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from common import data as D
from common.data import load_dataset, plain_input
from common.errors import DatasetMissing, UserError
from tests.conftest import one_error_line, run_main

NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file: 0x0000, type 0x08 (uint8), the number of dimensions, each dimension as a big-endian uint32."""
    return bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()


def images(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) images whose pixel (0, 0) is the sample's index and pixel (27, 27) 25 * its label."""
    labels = (np.arange(n) + offset) % 10
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 0, 0] = np.arange(n) % 256
    x[:, 27, 27] = 25 * labels
    return x, labels


def write_fashion(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = images(n, offset=3 if split == "test" else 0)
        for name, a in zip(NAMES[split], (x, y)):
            raw = idx_bytes(a)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Debian's location made empty, so that only --data-dir counts."""
    monkeypatch.setattr(D, "FASHION_DEBIAN", tmp_path / "no-debian")


@pytest.mark.parametrize("layout", ["FashionMNIST/raw", "", "plain-files"])
def test_loader_reads_the_idx_files_of_each_layout(tmp_path, no_debian, layout):
    root = tmp_path / "data"
    write_fashion(root / layout if layout != "plain-files" else root, gz=layout != "plain-files")
    data = load_dataset("fashionmnist", root=str(root))
    assert data.train.num_samples == 40 and data.test.num_samples == 20
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape == (40, 1, 28, 28)
    x, y = next(iter(data.test))
    assert y.tolist() == ((np.arange(20) + 3) % 10).tolist()                   # test split, in file order
    mean, std = D.FASHION_MEAN[0], D.FASHION_STD[0]
    torch.testing.assert_close(x[:, 0, 0, 0], (torch.arange(20.0) / 255 - mean) / std)
    torch.testing.assert_close(x[:, 0, 27, 27], (25.0 * y / 255 - mean) / std)  # labels stay with their images
    assert D.dataset_info("fashionmnist").input_shape == (1, 28, 28)


def test_validation_carve_out_and_plain_input(tmp_path, no_debian):
    write_fashion(tmp_path)
    data = load_dataset("fashionmnist", root=str(tmp_path), val_size=10)
    assert data.train.num_samples == 30 and data.val.num_samples == 10
    plain = plain_input("fashionmnist")
    x = torch.from_numpy(images(20, 3)[0]).float().unsqueeze(1) / 255
    torch.testing.assert_close((x - plain.mean[0]) / plain.std[0], data.test._normalize(data.test.x))


def test_missing_files_name_every_place_looked(tmp_path, no_debian):
    with pytest.raises(DatasetMissing) as e:
        load_dataset("fashionmnist", root=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "FashionMNIST" / "raw") in msg and "dataset-fashion-mnist" in msg
    assert "train-images-idx3-ubyte.gz" in msg and "--download" in msg


@pytest.mark.parametrize("damage, expected", [
    (lambda raw: b"\x00\x00\x0d\x03" + raw[4:], "not an IDX file of uint8"),
    (lambda raw: raw[:-5], "truncated"),
    (lambda raw: raw[:10], "less than its header of 16; the file is truncated"),
])
def test_damaged_files_are_one_line_errors(tmp_path, no_debian, damage, expected):
    write_fashion(tmp_path, gz=False)
    path = tmp_path / NAMES["train"][0]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError) as e:
        load_dataset("fashionmnist", root=str(tmp_path))
    assert expected in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_labels_beyond_ten_classes_are_refused(tmp_path, no_debian):
    write_fashion(tmp_path, gz=False)
    (tmp_path / NAMES["test"][1]).write_bytes(idx_bytes(np.full(20, 12)))
    with pytest.raises(UserError, match="label 12; Fashion-MNIST has 10 classes"):
        load_dataset("fashionmnist", root=str(tmp_path))


def test_download_uses_torchvision_into_its_layout(tmp_path, no_debian, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake(root, train, download):  # stands in for the network download: writes what torchvision writes
        calls.append(train)
        write_fashion(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake)
    assert load_dataset("fashionmnist", root=str(tmp_path), download=True).test.num_samples == 20
    assert calls == [True, False]


def test_fetch_says_in_one_line_what_it_did(tmp_path, no_debian, monkeypatch):
    import shutil

    write_fashion(tmp_path / "have")
    assert D.fetch_fashionmnist(tmp_path / "have") == f"Fashion-MNIST: found in {tmp_path / 'have'}"
    monkeypatch.setattr(shutil, "which", lambda name: None)                    # a machine without apt-get
    monkeypatch.setattr(D, "download_fashionmnist", lambda root: write_fashion(root / "FashionMNIST" / "raw"))
    msg = D.fetch_fashionmnist(tmp_path / "new")
    assert msg == f"Fashion-MNIST: apt-get is not available; downloaded into {tmp_path / 'new' / 'FashionMNIST' / 'raw'}"

    def offline(root):
        raise UserError("downloading Fashion-MNIST into x failed (URLError: no route to host)")

    monkeypatch.setattr(D, "download_fashionmnist", offline)
    with pytest.raises(UserError) as e:
        D.fetch_fashionmnist(tmp_path / "offline")
    assert str(e.value).startswith("Fashion-MNIST: apt-get is not available, and downloading") and "\n" not in str(e.value)


def test_a_script_without_the_data_fails_in_one_line(tmp_path, monkeypatch):
    """Exit code 2 and one line naming where the files were looked for (Debian's location pointed elsewhere)."""
    monkeypatch.setattr(D, "FASHION_DEBIAN", tmp_path / "none")
    proc = run_main("common.pretrain", "--dataset", "fashionmnist", "--data-dir", tmp_path, "--runs-dir",
                    tmp_path / "runs", "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert "Fashion-MNIST not found" in line and str(tmp_path / "FashionMNIST" / "raw") in line


@pytest.mark.skipif(D.fashion_folder(Path("/nonexistent")) is None,
                    reason="Debian's dataset-fashion-mnist is not installed on this machine")
def test_the_real_files_load_as_the_official_dataset():
    data = load_dataset("fashionmnist", root="/nonexistent")
    assert data.train.num_samples == 60000 and data.test.num_samples == 10000
    assert torch.bincount(data.test.y).tolist() == [1000] * 10
    assert torch.bincount(data.train.y).tolist() == [6000] * 10
    pixels = data.train.x.float() / 255
    assert pixels.mean().item() == pytest.approx(D.FASHION_MEAN[0], abs=5e-4)
    assert pixels.std().item() == pytest.approx(D.FASHION_STD[0], abs=5e-4)


def test_gzipped_files_get_plain_copies_that_load_the_same(tmp_path, monkeypatch):
    """Debian's gzipped files are copied plain into root/FashionMNIST/raw once (the figures pipeline does it before
    any run): the loader then reads the copies, and gets the same tensors; a second call has nothing to do."""
    debian = tmp_path / "debian"
    write_fashion(debian)
    monkeypatch.setattr(D, "FASHION_DEBIAN", debian)
    root = tmp_path / "data"
    before = load_dataset("fashionmnist", root=str(root))
    said = D.unpack_fashionmnist(root)
    assert said is not None and str(root / "FashionMNIST" / "raw") in said
    assert D.fashion_folder(root) == root / "FashionMNIST" / "raw"
    names = sorted(n for v in NAMES.values() for n in v)
    assert sorted(p.name for p in (root / "FashionMNIST" / "raw").iterdir()) == names
    after = load_dataset("fashionmnist", root=str(root))
    for split in ("train", "test"):
        assert torch.equal(getattr(before, split).x, getattr(after, split).x)
        assert torch.equal(getattr(before, split).y, getattr(after, split).y)
    assert D.unpack_fashionmnist(root) is None


def test_a_damaged_gzipped_file_is_refused_not_copied(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_fashion(debian)
    path = debian / f"{NAMES['test'][0]}.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    monkeypatch.setattr(D, "FASHION_DEBIAN", debian)
    with pytest.raises(UserError, match="the file is truncated") as e:
        D.unpack_fashionmnist(tmp_path / "data")
    assert str(path) in str(e.value)
    assert not (tmp_path / "data" / "FashionMNIST" / "raw" / NAMES["test"][0]).exists()
