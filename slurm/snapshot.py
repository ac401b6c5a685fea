"""Code snapshots: a queued job runs the code as it was when it was submitted.

Every ``.py`` file of the repository (the git work tree's tracked and untracked-but-not-ignored files, or a walk of
the source folders when git is absent) is copied into ``<log root>/code/<content hash>/``. Jobs start in that
folder, so ``python -m submitit...`` imports ``common``, the method folders and ``slurm`` from the copy; editing the
checkout afterwards changes nothing in jobs already queued. Identical code gives the same folder (reused).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from common.sources import ROOT, code_hash, source_files  # noqa: F401 - part of this module's interface


def snapshot(dest_root: Path, root: Path = ROOT, copy: bool = True) -> Path:
    """Copy the sources into ``dest_root/<hash>`` (once per distinct content) and return that folder (``copy=False``:
    only its path, for a dry run)."""
    files = source_files(root)
    dest = Path(dest_root) / code_hash(root, files)
    if dest.exists() or not copy:
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    for rel in files:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, tmp / rel)
    try:
        os.replace(tmp, dest)
    except OSError:  # another submission made the same snapshot meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
