"""Figures and tables: a package per paper (``bip``, ``seqattn``, ``gmp``, ``posttrain``; ``compare`` for the
cross-paper figures), each holding that paper's run grid (``runs.py``) and one module per documented figure.

Target ``fig-a-b`` is module ``figures/<paper>/fig_a_b.py`` and ``tab-a-b`` is ``figures/<paper>/tab_a_b.py``; each
defines ``PAPER`` (what it reproduces), ``runs(profile)`` and ``draw(df, profile, base)`` (see ``figures.pipeline``).
``python -m figures <name> [--profile tiny|paper] [--out DIR]`` (or ``make <name> [OUT=DIR]``) computes the missing
runs, then draws ``DIR/<profile>/<name>.{png,pdf,csv}`` (tables: ``.md``, ``.tex``, ``.csv``; DIR defaults to
``figures/out``).
"""
from pathlib import Path

# target name -> module, found by file name so that each figure is one self-contained file
FIGURES = {p.stem.replace("_", "-"): f"figures.{p.parent.name}.{p.stem}"
           for p in sorted(Path(__file__).resolve().parent.glob("*/*.py"), key=lambda p: p.stem)
           if p.stem.startswith(("fig_", "tab_"))}
