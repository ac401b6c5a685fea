"""Atomic file writes: a reader sees the old file or the complete new one, never a part of it."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def atomic_write(path, write, mode: int | None = None) -> Path:
    """``write(tmp)`` into a temporary file beside ``path`` (with the same extension, for writers that infer a format
    from it), then ``os.replace`` it onto ``path``: readers see the old file or the complete new one. ``mode``: the
    file's permissions; by default those of any new file, ``0o666`` less the umask (the temporary file is created
    with ``0o666`` and the kernel applies the umask, so a group-shared store stays readable by the group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = str(path.with_name(f".{path.stem}.{secrets.token_hex(4)}{path.suffix}"))
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` written atomically, and flushed to disk before it replaces the old file."""
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")
