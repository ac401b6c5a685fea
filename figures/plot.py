"""Shared drawing helpers: atomic writes of png/pdf/csv/md/tex, mean and spread over seeds, a consistent style."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from common.store import atomic_write  # noqa: E402


def save_figure(fig, base: Path) -> list[Path]:
    """``base.png`` and ``base.pdf``, each written atomically."""
    paths = [atomic_write(base.with_suffix(ext), lambda p: fig.savefig(p, dpi=150, bbox_inches="tight"))
             for ext in (".png", ".pdf")]
    plt.close(fig)
    return paths


def save_csv(df: pd.DataFrame, base: Path) -> Path:
    return atomic_write(base.with_suffix(".csv"), lambda p: df.to_csv(p, index=False, float_format="%.6g"))


def save_table(df: pd.DataFrame, base: Path, caption: str = "") -> list[Path]:
    """A table as ``.md`` (GitHub markdown), ``.tex`` (a tabular) and ``.csv``."""
    def md(p):
        cols = list(df.columns)
        lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
        Path(p).write_text((f"{caption}\n\n" if caption else "") + "\n".join(lines) + "\n")

    def tex(p):
        cols = list(df.columns)
        body = [" & ".join(tex_escape(_fmt(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
        Path(p).write_text("\\begin{tabular}{" + "l" * len(cols) + "}\n\\toprule\n"
                           + " & ".join(map(tex_escape, cols)) + r" \\" + "\n\\midrule\n" + "\n".join(body)
                           + "\n\\bottomrule\n\\end{tabular}\n")

    return [atomic_write(base.with_suffix(".md"), md), atomic_write(base.with_suffix(".tex"), tex), save_csv(df, base)]


TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
       "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(text) -> str:
    """``text`` with every character that TeX reads as markup escaped (a ``%`` would comment out the rest)."""
    return "".join(TEX.get(ch, ch) for ch in str(text))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def mean_spread(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean, standard deviation, min, max and count of ``value`` over the rows of each group (the seeds)."""
    g = df.groupby(by, dropna=False)[value]
    out = g.agg(["mean", "std", "min", "max", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def band(ax, x, stats: pd.DataFrame, label: str, color=None, marker="o"):
    """The mean over seeds as a curve, their min-max range shaded (``stats`` from ``mean_spread``)."""
    ax.plot(x, stats["mean"], marker=marker, ms=4, label=label, color=color)
    ax.fill_between(x, stats["min"], stats["max"], alpha=0.2, color=color, linewidth=0)
