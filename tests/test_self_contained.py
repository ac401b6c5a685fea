"""The repository speaks only of itself: no file in it points a reader to documents that are not in it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Names of documents that live outside the repository, and planning vocabulary (spelled in pieces, so that this file
# does not match itself).
FORBIDDEN = re.compile("|".join([r"PAPERS" r"\.md", r"\.\./" r"shared", r"DEVELOPERS" r"\.md", r"\bissue" r" #\d",
                                 r"the issue" r"'s", r"\bseed 0" r"0\d\b"]))


def _tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    suffixes = {".py", ".md", ".txt", ".csv", ".toml", ".ipynb", ".json", ""}
    return [ROOT / n for n in names.splitlines() if Path(n).suffix in suffixes and (ROOT / n).is_file()]


def test_no_file_cites_documents_outside_the_repository():
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_the_papers_facts_are_in_the_repository():
    facts = (ROOT / "figures" / "reference" / "README.md").read_text()
    for paper in ("BiP", "SequentialAttention++", "GMP", "Post-training structured pruning"):
        assert f"## {paper}" in facts


def test_common_imports_no_paper_folder():
    """common/ sits below the paper folders and the figures: none of its modules imports them (a runner reaches a
    script only by the name it is given, through importlib)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    above = {"bip", "gmp", "seqattn", "posttrain", "figures", "slurm"}
    found = []
    for path in sorted((root / "common").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{path.relative_to(root)}:{node.lineno} {n}" for n in names if n.split(".")[0] in above]
    assert not found, found
