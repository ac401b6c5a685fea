"""The environment `make` builds is pinned: every direct dependency in requirements.txt and every installed package in
constraints.txt has one exact version, and the environment the tests run in is that one."""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

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
    installed = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in metadata.distributions()}
    direct = _pins(ROOT / "requirements.txt")
    if any(installed.get(name) != version for name, version in direct.items()):
        pytest.skip("not the environment make builds (another interpreter runs the tests)")
    wrong = {name: (installed[name], version) for name, version in _pins(ROOT / "constraints.txt").items()
             if name in installed and installed[name] != version}
    assert not wrong, f"installed versions differ from constraints.txt: {wrong}"
