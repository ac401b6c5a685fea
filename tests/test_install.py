"""The environment `make` builds is pinned: every direct dependency in requirements.txt and every installed package in
constraints.txt has one exact version, and the environment the tests run in is that one. ``make install
TORCH_INDEX=URL`` takes torch / torchvision from a PyTorch wheel index (a CUDA version, or the CPU), checked before
anything is installed, and the rest from the pins. ``pip install -e .`` (pyproject.toml) makes the scripts run from
any directory, and names the same packages, unpinned."""
from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import shutil
import site
import socket
import subprocess
import sys
import threading
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from common import torch_index
from tests.conftest import one_error_line, run_cli

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)$")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: '{line}' is not pinned to one version (name==version)"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_every_direct_dependency_is_pinned_and_locked():
    direct, locked = _pins(ROOT / "requirements.txt"), _pins(ROOT / "constraints.txt")
    assert {"torch", "torchvision", "numpy", "pandas", "submitit", "torch-pruning"} <= set(direct)
    for name, version in direct.items():
        assert locked.get(name) == version, f"{name}: requirements.txt pins {version}, constraints.txt {locked.get(name)}"


def test_the_test_environment_is_the_pinned_one():
    installed = {d.metadata["Name"].lower().replace("_", "-"): d.version.split("+")[0]  # 2.14.1+cpu is 2.14.1
                 for d in metadata.distributions()}
    direct = _pins(ROOT / "requirements.txt")
    if any(installed.get(name) != version for name, version in direct.items()):
        pytest.skip("not the environment make builds (another interpreter runs the tests)")
    wrong = {name: (installed[name], version) for name, version in _pins(ROOT / "constraints.txt").items()
             if name in installed and installed[name] != version}
    assert not wrong, f"installed versions differ from constraints.txt: {wrong}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def index(tmp_path):
    """A local PEP 503 index whose torch/ and torchvision/ pages list the pinned versions (as +cpu wheels)."""
    for name, version in torch_index.pins().items():
        (tmp_path / "whl" / name).mkdir(parents=True)
        (tmp_path / "whl" / name / "index.html").write_text(
            f'<a href="/whl/{name}-{version}%2Bcpu-cp311-cp311-linux_x86_64.whl#sha256=0">{name}-{version}+cpu</a>\n')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl", tmp_path / "whl"
    server.shutdown()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_torch_index_that_does_not_answer_is_one_line_and_installs_nothing(tmp_path):
    venv = tmp_path / "venv"
    url = f"http://127.0.0.1:{closed_port()}/whl/cpu"
    proc = subprocess.run(["make", "install", f"TORCH_INDEX={url}", f"VENV={venv}", f"PYTHON={sys.executable}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=""))  # no download, whatever happens
    line = one_error_line(proc)
    assert proc.returncode == 2 and f"TORCH_INDEX {url} does not answer" in line and "nothing installed" in line, line
    assert not venv.exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_torch_index_lists_the_pinned_versions_and_make_installs_them_from_it(index, tmp_path):
    url, folder = index
    assert run_cli("common.torch_index", url).returncode == 0
    plan = subprocess.run(["make", "-n", "install", f"TORCH_INDEX={url}", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60).stdout
    pins = " ".join(f"{name}=={version}" for name, version in torch_index.pins().items())
    assert f"pip install --no-deps --index-url '{url}' {pins}" in plan  # torch and torchvision from the index
    assert "-m venv --clear" in plan and "pip install -r requirements.txt -c constraints.txt" in plan  # the rest
    (folder / "torchvision" / "index.html").write_text('<a href="torchvision-0.1.0-py3-none-any.whl">old</a>\n')
    proc = run_cli("common.torch_index", url)
    line = one_error_line(proc)
    assert proc.returncode == 2 and f"has no torchvision {torch_index.pins()['torchvision']}" in line, line
    proc = run_cli("common.torch_index", "download.pytorch.org/whl/cpu")
    assert proc.returncode == 2 and "is not an http(s) URL" in one_error_line(proc)


# ------------------------------------------------------------------------------------------- pip install -e .
def test_pyproject_names_the_packages_of_requirements_unpinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    names = [re.match(r"[A-Za-z0-9_.\-]+", d).group(0).lower().replace("_", "-") for d in declared]
    assert sorted(names) == sorted(set(names)) == sorted(_pins(ROOT / "requirements.txt"))
    assert not [d for d in declared if "==" in d]  # an environment of one's own keeps its versions (its torch build)


def test_an_editable_install_runs_the_scripts_from_any_directory(tmp_path):
    """``pip install -e .`` into a fresh environment that sees this one's packages (nothing is downloaded: no index,
    no build isolation), then a script run from a folder outside the repository imports this checkout."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the editable install offline needs setuptools (>= 64) in this environment")
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    # --system-site-packages gives the base interpreter's packages, not this environment's (torch, pip, setuptools)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env,
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(purelib, "this-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    def run(*args, cwd=elsewhere):
        return subprocess.run([python, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120)

    before = run("-m", "bip.prune", "--help")
    assert before.returncode == 1 and "No module named 'bip'" in before.stderr  # not importable from there yet
    install = run("-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", ROOT, cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr
    proc = run("-m", "bip.prune", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m bip.prune") and "--config FILE" in proc.stdout
    where = run("-c", "import bip, figures.bip, slurm; print(bip.__file__, slurm.__file__)")
    assert where.stdout.split() == [str(ROOT / "bip" / "__init__.py"), str(ROOT / "slurm" / "__init__.py")]
