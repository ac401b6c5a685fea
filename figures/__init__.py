"""Figures and tables: one module per documented figure, each declaring the runs it needs and how it is drawn.

``python -m figures <name> [--profile tiny|paper]`` (or ``make <name>``) computes the missing runs, then draws
``figures/out/<profile>/<name>.{png,pdf,csv}`` (tables: ``.md``, ``.tex``, ``.csv``).
"""

# target name -> module; the paper figure/table each reproduces is in the module's PAPER attribute.
FIGURES = {
    "fig-gmp-schedule": "figures.gmp_schedule",
    "fig-gmp-vs-oneshot": "figures.gmp_vs_oneshot",
    "fig-gmp-wd": "figures.gmp_wd",
}
