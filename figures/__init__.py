"""Figures and tables: one module per documented figure, each declaring the runs it needs and how it is drawn.

Target ``fig-a-b`` is module ``figures/fig_a_b.py`` and ``tab-a-b`` is ``figures/tab_a_b.py``; each defines ``PAPER``
(what it reproduces), ``runs(profile)`` and ``draw(df, profile, base)`` (see ``figures.pipeline``).
``python -m figures <name> [--profile tiny|paper]`` (or ``make <name>``) computes the missing runs, then draws
``figures/out/<profile>/<name>.{png,pdf,csv}`` (tables: ``.md``, ``.tex``, ``.csv``).
"""
from pathlib import Path

# target name -> module, found by file name so that each figure is one self-contained file
FIGURES = {p.stem.replace("_", "-"): f"figures.{p.stem}"
           for p in sorted(Path(__file__).resolve().parent.glob("*.py")) if p.stem.startswith(("fig_", "tab_"))}
