"""Datasets: loading, splitting, batching and (deterministic) augmentation.

Every dataset is turned into a :class:`Data` holding a ``train``, optional ``val`` and
``test`` :class:`Split`.  A split is iterated one epoch at a time with
``split.epoch(e)``, yielding ``(x, y)`` batches already on the run's device.

Two kinds of split exist:

* :class:`TensorSplit` keeps the whole dataset as a tensor on the device (digits,
  CIFAR).  Shuffling and augmentation (random crop with zero padding + horizontal
  flip) are done on the device, vectorized over the batch.
* :class:`LoaderSplit` decodes JPEG files with a ``DataLoader`` (Tiny-ImageNet,
  ImageNet, your own image folder: ``imagefolder``).

Image folders (ImageNet, ``imagefolder``) are listed as torchvision's ``ImageFolder`` lists
them, once: the list is cached as JSON beside the images (:func:`folder_list`).

Determinism: all training randomness of epoch ``e`` comes from a private
``torch.Generator`` seeded from ``(seed, e)``, never from the global RNG, so a run
resumed at epoch ``e`` (or at batch ``s`` of it: ``epoch(e, start=s)``, which
decodes nothing before batch ``s``) sees exactly the batches an uninterrupted run
would see.

Data-parallel runs: ``epoch(e, rank=r, world=W)`` yields only rank ``r``'s rows of
each global batch (``common.distributed.shard_rows``: rows r, r + W, ...), from the
epoch's global order computed identically on every rank, so the ranks' rows of a step
together are the one-process batch and every sample is loaded by one rank only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common import criteo
from common.distributed import barrier, shard_rows
from common.errors import DatasetMissing, UserError

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Seed of the validation carve-out: fixed, so every run seed sees the same split.
VAL_SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, stream)`` through a hash (SeedSequence),
    so that nearby seeds/epochs give unrelated streams."""
    mixed = np.random.SeedSequence([seed % 2**64, epoch % 2**64, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))


# --------------------------------------------------------------------------- splits


class Split:
    """An iterable of ``(x, y)`` batches on the device; ``epoch(e)`` is one pass."""

    num_samples: int
    batch_size: int

    def __len__(self) -> int:
        """Batches per epoch (the last one may be smaller)."""
        return math.ceil(self.num_samples / self.batch_size)

    def rows(self, batch: int) -> range:
        """Positions (in the epoch's order) of the rows of global batch ``batch``."""
        return range(batch * self.batch_size, min((batch + 1) * self.batch_size, self.num_samples))

    def shards(self, start: int, rank: int, world: int) -> Iterator[range]:
        """Rank ``rank``'s positions of each global batch from batch ``start`` on: the one rule of both splits."""
        if world > 1 and len(self.rows(len(self) - 1)) < world:
            raise UserError(f"the last batch of {len(self.rows(len(self) - 1))} samples ({self.num_samples} samples "
                            f"in batches of {self.batch_size}) cannot give each of the {world} processes a sample; "
                            f"change the batch size or the number of processes")
        for b in range(start, len(self)):
            yield shard_rows(self.rows(b), rank, world)

    def epoch(self, epoch: int, start: int = 0, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass from global batch ``start`` on; with ``world > 1`` only rank ``rank``'s rows of each batch."""
        raise NotImplementedError

    def take(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The samples at ``indices`` (positions in this split), un-augmented, on the device."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(0)


def crop_flip(x: Tensor, pad: int, offsets: Tensor, flips: Tensor) -> Tensor:
    """Per-sample random crop + horizontal flip of a batch, as one gather.

    ``x`` is (B, C, H, W) raw pixels; it is zero-padded by ``pad`` on every side, the
    H x W window at ``offsets[b] = (top, left)`` of the padded image is cut out and,
    where ``flips[b]``, mirrored left-right.  Same result as torchvision's
    ``RandomCrop((H, W), padding=pad)`` followed by ``RandomHorizontalFlip``.
    """
    b, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x  # zero padding of the raw pixels
    hp, wp = h + 2 * pad, w + 2 * pad
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = offsets[:, 0, None] + ar_h  # (B, H) source rows in the padded image
    cols = offsets[:, 1, None] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    # One gather over the flattened padded images (much faster than 4-way advanced indexing).
    src = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return xp.reshape(b, c, hp * wp).gather(2, src).view(b, c, h, w)


class TensorSplit(Split):
    """A split held entirely as tensors on the device.

    ``x`` is either ready-to-use float data (``mean``/``std`` None) or raw uint8
    pixels, which are converted per batch to ``(x / 255 - mean) / std``.  A training
    split is reshuffled every epoch and, if ``pad``/``flip`` are set, augmented.
    """

    def __init__(self, x: Tensor, y: Tensor, *, batch_size: int, train: bool, seed: int = 0,
                 pad: int = 0, flip: bool = False, mean=None, std=None):
        self.x, self.y = x, y
        self.num_samples = len(y)
        self.batch_size = batch_size
        self.train, self.seed = train, seed
        self.pad, self.flip = (pad, flip) if train else (0, False)
        self.mean = self.std = None
        if mean is not None:
            shape = (1, -1, 1, 1)
            self.mean = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape)
            self.std = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape)

    def _normalize(self, x: Tensor) -> Tensor:
        if self.mean is None:
            return x
        # Same float ops as torchvision's ToTensor + Normalize.
        return x.float().div_(255).sub_(self.mean).div_(self.std)

    def epoch(self, epoch: int, start: int = 0, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        n, dev = self.num_samples, self.x.device
        offsets = flips = None
        if self.train:
            # Draw the whole epoch's randomness at once on the CPU (device-independent),
            # then move it to the device in one transfer.
            g = epoch_generator(self.seed, epoch)
            order = torch.randperm(n, generator=g)
            if self.pad or self.flip:
                offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
                flips = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
                offsets, flips = offsets.to(dev), flips.to(dev)
            order = order.to(dev)
        for rows in self.shards(start, rank, world):
            sl = slice(rows.start, rows.stop, rows.step)
            if self.train:
                idx = order[sl]
                xb, yb = self.x[idx], self.y[idx]
                if offsets is not None:
                    xb = crop_flip(xb, self.pad, offsets[sl], flips[sl])
            else:
                xb, yb = self.x[sl], self.y[sl]
            yield self._normalize(xb), yb

    def take(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        indices = indices.to(self.x.device)
        return self._normalize(self.x[indices]), self.y[indices]


class ImageFiles(torch.utils.data.Dataset):
    """Images listed as ``(path, label)``; items are addressed by ``(index, aug_seed)``.

    ``aug_seed >= 0`` runs the (random) transform under a private RNG seeded with it,
    so augmentation is reproducible whatever the number of workers and leaves the
    global RNG of the calling process untouched; ``aug_seed < 0`` means no seeding
    (for deterministic eval transforms).
    """

    def __init__(self, samples: list[tuple[str, int]], transform: Callable):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        from PIL import Image

        index, aug_seed = key
        path, label = self.samples[index]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        if aug_seed < 0:
            return self.transform(img), label
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(aug_seed)  # CPU only: CUDA RNG untouched
            return self.transform(img), label


class LoaderSplit(Split):
    """A split decoded from image files by a ``DataLoader`` with ``workers`` processes (see :func:`auto_workers`).

    ``dataset`` applies this split's transform (augmenting for training); ``plain``
    holds the same samples with the eval transform (used by :meth:`take`).
    """

    def __init__(self, dataset: ImageFiles, plain: ImageFiles, *, batch_size: int, train: bool,
                 seed: int, workers: int, device: torch.device):
        self.dataset, self.plain = dataset, plain
        self.num_samples = len(dataset)
        self.batch_size = batch_size
        self.train, self.seed = train, seed
        self.workers, self.device = workers, device

    def _batches(self, dataset: ImageFiles, batches: list[list[tuple[int, int]]], epoch: int):
        """Decode exactly the listed batches of ``(index, aug_seed)`` keys."""
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches,
            num_workers=self.workers, pin_memory=self.device.type == "cuda",
            # Worker base seeds come from here (the transforms themselves are seeded per sample).
            generator=epoch_generator(self.seed, epoch, stream=1),
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def epoch(self, epoch: int, start: int = 0, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        n = self.num_samples
        if self.train:
            g = epoch_generator(self.seed, epoch)
            order = torch.randperm(n, generator=g).tolist()
            seeds = torch.randint(0, 2**62, (n,), generator=g).tolist()
            keys = list(zip(order, seeds))
        else:
            keys = [(i, -1) for i in range(n)]
        return self._batches(self.dataset, [[keys[i] for i in rows] for rows in self.shards(start, rank, world)],
                             epoch)

    def take(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        keys = [(int(i), -1) for i in indices]
        batches = [keys[i:i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        xs, ys = zip(*self._batches(self.plain, batches, 0))
        return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------- Data


@dataclass
class Data:
    info: DatasetInfo
    train: Split
    val: Split | None
    test: Split

    def sample(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` distinct training samples (seeded, without replacement), not augmented."""
        total = self.train.num_samples
        if not 1 <= n <= total:
            raise UserError(f"cannot draw {n} samples from the {self.info.name} training set, "
                            f"which has {total}; ask for between 1 and {total}")
        indices = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
        return self.train.take(indices)


def stratified_split(labels: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions of ``labels``, ``test_size`` of them in test, each class shared between the two in
    proportion to its size.

    Reproduces scikit-learn's ``train_test_split(np.arange(n), test_size=test_size, random_state=seed,
    stratify=labels)`` (its ``StratifiedShuffleSplit``): the same positions in the same order, from the same draws of
    ``np.random.RandomState(seed)``, so the splits made with it (digits' train/test, every ``--val-size``) and the
    runs trained on them are unchanged, while a process that loads a dataset no longer imports scikit-learn (about
    2.5 s of start-up each). Raises ValueError where it does: ``test_size`` not in 1..n-1, a class of one sample,
    fewer train or test samples than classes."""
    n = len(labels)
    if not 0 < test_size < n:
        raise ValueError(f"test_size {test_size} is not between 1 and {n - 1}")
    train_size = n - test_size
    classes, class_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(f"classes {classes[counts < 2].tolist()} have a single sample")
    if min(train_size, test_size) < len(classes):
        raise ValueError(f"{train_size} train / {test_size} test samples cannot hold each of {len(classes)} classes")
    members = np.split(np.argsort(class_of, kind="stable"), np.cumsum(counts)[:-1])  # each class's positions, in order
    rng = np.random.RandomState(seed)
    to_train = _proportional(counts, train_size, rng)
    to_test = _proportional(counts - to_train, test_size, rng)
    train, test = [], []
    for mine, size, k, t in zip(members, counts, to_train, to_test):
        shuffled = mine[rng.permutation(size)]
        train.append(shuffled[:k])
        test.append(shuffled[k:k + t])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _proportional(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """``draws`` shared among classes of ``counts`` members in proportion: each class gets the floor of its share,
    the samples left over go to the largest fractional parts first, a tie that cannot all be served broken by
    ``rng`` (the approximate mode of the multivariate hypergeometric, as scikit-learn allocates it)."""
    share = counts / counts.sum() * draws
    given = np.floor(share)
    left = int(draws - given.sum())
    fraction = share - given
    for value in np.unique(fraction)[::-1]:
        if left <= 0:
            break
        tied = np.flatnonzero(fraction == value)
        served = min(len(tied), left)
        given[rng.choice(tied, size=served, replace=False)] += 1
        left -= served
    return given.astype(int)


def carve_val(labels: np.ndarray, val_size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Split training positions into (train, val) with a fixed seed, independent of the
    run seed: stratified by label when possible, otherwise uniformly at random."""
    n = len(labels)
    if not 0 < val_size < n:
        raise UserError(f"--val-size {val_size} is out of range for {name}, whose training set has "
                        f"{n} samples; use a value between 1 and {n - 1} (or 0 for no validation split)")
    try:
        train, val = stratified_split(labels, val_size, VAL_SPLIT_SEED)
    except ValueError:  # too few samples per class (or val_size < num_classes) to stratify
        perm = np.random.default_rng(VAL_SPLIT_SEED).permutation(n)
        train, val = perm[val_size:], perm[:val_size]
    return np.sort(train), np.sort(val)


@dataclass(frozen=True)
class ImageOptions:
    """How an image folder (``imagefolder``) is fed to the model: the side of its square inputs and the per-channel
    mean and std of their pixels in [0, 1]; 0 and empty: computed from a sample of its training images
    (:func:`image_options`)."""

    size: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclass(frozen=True)
class _Options:
    """The arguments of :func:`load_dataset` passed on to a dataset's loader."""

    root: Path
    download: bool
    device: torch.device
    batch_size: int
    eval_batch_size: int
    seed: int
    val_size: int
    workers: int
    image: ImageOptions = field(default_factory=ImageOptions)


def _tensor_data(info: DatasetInfo, o: _Options, x_train: Tensor, y_train: Tensor, x_test: Tensor,
                 y_test: Tensor, **aug) -> Data:
    """Data made of TensorSplits (moved to the device); ``aug`` holds pad/flip/mean/std."""
    norm = {k: aug[k] for k in ("mean", "std") if k in aug}
    to = lambda t: t.to(o.device)  # noqa: E731
    val = None
    if o.val_size:
        tr, va = (torch.from_numpy(i) for i in carve_val(y_train.numpy(), o.val_size, info.name))
        val = TensorSplit(to(x_train[va]), to(y_train[va]), batch_size=o.eval_batch_size, train=False, **norm)
        x_train, y_train = x_train[tr], y_train[tr]
    train = TensorSplit(to(x_train), to(y_train), batch_size=o.batch_size, train=True, seed=o.seed, **aug)
    test = TensorSplit(to(x_test), to(y_test), batch_size=o.eval_batch_size, train=False, **norm)
    return Data(info, train, val, test)


def _file_data(info: DatasetInfo, o: _Options, train_samples, test_samples, train_tf, eval_tf) -> Data:
    """Data made of LoaderSplits over ``(path, label)`` lists."""
    labels = [label for _, label in list(train_samples) + list(test_samples)]
    if labels and not 0 <= min(labels) <= max(labels) < info.num_classes:
        raise UserError(f"{info.name} has labels outside 0..{info.num_classes - 1} "
                        f"(more than {info.num_classes} classes?); check the dataset folder")
    split = lambda samples, tf, train, bs: LoaderSplit(  # noqa: E731
        ImageFiles(samples, tf), ImageFiles(samples, eval_tf), batch_size=bs, train=train,
        seed=o.seed, workers=o.workers, device=o.device)
    val = None
    if o.val_size:
        tr, va = carve_val(np.array([lab for _, lab in train_samples]), o.val_size, info.name)
        val = split([train_samples[i] for i in va], eval_tf, False, o.eval_batch_size)
        train_samples = [train_samples[i] for i in tr]
    train = split(train_samples, train_tf, True, o.batch_size)
    test = split(test_samples, eval_tf, False, o.eval_batch_size)
    return Data(info, train, val, test)


def _missing(what: str, expected: str, hint: str = "pass --download or point --data-dir at the folder that holds it"):
    return DatasetMissing(f"{what} not found: expected {expected}; {hint}")


# --------------------------------------------------------------------------- digits


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 of pixels 0..16, labels int): what ``sklearn.datasets.load_digits()`` gives as
    ``images`` and ``target``, read as it reads them (comma-separated floats, 64 pixels then the label per line) from
    the file scikit-learn bundles, found without importing scikit-learn (about 2.5 s of start-up)."""
    import gzip
    import importlib.util

    package = importlib.util.find_spec("sklearn")  # a top-level package: located, not imported
    files = [Path(f) / "datasets" / "data" / "digits.csv.gz" for f in package.submodule_search_locations or []] \
        if package is not None else []
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        expected = files[0] if files else "sklearn/datasets/data/digits.csv.gz in the installed scikit-learn"
        raise _missing("the digits data set", expected,
                       "(re)install scikit-learn (pip install scikit-learn), which bundles it")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def _digits() -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]:
    """(plain images pixel / 16 in [0, 1] (N, 1, 8, 8), labels, train and test positions of the fixed stratified
    1437/360 split, (mean, std) of the training images): the standardization statistics are those of the whole
    1437-sample training portion (before any validation carve-out, so they do not depend on --val-size)."""
    images, target = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).div_(16).unsqueeze(1)  # pixels 0..16 -> [0, 1]
    y = torch.tensor(target, dtype=torch.long)
    tr, te = stratified_split(target, 360, 0)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    return x, y, tr, te, (x[tr].mean(), x[tr].std())


def _load_digits(info: DatasetInfo, o: _Options) -> Data:
    """scikit-learn's bundled 8x8 digits with a fixed stratified 1437/360 train/test split, standardized."""
    x, y, tr, te, (mean, std) = _digits()
    x = (x - mean) / std
    return _tensor_data(info, o, x[tr], y[tr], x[te], y[te])


# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)  # of the 60,000 training images, pixels / 255
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000)}
# where Debian's package dataset-fashion-mnist installs the four official files (`dpkg -L dataset-fashion-mnist`)
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _idx_bytes(path: Path) -> tuple[bytes, tuple[int, ...], int]:
    """One IDX file's bytes (inflated when gzipped), its shape and the offset of its data, from its big-endian header
    (two zero bytes, type 0x08 = uint8, the number of dimensions, then each dimension as a uint32); refused unless
    the bytes are a whole IDX file of uint8."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path} cannot be read as an IDX file ({type(e).__name__}: {' '.join(str(e).split())}); "
                        f"fetch the official file again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of uint8 (its header is {raw[:4].hex() or 'empty'}, expected "
                        f"0000 08 <ndim>); fetch the official file again")
    offset = 4 + 4 * raw[3]
    if len(raw) < offset:
        raise UserError(f"{path} holds {len(raw)} bytes, less than its header of {offset}; the file is truncated, "
                        f"fetch it again")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=raw[3], offset=4))
    if len(raw) - offset != math.prod(shape):
        raise UserError(f"{path} holds {len(raw) - offset} bytes of data where its header {shape} says "
                        f"{math.prod(shape)}; the file is truncated, fetch it again")
    return raw, shape, offset


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzipped) as an array of uint8 (:func:`_idx_bytes` checks it)."""
    raw, shape, offset = _idx_bytes(path)
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def fashion_folder(root: Path) -> Path | None:
    """The first folder that holds the four official files (each plain or .gz): torchvision's layout
    ``root/FashionMNIST/raw``, ``root`` itself, then Debian's package location; None if none does. A ``root`` that is
    a file is refused (:func:`data_root`), not passed over for Debian's copy."""
    root = data_root(root)
    for folder in (root / "FashionMNIST" / "raw", root, FASHION_DEBIAN):
        if all(_idx_file(folder, name) for split in FASHION_FILES.values() for name in split[:2]):
            return folder
    return None


def _idx_file(folder: Path, name: str) -> Path | None:
    return next((p for p in (folder / f"{name}.gz", folder / name) if p.is_file()), None)


def download_fashionmnist(root: Path) -> None:
    """Fetch the four files into ``root/FashionMNIST/raw`` with torchvision's downloader."""
    import torchvision.datasets

    try:
        for train in (True, False):
            torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
    except Exception as e:  # network or disk problem: report it on one line
        raise UserError(f"downloading Fashion-MNIST into {root} failed ({type(e).__name__}: "
                        f"{' '.join(str(e).split())}); install Debian's dataset-fashion-mnist or fetch the four "
                        f"files by hand") from None


def fetch_fashionmnist(root: Path) -> str:
    """Get Fashion-MNIST where it is missing: Debian's package where ``apt-get`` runs as root, otherwise torchvision's
    download into ``root``. Returns one line saying what was done; raises UserError (one line) when neither works."""
    import shutil
    import subprocess

    found = fashion_folder(root)
    if found is not None:
        return f"Fashion-MNIST: found in {found}"
    why = "apt-get is not available" if shutil.which("apt-get") is None else \
        "not root, so apt-get cannot install" if os.geteuid() != 0 else ""
    if not why:
        install = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        ok = subprocess.run(install, env=env, capture_output=True).returncode == 0
        if not ok:  # an empty or stale package list: refresh it once
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            ok = subprocess.run(install, env=env, capture_output=True).returncode == 0
        if ok and fashion_folder(root) is not None:
            return f"Fashion-MNIST: installed Debian's dataset-fashion-mnist ({FASHION_DEBIAN})"
        why = "apt-get install dataset-fashion-mnist failed"
    try:
        download_fashionmnist(root)
    except UserError as e:
        raise UserError(f"Fashion-MNIST: {why}, and {e}") from None
    return f"Fashion-MNIST: {why}; downloaded into {root / 'FashionMNIST' / 'raw'}"


def unpack_fashionmnist(root) -> str | None:
    """Write plain (decompressed) copies of the four files into ``root/FashionMNIST/raw`` where the folder that holds
    them has only the gzipped ones (Debian's package): every run then reads 55 MB of plain IDX files instead of
    inflating 30 MB (~0.6 s a run on a laptop core). Returns one line saying so, or None when there is nothing to do
    (no files found, or plain ones already read first)."""
    from common.atomic import atomic_write

    folder = fashion_folder(root)
    if folder is None:
        return None
    names = [name for split in FASHION_FILES.values() for name in split[:2]]
    if all(_idx_file(folder, name).suffix != ".gz" for name in names):
        return None
    target = data_root(root) / "FashionMNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (target / name).is_file():
            raw, _, _ = _idx_bytes(_idx_file(folder, name))  # inflated once; a damaged file is refused
            atomic_write(target / name, lambda tmp, raw=raw: Path(tmp).write_bytes(raw))
    return f"Fashion-MNIST: plain copies of {folder}'s gzipped files in {target} (read faster by every run)"


def _read_fashion(folder: Path, split: str) -> tuple[Tensor, Tensor]:
    images, labels, count = FASHION_FILES[split]
    x, y = read_idx(_idx_file(folder, images)), read_idx(_idx_file(folder, labels))
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
        raise UserError(f"{folder}: {images} has shape {x.shape} and {labels} {y.shape}; expected (N, 28, 28) "
                        f"images with N labels")
    if y.max(initial=0) > 9:
        raise UserError(f"{folder}/{labels} has label {int(y.max())}; Fashion-MNIST has 10 classes (0..9)")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def _load_fashionmnist(info: DatasetInfo, o: _Options) -> Data:
    """The official Fashion-MNIST (60,000 train / 10,000 test, 28x28 grey), uint8 on the device, standardized per
    batch with the training set's mean and std; no augmentation."""
    folder = fashion_folder(o.root)
    if folder is None and o.download:
        download_fashionmnist(o.root)
        folder = fashion_folder(o.root)
    if folder is None:
        names = ", ".join(f"{n}.gz" for split in FASHION_FILES.values() for n in split[:2])
        raise _missing("Fashion-MNIST", f"{names} in {o.root / 'FashionMNIST' / 'raw'}, in {o.root} or in "
                       f"{FASHION_DEBIAN}", "pass --download, install Debian's dataset-fashion-mnist, or point "
                       "--data-dir at the folder that holds them")
    return _tensor_data(info, o, *_read_fashion(folder, "train"), *_read_fashion(folder, "test"),
                        mean=FASHION_MEAN, std=FASHION_STD)


# --------------------------------------------------------------------------- CIFAR


_INTEGER_CODES = {f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8)}


class _PickledDType:
    """``numpy.dtype`` as a pickle rebuilds it (called with its code, then given its state): only an integer type
    becomes a real dtype (``numpy()``), anything else is refused."""

    def __init__(self, code=None, align=False, copy=True):
        self.code = code.decode("latin-1") if isinstance(code, bytes) else code
        self.order = "|"

    def __setstate__(self, state):
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        self.order = order.decode("latin-1") if isinstance(order, bytes) else order

    def numpy(self) -> np.dtype:
        if self.code not in _INTEGER_CODES or self.order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"an array of dtype {self.code!r}")
        return np.dtype(self.code).newbyteorder("=" if self.order == "|" else self.order)


def _pickled_array(raw, dtype, shape, fortran) -> np.ndarray:
    """An integer array from the bytes a pickle holds, checked against its dtype and shape."""
    if not (isinstance(raw, (bytes, bytearray)) and isinstance(dtype, _PickledDType) and isinstance(shape, tuple)
            and all(type(n) is int and n >= 0 for n in shape)):
        raise pickle.UnpicklingError("an array that is not plain integer data")
    dtype = dtype.numpy()
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise pickle.UnpicklingError(f"an array of shape {shape} with {len(raw)} bytes")
    return np.frombuffer(bytes(raw), dtype).reshape(shape, order="F" if fortran else "C")


class _PickledArray:
    """``numpy.core.multiarray._reconstruct`` (an empty array, then its state: shape, dtype, order, bytes) as a
    pickle of numpy < 2 or of protocol < 5 rebuilds an array; the array itself is ``array``."""

    def __init__(self, *_):
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array without its state")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _pickled_array(raw, dtype, shape, bool(fortran))


def _latin1(text, encoding="utf-8"):
    """``_codecs.encode``: how protocol 2 pickles bytes under Python 3."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode of anything but latin-1 text")
    return text.encode("latin-1")


class _CifarUnpickler(pickle.Unpickler):
    """Reads an official CIFAR python batch (a dict of bytes, lists of ints and one uint8 array, pickled by Python 2
    or 3, numpy 1 or 2) as data: the only names it resolves are the handful such a file uses, each to a stand-in that
    builds integer arrays from bytes; any other class or function refuses the file, so reading it runs no code."""

    NAMES = {("numpy", "dtype"): _PickledDType, ("numpy", "ndarray"): "numpy.ndarray",  # an argument, never called
             ("numpy.core.multiarray", "_reconstruct"): _PickledArray,
             ("numpy._core.multiarray", "_reconstruct"): _PickledArray,
             ("numpy.core.numeric", "_frombuffer"): lambda raw, dtype, shape, order: _pickled_array(
                 raw, dtype, tuple(shape), order in ("F", b"F")),
             ("_codecs", "encode"): _latin1}
    NAMES[("numpy._core.numeric", "_frombuffer")] = NAMES[("numpy.core.numeric", "_frombuffer")]

    def find_class(self, module, name):
        try:
            return self.NAMES[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it refers to outside objects")


def read_cifar_batch(path: Path) -> dict:
    """An official CIFAR python batch file as its dict (``_CifarUnpickler``: data only, never code), arrays as numpy
    arrays; a file that is anything else is a UserError naming it."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - a refused name, a truncated or foreign file
        why = str(exc) if isinstance(exc, pickle.UnpicklingError) else type(exc).__name__
        raise UserError(f"{path} is refused: not a CIFAR python batch ({why}; only dicts, lists, bytes and integer "
                        f"arrays are read from it, nothing is executed); re-extract the official archive there") \
            from None
    if not isinstance(batch, dict):
        raise UserError(f"{path} is not a CIFAR python batch (not a dict); re-extract the official archive there")
    return {k: v.array if isinstance(v, _PickledArray) else v for k, v in batch.items()}


def _read_cifar_batches(files: list[Path], label_key: bytes) -> tuple[Tensor, Tensor]:
    """Concatenate official CIFAR python pickle batches into uint8 (N, 3, 32, 32) + labels."""
    xs, ys = [], []
    for path in files:
        batch = read_cifar_batch(path)
        try:
            data, labels = batch[b"data"], batch[label_key]
        except KeyError:
            raise UserError(f"{path} is not a CIFAR python batch (no b'data'/{label_key!r} entries); "
                            f"re-extract the official archive there") from None
        try:  # each row holds the R, G and B planes, each 32x32 row-major
            xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(labels, dtype=np.int64).reshape(len(xs[-1])))
        except (ValueError, TypeError, OverflowError):
            raise UserError(f"{path} is not a CIFAR python batch (its b'data' is not rows of 3072 bytes with one "
                            f"{label_key!r} each); re-extract the official archive there") from None
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _cifar_loader(title: str, folder: str, train_files: list[str], test_file: str, label_key: bytes,
                  tv_class: str, mean, std):
    def load(info: DatasetInfo, o: _Options) -> Data:
        base = o.root / folder
        paths = [base / f for f in train_files + [test_file]]
        if not all(p.is_file() for p in paths) and o.download:
            import torchvision.datasets

            try:
                getattr(torchvision.datasets, tv_class)(str(o.root), train=True, download=True)
            except Exception as e:  # network or disk problem: report it on one line
                msg = " ".join(str(e).split())
                raise UserError(f"downloading {title} into {o.root} failed ({type(e).__name__}: {msg}); "
                                f"fetch it by hand or point --data-dir at a copy") from None
        if not all(p.is_file() for p in paths):
            sep = " and " if len(paths) == 2 else " ... "
            raise _missing(title, f"{paths[0]}{sep}{paths[-1].name}")
        x_train, y_train = _read_cifar_batches(paths[:-1], label_key)
        x_test, y_test = _read_cifar_batches(paths[-1:], label_key)
        return _tensor_data(info, o, x_train, y_train, x_test, y_test, pad=4, flip=True, mean=mean, std=std)

    return load


# --------------------------------------------------------------------------- Tiny-ImageNet / ImageNet


def _eval_resize(size: int) -> int:
    """The shorter side an evaluation image is resized to before its central ``size`` x ``size`` crop: 8/7 of it,
    as ImageNet's 256 for 224."""
    return round(size * 8 / 7)


def _image_transforms(train_size: int, mean, std, *, imagenet: bool):
    import torchvision.transforms as T

    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if imagenet:
        train = T.Compose([T.RandomResizedCrop(train_size), T.RandomHorizontalFlip(), *norm])
        test = T.Compose([T.Resize(_eval_resize(train_size)), T.CenterCrop(train_size), *norm])
    else:
        train = T.Compose([T.RandomCrop(train_size, padding=4), T.RandomHorizontalFlip(), *norm])
        test = T.Compose(norm)
    return train, test


def _load_tinyimagenet(info: DatasetInfo, o: _Options) -> Data:
    """Tiny-ImageNet in its official layout (nothing moved); the official val set is the test split."""
    base = o.root / "tiny-imagenet-200"
    needed = [base / "wnids.txt", base / "train", base / "val" / "val_annotations.txt"]
    for p in needed:
        if not p.exists():
            hint = ("it cannot be downloaded automatically: " if o.download else "") + \
                "unzip tiny-imagenet-200.zip into --data-dir, or point --data-dir at the folder that holds it"
            raise _missing("Tiny-ImageNet", f"{p} (official layout: wnids.txt, train/, val/ in {base})", hint)
    wnids = sorted(w for w in (base / "wnids.txt").read_text().split() if w)
    index = {w: i for i, w in enumerate(wnids)}

    train = []
    for w in wnids:
        folder = base / "train" / w / "images"
        if not folder.is_dir():
            raise _missing("Tiny-ImageNet", f"{folder} (class listed in {base / 'wnids.txt'})",
                           "re-extract the official archive")
        train += [(str(folder / f), index[w]) for f in sorted(os.listdir(folder)) if f.lower().endswith(".jpeg")]

    test = []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            raise UserError(f"{base}/val/val_annotations.txt names class {fields[1]} missing from "
                            f"wnids.txt; re-extract the official archive")
        test.append((str(base / "val" / "images" / fields[0]), index[fields[1]]))

    train_tf, eval_tf = _image_transforms(64, IMAGENET_MEAN, IMAGENET_STD, imagenet=False)
    return _file_data(info, o, train, test, train_tf, eval_tf)


def _load_imagenet(info: DatasetInfo, o: _Options) -> Data:
    """ImageNet as ``root/imagenet/{train,val}/<wnid>/*.JPEG`` (val sorted into class folders)."""
    base = o.root / "imagenet"
    for split in ("train", "val"):
        if not (base / split).is_dir():
            hint = ("it cannot be downloaded automatically: " if o.download else "") + \
                "put the ILSVRC-2012 train and val images there (val sorted into class folders) " \
                "or point --data-dir at the folder that holds it"
            raise _missing("ImageNet", f"{base}/train/<wnid>/*.JPEG and {base}/val/<wnid>/*.JPEG", hint)
    files = folder_list(base)
    train_tf, eval_tf = _image_transforms(224, IMAGENET_MEAN, IMAGENET_STD, imagenet=True)
    return _file_data(info, o, files.samples("train"), files.samples("val"), train_tf, eval_tf)


# --------------------------------------------------------------------------- image folders: listing, cache

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
FOLDER_SPLITS = ("train", "val")
FILE_LIST = ".filelist.json"  # the cached list, in the folder that holds train/ and val/ (never inside them)
FILE_LIST_VERSION = 1
_LISTS: dict[Path, "FolderList"] = {}  # this process's lists, each used while its signature holds


@dataclass
class FolderList:
    """The images of ``folder/train`` and ``folder/val``: the class names (the sorted sub-folders of ``train``, the
    same in ``val``), each split's ``(path relative to folder, label)`` in torchvision ``ImageFolder``'s order, the
    sha256 of both (``digest``), the modification times of every folder listed (``signature``: a file added, removed
    or renamed anywhere changes its folder's), and what was measured on its images (``stats``: ``sample_size``,
    ``sample_normalization``)."""

    folder: Path
    classes: list[str]
    splits: dict[str, list[tuple[str, int]]]
    digest: str
    signature: dict[str, int]
    stats: dict = field(default_factory=dict)

    def samples(self, split: str) -> list[tuple[str, int]]:
        """``(path, label)`` of every image of ``split``."""
        return [(os.path.join(self.folder, rel), label) for rel, label in self.splits[split]]

    def unchanged(self) -> bool:
        """Whether every folder listed still has the modification time it had when listed (a few stats)."""
        for rel, mtime in self.signature.items():
            try:
                if os.stat(os.path.join(self.folder, rel)).st_mtime_ns != mtime:
                    return False
            except OSError:
                return False
        return True


def folder_list(folder) -> FolderList:
    """The images of ``folder/{train,val}/<class>/**``: listed once, then read from the JSON cache ``FILE_LIST`` (in
    ``folder``, or in the user's cache folder where ``folder`` cannot be written) as long as it names this folder and
    its signature holds; otherwise listed again (``_scan``) and the cache rewritten (atomically)."""
    folder = Path(os.path.abspath(folder))
    known = _LISTS.get(folder)
    if known is not None and known.unchanged():
        return known
    for path in _list_paths(folder):
        cached = _read_list(path, folder)
        if cached is not None:
            _LISTS[folder] = cached
            return cached
    classes, splits, signature = _scan(folder)
    digest = hashlib.sha256(json.dumps([classes, splits], separators=(",", ":")).encode()).hexdigest()
    listed = FolderList(folder, classes, {k: [tuple(x) for x in v] for k, v in splits.items()}, digest, signature)
    _write_list(listed)
    _LISTS[folder] = listed
    return listed


def _scan(folder: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]], dict[str, int]]:
    """List ``folder/<split>/<class>/**/<image>`` as ``ImageFolder`` does (its classes: the sorted sub-folders; its
    files: a sorted walk that follows links, images by extension), every split with the classes of ``train``;
    returns (classes, {split: [(relative path, label)]}, {relative folder: mtime_ns of every folder walked})."""
    signature: dict[str, int] = {}
    splits: dict[str, list[tuple[str, int]]] = {}
    classes = None
    for split in FOLDER_SPLITS:
        base = folder / split
        try:
            signature[split] = os.stat(base).st_mtime_ns
            with os.scandir(base) as entries:
                entries = list(entries)
            found = sorted(e.name for e in entries if e.is_dir())
        except OSError as e:
            raise UserError(f"{base} cannot be listed ({e.strerror or type(e).__name__}); check the image folder "
                            f"and its permissions") from None
        if not found:
            loose = sum(e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)
            lying = f" ({loose} images lie in it directly)" if loose else ""
            raise UserError(f"{base} holds no class folders{lying}; put each class's images in a folder of its "
                            f"own, {base}/<class>/, the same class folders in {folder}/train and {folder}/val")
        if classes is None:
            classes = found
        elif found != classes:
            odd = sorted(set(found) ^ set(classes))[0]
            raise UserError(f"{folder}/train and {base} hold different class folders ({odd!r} is in one only); "
                            f"give both the same <class> folders")
        splits[split] = []
        for label, name in enumerate(classes):
            before = len(splits[split])
            for root, _, files in sorted(os.walk(base / name, followlinks=True)):
                rel = os.path.relpath(root, folder)
                signature[rel] = os.stat(root).st_mtime_ns
                splits[split] += [(f"{rel}/{f}", label) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
            if len(splits[split]) == before:
                raise UserError(f"{base / name} holds no image file ({', '.join(IMAGE_EXTENSIONS)}); add its images "
                                f"or remove the folder")
    return classes, splits, signature


def _list_paths(folder: Path) -> list[Path]:
    """Where ``folder``'s cached list may be: in it, then in the user's cache folder (for a folder this user may not
    write, e.g. a shared ImageNet), named by the folder's path."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "image-folder-lists"
    return [folder / FILE_LIST, cache / f"{hashlib.sha256(str(folder).encode()).hexdigest()[:16]}.json"]


def _read_list(path: Path, folder: Path) -> FolderList | None:
    """The cached list at ``path`` (JSON, checked), if it is the list of ``folder`` and its signature holds."""
    try:
        data = json.loads(path.read_bytes())
        if data.get("version") != FILE_LIST_VERSION or data.get("folder") != str(folder):
            return None
        listed = FolderList(folder, [str(c) for c in data["classes"]],
                            {k: [(str(rel), int(label)) for rel, label in data["splits"][k]] for k in FOLDER_SPLITS},
                            str(data["digest"]), {str(k): int(v) for k, v in data["signature"].items()},
                            dict(data.get("stats") or {}))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # none yet, or not one this code wrote
        return None
    return listed if listed.unchanged() else None


def _write_list(listed: FolderList) -> None:
    """Cache ``listed`` as JSON at the first of ``_list_paths`` this user can write (atomically: a reader sees the
    old list or the new one); where none can be written, a warning, and the next run lists the folder again."""
    from common.atomic import atomic_write_text

    text = json.dumps({"version": FILE_LIST_VERSION, "folder": str(listed.folder), "classes": listed.classes,
                       "splits": listed.splits, "digest": listed.digest, "signature": listed.signature,
                       "stats": listed.stats}, separators=(",", ":"))
    problems = []
    for path in _list_paths(listed.folder):
        try:
            atomic_write_text(path, text)
            return
        except OSError as e:
            problems.append(f"{path}: {e.strerror or type(e).__name__}")
    print(f"warning: the list of the images of {listed.folder} cannot be cached ({'; '.join(problems)}); every run "
          f"lists them again", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- your own image folder


STATS_IMAGES, STATS_SEED = 256, 0  # the training images (drawn once, fixed seed) whose size and pixels are measured
IMAGE_OPTIONS = ("image_size", "image_mean", "image_std")  # the config fields of ImageOptions


def _sample(listed: FolderList):
    """The ``STATS_IMAGES`` training images (all, when fewer) that ``imagefolder`` measures, opened one by one (PIL
    images, read lazily: their sizes come from the files' headers); one that cannot be read is a UserError naming it."""
    from PIL import Image

    train = listed.samples("train")
    picks = np.random.default_rng(STATS_SEED).choice(len(train), min(len(train), STATS_IMAGES), replace=False)
    for i in np.sort(picks):
        path = train[i][0]
        try:
            with Image.open(path) as img:
                yield img
        except OSError as e:  # PIL's UnidentifiedImageError too
            raise UserError(f"{path} cannot be read as an image ({' '.join(str(e).split())}); remove or replace "
                            f"it") from None


def _cached_stat(listed: FolderList, key: str, compute: Callable):
    """``listed.stats[key]``, computed (and cached with the folder's list) the first time."""
    if key not in listed.stats:
        listed.stats = {**listed.stats, key: compute()}
        _write_list(listed)
    return listed.stats[key]


def sample_size(listed: FolderList) -> int:
    """The input size ``imagefolder`` computes when none is given: the median shorter side of the sampled training
    images (read from the files' headers, nothing decoded)."""
    def median_side() -> int:
        return int(np.median([min(img.size) for img in _sample(listed)]))

    return _cached_stat(listed, "size", median_side)


def sample_normalization(listed: FolderList, size: int) -> tuple[list[float], list[float]]:
    """The per-channel (mean, std) ``imagefolder`` computes when none is given: of the pixels in [0, 1] of the sampled
    training images as the evaluation transform gives them at ``size`` (Resize to 8/7 of it, CenterCrop)."""
    import torchvision.transforms as T

    def measure() -> dict:
        tf = T.Compose([T.Resize(_eval_resize(size)), T.CenterCrop(size), T.ToTensor()])
        total, squares, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
        for img in _sample(listed):
            x = tf(img.convert("RGB")).double()
            total += x.sum((1, 2))
            squares += (x * x).sum((1, 2))
            count += x[0].numel()
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(0).sqrt()
        return {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std]}

    norm = _cached_stat(listed, f"normalization at {size}", measure)
    return norm["mean"], norm["std"]


def image_options(listed: FolderList, image: ImageOptions) -> ImageOptions:
    """``image`` checked, with what it leaves unstated computed from the folder's training images (``sample_size``,
    ``sample_normalization``)."""
    _check_image(image)
    size = image.size or sample_size(listed)
    if image.mean:
        return ImageOptions(size, image.mean, image.std)
    mean, std = sample_normalization(listed, size)
    if min(std) <= 0:
        raise UserError(f"the sampled training images of {listed.folder} have a channel of one value (std {std}); "
                        f"give --image-mean and --image-std")
    return ImageOptions(size, tuple(mean), tuple(std))


def _check_image(image: ImageOptions) -> None:
    for name, values in (("mean", image.mean), ("std", image.std)):
        if len(values) not in (0, 1, 3):
            raise UserError(f"--image-{name} has {len(values)} values; give one per RGB channel (3), one for all, "
                            f"or none to compute it from the training images")
    if bool(image.mean) != bool(image.std):
        raise UserError("give both --image-mean and --image-std, or neither (both are then computed from the training "
                        "images)")
    if any(not v > 0 for v in image.std):
        raise UserError(f"--image-std {','.join(map(str, image.std))} must be > 0 (the inputs are divided by it)")
    if image.size < 0:
        raise UserError(f"--image-size {image.size} must be > 0, or 0 to compute it from the training images")


def _image_folder(folder) -> FolderList:
    folder = data_root(folder)
    for split in FOLDER_SPLITS:
        if not (folder / split).is_dir():
            raise _missing("image folder", f"{folder}/train/<class>/<images> and {folder}/val/<class>/<images>",
                           "point --data-dir at the folder that holds train/ and val/")
    return folder_list(folder)


def _folder_info(listed: FolderList, size: int) -> DatasetInfo:
    return DatasetInfo("imagefolder", len(listed.classes), (3, size, size))


def _load_imagefolder(info: DatasetInfo | None, o: _Options) -> Data:
    """Your own images in ``--data-dir/{train,val}/<class>/``, fed as ImageNet's are (random resized crops and flips
    for training; Resize to 8/7 of the size and CenterCrop for evaluation); val is the test split."""
    listed = _image_folder(o.root)
    image = image_options(listed, o.image)
    train_tf, eval_tf = _image_transforms(image.size, image.mean, image.std, imagenet=True)
    return _file_data(_folder_info(listed, image.size), o, listed.samples("train"), listed.samples("val"), train_tf,
                      eval_tf)


def dataset_identity(cfg, name: str) -> str:
    """What a run's identity (its hash) holds for its dataset: the name; for ``imagefolder`` the sha256 of the list of
    its folder's images too (class names, relative paths, labels: ``folder_list``), so that two folders are two
    datasets, while a folder moved or copied elsewhere keeps its runs (``--data-dir`` is not part of the identity)."""
    if name != "imagefolder":
        return name
    return f"imagefolder:sha256:{_image_folder(cfg.data_dir).digest}"


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetSpec:
    info: DatasetInfo | None  # None: read from the dataset's folder (imagefolder)
    load: Callable[[DatasetInfo | None, _Options], Data]


_CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)]

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(DatasetInfo("digits", 10, (1, 8, 8)), _load_digits),
    "fashionmnist": DatasetSpec(DatasetInfo("fashionmnist", 10, (1, 28, 28)), _load_fashionmnist),
    "cifar10": DatasetSpec(
        DatasetInfo("cifar10", 10, (3, 32, 32)),
        _cifar_loader("CIFAR-10", "cifar-10-batches-py", _CIFAR10_FILES, "test_batch", b"labels",
                      "CIFAR10", CIFAR10_MEAN, CIFAR10_STD)),
    "cifar100": DatasetSpec(
        DatasetInfo("cifar100", 100, (3, 32, 32)),
        _cifar_loader("CIFAR-100", "cifar-100-python", ["train"], "test", b"fine_labels",
                      "CIFAR100", CIFAR100_MEAN, CIFAR100_STD)),
    "tinyimagenet": DatasetSpec(DatasetInfo("tinyimagenet", 200, (3, 64, 64)), _load_tinyimagenet),
    "imagenet": DatasetSpec(DatasetInfo("imagenet", 1000, (3, 224, 224)), _load_imagenet),
    # your own images: --data-dir/train/<class>/*, --data-dir/val/<class>/* (val is the test split)
    "imagefolder": DatasetSpec(None, _load_imagefolder),
    # Criteo TSV (common/criteo.py): 39 features per example, one logit (click)
    "criteo": DatasetSpec(DatasetInfo("criteo", 1, (1, 1, 39)),
                          lambda info, o: _tensor_data(info, o, *criteo.train_and_test(o.root, o.download))),
}


@dataclass(frozen=True)
class PlainInput:
    """A dataset's input before this repository's normalization: what a user of an exported model has at hand.

    The loaders feed models ``(x - mean) / std`` of this plain input (per channel; one value for all channels when
    the tuples have one entry); ``mean``/``std`` None: the plain input is what the model takes."""

    range: tuple[float, float] | None  # the plain input's value range (None: not bounded, e.g. features)
    how: str                           # how to make it from the raw data
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


_TO_TENSOR = "RGB images as torchvision.transforms.ToTensor() gives them (uint8 pixels / 255, channels first)"


def plain_input(dataset) -> PlainInput:
    """The plain input of ``dataset``, a name or a run's config (for digits the statistics are computed from the
    bundled data; for an image folder they are its own)."""
    name, folder, image = _source(dataset)
    _spec(name)
    if name == "digits":
        mean, std = _digits()[4]
        return PlainInput((0.0, 1.0), "sklearn.datasets.load_digits().images / 16 (pixel values 0..16), float32, "
                          "shape (batch, 1, 8, 8)", (float(mean),), (float(std),))
    if name == "fashionmnist":
        return PlainInput((0.0, 1.0), "the official 28x28 grey images / 255 (uint8 pixels -> [0, 1]), float32, "
                          "shape (batch, 1, 28, 28)", FASHION_MEAN, FASHION_STD)
    if name in ("cifar10", "cifar100"):
        mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
        return PlainInput((0.0, 1.0), f"32x32 {_TO_TENSOR}, shape (batch, 3, 32, 32)", mean, std)
    if name == "tinyimagenet":
        return PlainInput((0.0, 1.0), f"64x64 {_TO_TENSOR}, shape (batch, 3, 64, 64)", IMAGENET_MEAN, IMAGENET_STD)
    if name == "imagenet":
        return PlainInput((0.0, 1.0), f"{_TO_TENSOR} after Resize(256) and CenterCrop(224), shape "
                          "(batch, 3, 224, 224)", IMAGENET_MEAN, IMAGENET_STD)
    if name == "imagefolder":
        image = image_options(_described_folder(folder), image)
        return PlainInput((0.0, 1.0), f"{_TO_TENSOR} after Resize({_eval_resize(image.size)}) and CenterCrop("
                          f"{image.size}), shape (batch, 3, {image.size}, {image.size})", image.mean, image.std)
    if name == "criteo":  # no normalization: the features of a TSV line, as common/criteo.py makes them
        return PlainInput(None, f"39 float32 features per example, shape (batch, 1, 1, 39): log(1 + max(v, 0)) of "
                          f"the 13 integer features v (empty: 0), then the 26 categorical values as hashed ids in "
                          f"[0, {criteo.VOCAB}) (common.criteo.hash_ids; empty: 0)")
    raise AssertionError(f"no plain input described for dataset {name}")


def _spec(name: str) -> DatasetSpec:
    spec = DATASETS.get(name)
    if spec is None:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return spec


def _source(dataset) -> tuple[str, str | None, ImageOptions]:
    """(name, folder, image options) of ``dataset``: a name, or a run's config (its ``dataset``, ``data_dir`` and, for
    ``imagefolder``, the ``image_*`` options)."""
    if isinstance(dataset, str):
        return dataset, None, ImageOptions()
    values = [getattr(dataset, name, default) for name, default in zip(IMAGE_OPTIONS, (0, (), ()))]
    return dataset.dataset, getattr(dataset, "data_dir", None), ImageOptions(values[0], *map(tuple, values[1:]))


def _described_folder(folder) -> FolderList:
    if folder is None:
        raise UserError("dataset imagefolder has no fixed classes or input size: they are read from its folder "
                        "(--data-dir), which is not known here")
    return _image_folder(folder)


def dataset_info(dataset) -> DatasetInfo:
    """Classes and input shape of ``dataset`` (a name, or a run's config: see :func:`_source`), without reading any
    file -- but for ``imagefolder``, whose classes are its folder's (listed once, ``folder_list``) and whose input
    size is given (``--image-size``) or measured once on its images (``sample_size``)."""
    name, folder, image = _source(dataset)
    spec = _spec(name)
    if spec.info is not None:
        return spec.info
    _check_image(image)
    listed = _described_folder(folder)
    return _folder_info(listed, image.size or sample_size(listed))


def affinity() -> set[int]:
    """The CPUs this process may run on (its CPU affinity: what Slurm's task binding, ``taskset`` or a cgroup leave
    it); where the platform cannot tell, all of the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def process_cpus() -> int:
    """The CPUs of one process: its CPU affinity, at most the job's ``SLURM_CPUS_PER_TASK`` (a site that does not bind
    tasks lets every task run anywhere on the node), shared among the ranks of this node that share them (torchrun's
    ``LOCAL_WORLD_SIZE``; a Slurm task per rank has its own CPUs); at least 1. Sizes the DataLoader workers
    (:func:`auto_workers`) and a Slurm job's torch threads."""
    n = len(affinity())
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0:
        n = min(n, int(cpus))
    ranks = os.environ.get("LOCAL_WORLD_SIZE", "")
    return max(n // max(int(ranks) if ranks.isdigit() else 1, 1), 1)


def auto_workers() -> int:
    """DataLoader workers of one process: its CPUs (:func:`process_cpus`), one of them left to the training process
    itself; at least 1."""
    return max(process_cpus() - 1, 1)


def describe_cpus() -> str:
    """What a job prints at its start: ``cpus: 2 (affinity 0-1; SLURM_CPUS_PER_TASK 2): 2 torch threads, --workers
    auto = 1``."""
    cpus, spans = sorted(affinity()), []
    for c in cpus:
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    listed = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
    job = os.environ.get("SLURM_CPUS_PER_TASK", "unset")
    return (f"cpus: {process_cpus()} (affinity {listed}; SLURM_CPUS_PER_TASK {job}): {torch.get_num_threads()} torch "
            f"threads, --workers auto = {auto_workers()}")


def resolve_workers(workers) -> int:
    """``--workers``: ``auto`` (:func:`auto_workers`) or a number of processes >= 0 (0: decode in this process)."""
    if isinstance(workers, int) and not isinstance(workers, bool):
        value = workers
    elif str(workers).strip().lower() == "auto":
        return auto_workers()
    else:
        try:
            value = int(str(workers))
        except ValueError:
            value = -1
    if value < 0:
        raise UserError(f"--workers {workers} is neither auto nor a number of processes >= 0")
    return value


def data_root(root) -> Path:
    """``--data-dir`` as a path: a missing folder is fine (a dataset that needs it names what it expected there, or
    downloads into it), but one that exists as anything other than a folder is a user error: the datasets would
    otherwise be looked for elsewhere (Fashion-MNIST in Debian's location) without a word."""
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise UserError(f"--data-dir {root} is a file, not a folder; give the folder that holds the datasets "
                        f"(or one to download them into)")
    return path


def load_dataset(dataset, *, root: str = "data", download: bool = False, device="cpu",
                 batch_size: int = 128, eval_batch_size: int = 512, seed: int = 0, val_size: int = 0,
                 workers: int | str = "auto") -> Data:
    """Load ``dataset`` (a name, or a run's config: its ``dataset`` and, for ``imagefolder``, its image options) from
    ``root`` into train/val/test splits on ``device``.

    ``val_size > 0`` carves a validation split of that many samples out of the training
    set (same split for every ``seed``); ``seed`` only drives shuffling/augmentation;
    ``workers``: see :func:`resolve_workers`.
    """
    name, _, image = _source(dataset)
    spec = _spec(name)
    if batch_size < 1 or eval_batch_size < 1:
        raise UserError(f"batch sizes must be positive (got {batch_size} and {eval_batch_size})")
    if val_size < 0:
        raise UserError(f"--val-size must be >= 0 (got {val_size})")
    opts = _Options(data_root(root), download, torch.device(device), batch_size, eval_batch_size,
                    seed, val_size, resolve_workers(workers), image)
    data = spec.load(spec.info, opts)
    barrier()  # DDP: no rank starts training (and its collectives' timeout) while another still reads its data
    return data
