"""Shared drawing helpers: atomic writes of png/pdf/csv/md/tex, the long per-run CSV and its summary, mean and spread
over seeds, the sparsity axis (log of the remaining fraction), the panel of per-seed paired differences with its
t-interval, the smoke-test mark of the outputs of the profiles that are not evidence (tiny, smoke), a consistent style.

Every output is written to ``<out>/<profile>/<name>.*`` (``figures.pipeline``, the notebooks): the profile is the name
of the folder ``base`` is in, and ``SMOKE_PROFILES`` says which profiles' images and tables are marked as a smoke test.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from common.store import atomic_write  # noqa: E402
from figures.claims import rule  # noqa: E402
from figures.profiles import PROFILES, SCOREBOARD  # noqa: E402

SMOKE_PROFILES = tuple(p for p in PROFILES if p not in SCOREBOARD)  # tiny, smoke: their runs are not evidence
SMOKE = "smoke test - not evidence"


def profile_of(base: Path) -> str:
    """The profile an output belongs to: the folder it is written in (``<out>/<profile>/<name>``)."""
    return Path(base).parent.name


def is_smoke(base: Path) -> bool:
    """Whether the output ``base`` is a smoke test (tiny, smoke: not a profile whose runs are evidence,
    ``figures.profiles.SCOREBOARD``): it then says so on every image and table."""
    return profile_of(base) in SMOKE_PROFILES


def mark_smoke(fig, profile: str = "tiny") -> None:
    """A line at the top and a large diagonal watermark across ``fig``: ``SMOKE``."""
    width = fig.get_size_inches()[0]
    fig.text(0.5, 0.5, SMOKE, ha="center", va="center", rotation=20, fontsize=min(60.0, 3.5 * width), color="red",
             alpha=0.13, zorder=1000, fontweight="bold")
    fig.text(0.5, 1.0, f"{SMOKE} ({profile} profile)", ha="center", va="bottom", fontsize=10, color="red",
             fontweight="bold")


IMAGE_FORMATS = (".png", ".pdf")  # each figure is drawn once per format


def save_figure(fig, base: Path) -> list[Path]:
    """``base.png`` and ``base.pdf`` (``IMAGE_FORMATS``), each written atomically (marked as a smoke test at a smoke
    profile)."""
    if is_smoke(base):
        mark_smoke(fig, profile_of(base))
    paths = [atomic_write(base.with_suffix(ext), lambda p: fig.savefig(p, dpi=150, bbox_inches="tight"))
             for ext in IMAGE_FORMATS]
    plt.close(fig)
    return paths


def save_csv(df: pd.DataFrame, base: Path) -> Path:
    return atomic_write(base.with_suffix(".csv"), lambda p: df.to_csv(p, index=False, float_format="%.6g"))


def save_table(df: pd.DataFrame, base: Path, caption: str = "", csv_suffix: str = "") -> list[Path]:
    """A table as ``.md`` (GitHub markdown), ``.tex`` (a tabular) and ``.csv`` (``base`` + ``csv_suffix``: a table
    that summarizes a long CSV of its own writes itself as ``<name>-summary.csv``). At a smoke profile both md and tex
    open with the line ``SMOKE``."""
    smoke = is_smoke(base)

    def md(p):
        cols = list(df.columns)
        lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
        head = f"**{SMOKE}** ({profile_of(base)} profile)\n\n" if smoke else ""
        head += f"{caption}\n\n" if caption else ""
        Path(p).write_text(head + "\n".join(lines) + "\n")

    def tex(p):
        cols = list(df.columns)
        body = [" & ".join(tex_escape(_fmt(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
        head = f"\\noindent\\textbf{{{tex_escape(SMOKE)}}} ({profile_of(base)} profile)\\par\n" if smoke else ""
        Path(p).write_text(head + "\\begin{tabular}{" + "l" * len(cols) + "}\n\\toprule\n"
                           + " & ".join(map(tex_escape, cols)) + r" \\" + "\n\\midrule\n" + "\n".join(body)
                           + "\n\\bottomrule\n\\end{tabular}\n")

    return [atomic_write(base.with_suffix(".md"), md), atomic_write(base.with_suffix(".tex"), tex),
            save_csv(df, base.with_name(base.name + csv_suffix))]


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


# ------------------------------------------------------------------------------------- the long CSV and its summary
def summarize(long: pd.DataFrame, arms, values, seed: str = "seed") -> pd.DataFrame:
    """Per arm (the distinct values of the ``arms`` columns, in their order of appearance): ``seeds`` (how many
    seeds it has, i.e. rows of ``long``) and ``<value>_mean``, ``_std``, ``_min``, ``_max`` of each of ``values``."""
    arms, values = list(arms), list(values)
    g = long.groupby(arms, dropna=False, sort=False) if arms else long.groupby(lambda _: 0)
    out = g[seed].size().rename("seeds").to_frame()
    for v in values:
        stats = g[v].agg(["mean", "std", "min", "max"])
        stats["std"] = stats["std"].fillna(0.0)
        out = out.join(stats.add_prefix(f"{v}_"))
    out = out.reset_index() if arms else out.reset_index(drop=True)
    return out[[*arms, "seeds", *[c for c in out.columns if c not in (*arms, "seeds")]]]


def save_long(long: pd.DataFrame, base: Path, arms, values, seed: str = "seed", summary=True) -> list[Path]:
    """The figure's data as ``base.csv``, long: one row per run and reported point, the ``arms`` columns (the config
    values that tell the compared arms apart, e.g. setup, method, sparsity), its ``seed`` (post-training: the
    calibration draw), the measured ``values``, then any other column of ``long`` (e.g. ``run``, the run's hash);
    sorted by the arms and the seed.
    ``summary``: True writes ``summarize(long, arms, values)`` as ``base-summary.csv``; a frame (a summary of the
    figure's own, derived from ``long``) is written there as it is; False writes none."""
    arms, values = list(arms), list(values)
    missing = [c for c in [*arms, seed, *values] if c not in long.columns]
    if missing:
        raise KeyError(f"{base.name}: the long table has no column(s) {missing}")
    ordered = [*arms, seed, *values]
    long = long[ordered + [c for c in long.columns if c not in ordered]].rename(columns={seed: "seed"})
    long = long.sort_values([*arms, "seed"], kind="stable", na_position="first").reset_index(drop=True)
    paths = [save_csv(long, base)]
    if summary is True:
        summary = summarize(long, arms, values)
    if isinstance(summary, pd.DataFrame):
        paths.append(save_csv(summary, base.with_name(base.name + "-summary")))
    return paths


# --------------------------------------------------------------------------------------------------- the sparsity axis
def _remaining_log(x):
    """Sparsity (%) -> -log10 of the remaining fraction 1 - s (clipped at 1e-6: 100% stays finite)."""
    return -np.log10(np.clip(1.0 - np.asarray(x, dtype=float) / 100.0, 1e-6, None))


def _remaining_log_inverse(y):
    return 100.0 * (1.0 - np.power(10.0, -np.asarray(y, dtype=float)))


def sparsity_axis(ax, ticks=None, label: str = "sparsity (%)", most: int = 11) -> None:
    """x in sparsity (%), drawn on a log scale of the remaining fraction 1 - s, so that the grid 1 - 0.8^n is evenly
    spaced and the high-sparsity end, where methods part, gets room; ticks at ``ticks`` (at most ``most`` of them,
    every other one dropped until they fit), labelled with the sparsity."""
    ax.set_xscale("function", functions=(_remaining_log, _remaining_log_inverse))
    if ticks is not None:
        ticks = sorted({round(float(t), 4) for t in ticks if np.isfinite(float(t))})
        while len(ticks) > most:
            ticks = ticks[::-2][::-1]  # keep the last (sparsest) one
        at = _remaining_log(ticks)
        gap = (at.max() - at.min()) / (most - 1) if len(ticks) > 1 else 0.0
        labels, last = [], None  # a label at least ``gap`` from the next one labelled, from the sparsest end
        for t, a in zip(ticks[::-1], at[::-1]):
            keep = last is None or last - a >= 0.999 * gap
            labels.append(f"{t:.3g}" if keep else "")
            last = a if keep else last
        ax.set_xticks(ticks, labels[::-1], fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(f"{label} (log scale of the remaining 1 - s)")


# ------------------------------------------------------------------------------- paired differences and t-interval
def n_text(n) -> str:
    """The seeds behind a series' points: "5", or "2-5" where some points have fewer."""
    lo, hi = int(np.min(n)), int(np.max(n))
    return f"{hi}" if lo == hi else f"{lo}-{hi}"


def t_interval(diffs, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the paired differences ``diffs`` and its two-sided 1 - ``alpha`` t-interval, as
    the scoreboard's rule computes it (``figures.claims.rule.compare``, paired, whose one-sided bounds at alpha / 2
    are this interval); NaN bounds for fewer than two values."""
    d = np.asarray(pd.Series(diffs, dtype=float).dropna())
    if len(d) < 2:
        return (float(d.mean()) if len(d) else math.nan), math.nan, math.nan
    c = rule.compare(d, np.zeros_like(d), paired=True, margin=0.0, alpha=alpha / 2)
    return c.estimate, c.lower, c.upper


def paired(long: pd.DataFrame, side: str, better, other, value: str, by, seed: str = "seed") -> pd.DataFrame:
    """Per seed and point: ``value`` of the rows with ``side == better`` minus that of ``side == other``, paired on
    the ``by`` columns and the seed: the ``by`` columns, ``seed`` and ``diff`` (points where either is missing are
    left out)."""
    keys = [*by, seed]
    a = long[long[side] == better].set_index(keys)[value]
    b = long[long[side] == other].set_index(keys)[value]
    d = (a - b).dropna().rename("diff").reset_index()
    return d.rename(columns={seed: "seed"})


def paired_panel(ax, diffs: pd.DataFrame, x: str, series: str | None = None, colors=None, labels=None,
                 ylabel: str = "difference", alpha: float = 0.05, line: bool = True) -> None:
    """Per-seed paired differences against ``x`` (``diffs``: rows of ``paired``, with an ``x`` column; one series
    per value of ``series``): one dot per seed, the mean with its 1 - ``alpha`` t-interval, the line at zero. Set
    the x scale first (``sparsity_axis``, log, or positions): the series are set apart along it. ``line``: join a
    series' means (False where x is a category)."""
    ax.axhline(0.0, color="0.4", lw=0.8)
    if diffs is None or not len(diffs):
        ax.text(0.5, 0.5, "no paired runs", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_ylabel(ylabel)
        return
    groups = list(diffs.groupby(series, sort=False)) if series else [(None, diffs)]
    scale = ax.xaxis.get_transform()
    xs = np.unique(scale.transform(np.asarray(diffs[x], dtype=float).reshape(-1, 1)).ravel())
    gap = float(np.min(np.diff(xs))) if len(xs) > 1 else 0.6
    width = 0.35 * gap / max(1, len(groups))
    inverse = scale.inverted()
    for k, (name, g) in enumerate(groups):
        color = (colors or {}).get(name, f"C{k}") if isinstance(colors, dict) else f"C{k}"
        label = (labels or {}).get(name, name) if isinstance(labels, dict) else name
        shift = (k - (len(groups) - 1) / 2) * width
        stats = []
        for xv, h in g.groupby(x, sort=True):
            at = float(inverse.transform([[scale.transform([[float(xv)]])[0, 0] + shift]])[0, 0])
            ax.plot([at] * len(h), h["diff"], ".", color=color, alpha=0.45, ms=5)
            stats.append((at, *t_interval(h["diff"], alpha), len(h)))
        at, mean, lo, hi, n = (np.array(v, dtype=float) for v in zip(*stats))
        err = np.where(np.isnan(lo), 0.0, [mean - lo, hi - mean])
        ax.errorbar(at, mean, yerr=err, fmt="D-" if line else "D", ms=4, lw=1, capsize=3, color=color,
                    label=None if label is None else f"{label} (n = {n_text(n)})")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)


PAIRED_NOTE = "paired by seed: dots = seeds, diamonds = mean with its 95% t-interval"
