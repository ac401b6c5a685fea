"""The README's "Prune your own model" code blocks, extracted from README.md and run as they are written, from a
folder outside the repository with the repository on PYTHONPATH (as an editable install puts it): they cannot fall
behind the methods' objects. The four run in one interpreter (its start-up, torch and torchvision, is most of their
cost), each in a namespace of its own, so each must import everything it uses, as a reader's script would."""
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


RUNNER = """
import contextlib, io, json, sys, traceback
out = []
for code in json.loads(sys.stdin.read()):
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "<README block>", "exec"), {"__name__": "__main__"})
        out.append({"ok": True, "stdout": printed.getvalue()})
    except BaseException:
        out.append({"ok": False, "stdout": printed.getvalue(), "error": traceback.format_exc()})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Each block's outcome ({ok, stdout, error}), in the README's order, and the folder they ran in."""
    import json

    folder = tmp_path_factory.mktemp("reader")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks()), cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), folder


@pytest.mark.parametrize("index, printed, low, high", [
    (0, r"BiP: sparsity ([\d.]+)", 0.899, 0.901),
    (1, r"GMP: sparsity ([\d.]+)", 0.899, 0.901),
    (2, r"SA\+\+: block sparsity ([\d.]+)", 0.899, 0.901),
    (3, r"post-training: ([\d.]+) of the parameters removed", 0.3, 0.9),
], ids=["bip", "gmp", "seqattn", "posttrain"])
def test_readme_block_runs_and_prunes(ran, index, printed, low, high):
    outcomes, folder = ran
    done = outcomes[index]
    assert done["ok"], done["error"][-3000:]
    found = re.search(printed, done["stdout"])
    assert found, done["stdout"]
    assert low <= float(found.group(1)) <= high, done["stdout"]
    assert not list(folder.iterdir())  # no run store, no files: the objects store nothing


def test_a_block_that_uses_a_name_it_does_not_import_fails_in_the_runner(tmp_path):
    """The shared interpreter does not hide a missing import: names do not leak from one block to the next."""
    import json

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    blocks_ = ["import math\nprint(math.pi)", "print(math.pi)"]
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks_), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    first, second = json.loads(done.stdout.splitlines()[-1])
    assert first["ok"] and not second["ok"] and "NameError" in second["error"]
