"""Check a PyTorch wheel index before ``make install TORCH_INDEX=URL`` installs torch / torchvision from it.

    python3 -m common.torch_index https://download.pytorch.org/whl/cu126   # exit 0, or one error line and exit 2

The index must answer (its ``torch/`` and ``torchvision/`` pages, PEP 503) and list the versions pinned in
requirements.txt; otherwise nothing is installed. Standard library only: it runs before the virtual environment
exists.
"""
from __future__ import annotations

import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from common.errors import UserError, exit_code

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
PACKAGES = ("torch", "torchvision")
EXAMPLES = "e.g. https://download.pytorch.org/whl/cu126 (CUDA 12.6) or https://download.pytorch.org/whl/cpu"


def pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    """{package: version} of torch and torchvision as requirements.txt pins them."""
    found = dict(re.findall(r"^(torch|torchvision)==(\S+)", path.read_text(), re.M))
    return {name: found[name] for name in PACKAGES if name in found}


def check(url: str, timeout: float = 30.0) -> None:
    """A UserError (one line) unless the index at ``url`` answers and lists the pinned torch and torchvision."""
    if not re.match(r"https?://\S+$", url):
        raise UserError(f"TORCH_INDEX {url!r} is not an http(s) URL; give a PyTorch wheel index, {EXAMPLES}")
    for name, version in pins().items():
        page = f"{url.rstrip('/')}/{name}/"
        try:
            with urllib.request.urlopen(page, timeout=timeout) as response:
                text = response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise UserError(f"TORCH_INDEX {url} does not answer ({page}: {why}); nothing installed; check the URL, "
                            f"{EXAMPLES}") from None
        if not re.search(rf"{name}-{re.escape(version)}((\+|%2B)[\w.]+)?-", text, re.I):  # a "+" may be quoted
            raise UserError(f"TORCH_INDEX {url} has no {name} {version} (the version requirements.txt pins); "
                            f"nothing installed; choose an index that has it ({EXAMPLES}), or change the pins")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python3 -m common.torch_index URL", file=sys.stderr)
        return 2
    return exit_code(lambda: check(argv[0]))


if __name__ == "__main__":
    raise SystemExit(main())
