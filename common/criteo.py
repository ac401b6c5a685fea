"""Criteo display-advertising data (Kaggle DAC ``train.txt``) and the SequentialAttention++ paper's Criteo model.

File format: one example per line, 40 tab-separated columns: the 0/1 click label, 13 integer features (counts, may be
empty or negative) and 26 categorical features (8-digit hex hashes, may be empty). Expected at
``<data-dir>/criteo/train.txt``; the file is in time order, and its last 1/7 (the seventh day) is held out as the
evaluation split (the ``test`` split; the paper's "validation loss").

Features (what the model receives, one float row of 39 per example):
- integer feature x -> log(1 + max(x, 0)); empty -> 0;
- categorical value -> an id in [1, VOCAB) by hashing its hex digits (the same value always gets the same id; empty
  -> id 0), stored as a float (exact: VOCAB < 2**24).
Model: each of the 39 features becomes a 10-dimensional embedding (categorical: a lookup table per feature; integer:
its value times a learned vector), concatenated to 390 inputs -> 400 -> 400 -> 400 -> 1 logit (ReLU between).
A parsed file is cached next to it (``train.txt.<size>-<mtime>.pt``) so it is read once.
Metrics of the one-logit model (``common.train.evaluate``): the log-loss (mean binary cross-entropy) and ROC AUC
(``common.metrics.roc_auc``); an accuracy is not reported.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_write
from common.errors import DatasetMissing, UserError
from common.store import warn

N_INT, N_CAT = 13, 26
COLUMNS = 1 + N_INT + N_CAT
VOCAB = 2 ** 15          # hashed ids per categorical feature
EMBED = 10               # embedding size of every feature: 39 * 10 = 390 inputs
HOLDOUT = 1 / 7          # the last day of the 7 is the evaluation split
CHUNK = 1 << 20          # lines parsed at a time

_HEX = np.zeros(256, dtype=np.uint32)  # ASCII -> nibble value (other characters hash as 0..15 too)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def hash_ids(values: np.ndarray) -> np.ndarray:
    """Categorical byte strings (dtype S8) -> ids in [1, VOCAB), empty -> 0; vectorized."""
    raw = values.astype("S8")
    digits = _HEX[np.frombuffer(raw.tobytes(), dtype=np.uint8).reshape(*raw.shape, 8)]
    h = np.zeros(raw.shape, dtype=np.uint64)
    for k in range(8):
        h = (h << np.uint64(4)) | digits[..., k].astype(np.uint64)
    h = (h * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)  # Fibonacci hashing spreads nearby values
    return np.where(raw == b"", 0, 1 + (h % np.uint64(VOCAB - 1))).astype(np.int64)


def parse_lines(lines: list[bytes], first_line: int, path) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (n, 39), labels int64 (n,)) of raw lines; a wrong column count names the line."""
    rows = []
    for i, line in enumerate(lines):
        fields = line.rstrip(b"\r\n").split(b"\t")
        if len(fields) != COLUMNS:
            raise UserError(f"{path} line {first_line + i}: {len(fields)} tab-separated columns, expected {COLUMNS} "
                            f"(label, {N_INT} integer, {N_CAT} categorical features); is this the Criteo train.txt?")
        rows.append(fields)
    table = np.array(rows, dtype="S64").reshape(len(rows), COLUMNS)
    try:
        labels = table[:, 0].astype(np.int64)
        ints = np.where(table[:, 1:1 + N_INT] == b"", b"0", table[:, 1:1 + N_INT]).astype(np.int64)
    except ValueError as exc:
        raise UserError(f"{path} lines {first_line}-{first_line + len(rows) - 1}: a label or integer feature is "
                        f"not an integer ({exc})") from None
    x = np.empty((len(rows), N_INT + N_CAT), dtype=np.float32)
    x[:, :N_INT] = np.log1p(np.maximum(ints, 0))
    x[:, N_INT:] = hash_ids(table[:, 1 + N_INT:])
    return x, labels


def read_tsv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, line_no = [], [], 1
    with open(path, "rb") as fh:
        while True:
            lines = fh.readlines(CHUNK * 64)
            if not lines:
                break
            x, y = parse_lines(lines, line_no, path)
            xs.append(x)
            ys.append(y)
            line_no += len(lines)
    if not xs:
        raise UserError(f"{path} is empty; it should hold the Criteo examples, one per line")
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def load_tensors(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The parsed file, from its cache when the file has not changed. The cache is read as data
    (``weights_only=True``: two tensors, never code); one that is anything else is parsed again and rewritten."""
    st = path.stat()
    cache = path.with_name(f"{path.name}.{st.st_size}-{int(st.st_mtime)}-v{VOCAB}.pt")
    if cache.exists():
        cached = _read_cache(cache)
        if cached is not None:
            return cached
        warn(cache, f"not a cache this code wrote (refused, nothing in it executed); parsing {path} again")
    x, y = read_tsv(path)
    try:
        atomic_write(cache, lambda tmp: torch.save({"x": x, "y": y}, tmp))
    except OSError:
        pass  # a read-only dataset folder: parse again next time
    return x, y


def _read_cache(cache: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) of a cache file, or None when it is not two tensors of the parsed shapes (unreadable, truncated, or a
    pickle that names code: ``weights_only=True`` refuses to run it)."""
    try:
        data = torch.load(cache, map_location="cpu", weights_only=True)
        x, y = data["x"], data["y"]
    except Exception:  # noqa: BLE001 - any failure means the cache is unusable
        return None
    ok = (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == torch.float32
          and y.dtype == torch.int64 and x.dim() == 2 and x.shape[1] == N_INT + N_CAT and y.shape == x.shape[:1])
    return (x, y) if ok else None


def train_and_test(root: Path, download: bool = False) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)`` of ``<root>/criteo/train.txt``: its last ``HOLDOUT`` is the test split
    (``common.data`` turns them into splits on the device)."""
    path = root / "criteo" / "train.txt"
    if not path.is_file():
        hint = ("it cannot be downloaded automatically: " if download else "") + \
            "put the Kaggle Criteo display-advertising train.txt there or point --data-dir at its parent folder"
        raise DatasetMissing(f"Criteo not found: expected {path}; {hint}")
    x, y = load_tensors(path)
    if len(y) < 2:
        raise UserError(f"{path} has {len(y)} example(s); at least 2 are needed to hold out an evaluation split")
    cut = len(y) - max(1, math.ceil(len(y) * HOLDOUT))
    return x[:cut], y[:cut], x[cut:], y[cut:]


class CriteoNet(nn.Module):
    """39 features -> 10-d embeddings each (390 inputs) -> 400 -> 400 -> 400 -> 1 logit."""

    def __init__(self, num_classes: int = 1, input_shape=(1, 1, N_INT + N_CAT)):
        super().__init__()
        if math.prod(input_shape) != N_INT + N_CAT:
            raise UserError(f"criteo_mlp expects {N_INT + N_CAT} features per example, got input shape {input_shape}")
        self.categorical = nn.Embedding(N_CAT * VOCAB, EMBED)
        self.integer = nn.Parameter(torch.randn(N_INT, EMBED) * 0.1)
        self.register_buffer("offsets", torch.arange(N_CAT) * VOCAB, persistent=False)
        nn.init.normal_(self.categorical.weight, std=0.01)
        width = (N_INT + N_CAT) * EMBED
        self.net = nn.Sequential(nn.Linear(width, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(),
                                 nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, num_classes))

    def forward(self, x):
        x = x.reshape(x.shape[0], N_INT + N_CAT)
        ints = x[:, :N_INT, None] * self.integer                            # (n, 13, 10)
        ids = x[:, N_INT:].long().clamp_(0, VOCAB - 1)                        # any input is a valid id
        cats = self.categorical(ids + self.offsets)                           # (n, 26, 10)
        return self.net(torch.cat([ints, cats], 1).flatten(1))
