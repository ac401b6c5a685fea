"""The repository's Python sources and a hash of them: the code version every result records (``content_hash`` in its
provenance, beside the git commit where there is one: the code, not the figures and tables a run of ``make`` rewrites)
and the name of a Slurm code snapshot (``slurm.snapshot``)."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"runs", "data", "slurm_logs", "__pycache__", "out", "node_modules"}


def source_files(root: Path = ROOT) -> list[str]:
    """Repository-relative paths of the Python sources a job may import."""
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             check=True, timeout=60).stdout.decode().strip()
        if Path(top).resolve() != Path(root).resolve():  # e.g. a snapshot kept inside a checkout's slurm_logs/
            raise OSError(f"{root} is not the top of a git work tree")
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
        files = [p for p in listed if p.endswith(".py") and (root / p).is_file()]
    except (OSError, subprocess.SubprocessError):
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS]
            rel = Path(dirpath).relative_to(root)
            files += [str(rel / f) for f in filenames if f.endswith(".py")]
    return sorted(files)


def code_hash(root: Path = ROOT, files: list[str] | None = None) -> str:
    """A hash of the sources' paths and contents (of ``files``, default all of them): a snapshot's folder name."""
    digest = hashlib.sha256()
    for rel in source_files(root) if files is None else files:
        digest.update(rel.encode() + b"\0" + (Path(root) / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
