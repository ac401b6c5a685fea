"""The README's "Prune your own model" code blocks, extracted from README.md and run as they are written (each in its
own interpreter, from a folder outside the repository, the repository on PYTHONPATH as an editable install puts it):
they cannot fall behind the methods' objects."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SECTION = "## Prune your own model"


def blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, "README.md has no 'Prune your own model' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_shows_each_paper():
    names = [re.search(r"from (bip|gmp|seqattn|posttrain)\.", code).group(1) for code in blocks()]
    assert names == ["bip", "gmp", "seqattn", "posttrain"]


@pytest.mark.parametrize("index, printed, low, high", [
    (0, r"BiP: sparsity ([\d.]+)", 0.899, 0.901),
    (1, r"GMP: sparsity ([\d.]+)", 0.899, 0.901),
    (2, r"SA\+\+: block sparsity ([\d.]+)", 0.899, 0.901),
    (3, r"post-training: ([\d.]+) of the parameters removed", 0.3, 0.9),
], ids=["bip", "gmp", "seqattn", "posttrain"])
def test_readme_block_runs_and_prunes(index, printed, low, high, tmp_path):
    code = blocks()[index]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(printed, done.stdout)
    assert found, done.stdout
    assert low <= float(found.group(1)) <= high, done.stdout
    assert not list(tmp_path.iterdir())  # no run store, no files: the objects store nothing
