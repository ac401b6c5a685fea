"""Atomic file writes: a reader sees the old file or the complete new one, never a part of it."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import time
from pathlib import Path

# the name of atomic_write's temporary file beside <stem><suffix>: .<stem>.<8 hex digits><suffix>
TEMP_NAME = re.compile(r"\.(?P<stem>.+?)\.[0-9a-f]{8}(?P<suffix>\.[^.]+)?\Z")
FULL_BELOW = 1 << 20  # a disk with fewer free bytes than this is full (for a writer's RuntimeError: disk_full)


def disk_full(path) -> bool:
    """Whether the filesystem holding ``path`` (or its nearest existing folder) has (almost) no room left."""
    path = Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        try:
            st = os.statvfs(folder)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < FULL_BELOW
    return False


@contextlib.contextmanager
def full_disk_named(path):
    """Report a full disk met by a writer of ``path`` as ``OSError(ENOSPC)`` naming ``path``: ``torch.save`` raises a
    ``RuntimeError`` from its C++ stream, without errno (recognized by the disk having no room left: ``disk_full``),
    and a buffered ``write`` or ``flush`` raises ENOSPC without a file name."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC or exc.filename:
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
    except RuntimeError:
        if not disk_full(path):
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None


def leftover_temps(folder, min_age: float = 0.0) -> list[Path]:
    """The temporary files of ``atomic_write`` in ``folder`` (not in its subfolders) at least ``min_age`` seconds old:
    what a writer killed between creating one and replacing its target left behind (a live writer removes its own)."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
        for entry in entries:
            if not TEMP_NAME.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and time.time() - entry.stat().st_mtime >= min_age:
                    found.append(Path(entry.path))
    return sorted(found)


def atomic_write(path, write, mode: int | None = None, previous=None) -> Path:
    """``write(tmp)`` into a temporary file beside ``path`` (with the same extension, for writers that infer a format
    from it), flushed to disk (fsync), then ``os.replace`` it onto ``path``: readers see the old file or the complete
    new one, and a crash of the machine leaves one of them. ``mode``: the file's permissions; by default those of any
    new file, ``0o666`` less the umask (the temporary file is created with ``0o666`` and the kernel applies the umask,
    so a group-shared store stays readable by the group). ``previous``: where the file being replaced is kept (moved
    there just before the new one takes its place), a fallback should the new one prove unreadable."""
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
        with full_disk_named(path):
            write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if previous is not None:
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` written atomically (``atomic_write``)."""
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")
