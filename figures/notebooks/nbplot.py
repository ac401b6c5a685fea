"""Helpers for the notebooks in this folder: a paper's figure drawn from the run store by its own figure module when
every run it needs is there; otherwise the `make` command that computes them and an exploratory plot of whatever runs
of that script the store holds (any subset of seeds, sparsities, methods or models), so a researcher always sees
their own results.

Everything is read through ``common.store.collect`` (plus the run logs / result files its rows point to). Figures are
rendered to PNG and displayed explicitly: the figure modules select matplotlib's Agg backend when imported, so the
inline backend's automatic display cannot be relied on (it is restored for the notebook's own cells).
"""
from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path

import figures.plot  # noqa: F401 - selects Agg; imported before the inline backend is restored below
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter

from common.store import collect, read_log
from figures import FIGURES
from figures.pipeline import figure_module, missing_runs, planned_runs

MAX_LOG_RUNS = 48  # plots built from run logs read at most this many runs (the first ones of the selection)


def _display(obj) -> None:
    from IPython.display import display

    display(obj)


def show(fig) -> None:
    """Display a matplotlib figure inline as a PNG and close it."""
    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    _display(Image(data=buf.getvalue(), format="png"))


def _inline() -> None:
    """Give the notebook's own cells the inline backend back (figures.plot selected Agg on import)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and "IPKernelApp" in shell.config:
        shell.run_line_magic("matplotlib", "inline")


# ------------------------------------------------------------------------------------------------ selecting rows
def select(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    """Rows matching every condition: a value, a list of values, None (missing) or a predicate on the column.
    A condition on a column these runs do not have is ignored (their script has no such option)."""
    for col, want in (where or {}).items():
        if col not in df:
            continue
        values = df[col]
        if callable(want):
            keep = want(values)
        elif isinstance(want, (list, tuple, set)):
            keep = values.isin(list(want))
        elif want is None:
            keep = values.isna()
        else:
            keep = values == want
        df = df[keep.fillna(False).astype(bool)]
    return df


def expand(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """``runs``: the rows as they are; ``log:<event>``: one row per log record of that event (``log:epoch``: the
    per-epoch records); ``result:<key>``: one row per entry of a list in result.json (``index`` counts from 1).
    Each expanded row keeps its run's columns; the record's fields take precedence."""
    if source == "runs" or df.empty:
        return df
    kind, _, key = source.partition(":")
    runs = df.drop_duplicates("run_dir")
    if len(runs) > MAX_LOG_RUNS:
        print(f"reading the first {MAX_LOG_RUNS} of {len(runs)} runs (narrow the selection with where=...)")
        runs = runs.head(MAX_LOG_RUNS)
    rows = []
    for _, run in runs.iterrows():
        if kind == "log":
            records = read_log(run["run_dir"])
            items = [r for r in records if ("event" not in r and "epoch" in r if key == "epoch"
                                            else r.get("event") == key)]
        elif kind == "result":
            result = json.loads((Path(run["run_dir"]) / "result.json").read_text())
            items = [dict(item, index=i) for i, item in enumerate(result.get(key) or [], 1)]
        else:
            raise ValueError(f"unknown source '{source}': use runs, log:<event> or result:<key>")
        rows += [{**run.to_dict(), **item} for item in items]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ plotting
def _short(col: str) -> str:
    return col.removeprefix("config.")


def _percent(col: str) -> bool:
    name = _short(col).rsplit(".", 1)[-1]
    return name.endswith("acc") or "sparsity" in name or name == "ratio"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "default"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _axis(df: pd.DataFrame, col: str) -> tuple[pd.Series, str]:
    values = df[col]
    if _percent(col) and pd.api.types.is_numeric_dtype(values):
        return 100 * values, f"{_short(col)} (%)"
    return values, _short(col)


def plot(df: pd.DataFrame, y: str, x: str | None = None, by=(), panel: str | None = None, logx=False, logy=False,
         title: str = "", ref: str | None = None) -> pd.DataFrame:
    """Mean of ``y`` (min-max shaded) against ``x`` for every group of the ``by`` columns, one panel per value of
    ``panel``; without ``x``, one bar per group; ``ref``: a column whose mean is drawn dashed (e.g. the dense model's
    accuracy). Columns absent from ``df`` are ignored; a group label names only the ``by`` columns that take several
    values. Returns the plotted numbers (panel, group, x, mean, min, max, count)."""
    if y not in df:
        print(f"no column '{y}' in these runs")
        return pd.DataFrame()
    data = df[df[y].notna()].copy()
    data["_y"], ylabel = _axis(data, y)
    varying = [c for c in by if c in data and data[c].map(_fmt).nunique() > 1]
    if len(varying) == 1:
        data["_group"] = data[varying[0]].map(_fmt)
    else:
        data["_group"] = (data[varying].apply(lambda r: ", ".join(f"{_short(c)}={_fmt(v)}" for c, v in r.items()),
                                              axis=1) if varying else "all runs")
    data["_panel"] = data[panel].map(_fmt) if panel in data else ""
    if x is not None:
        if x not in data:
            print(f"no column '{x}' in these runs")
            return pd.DataFrame()
        data["_x"], xlabel = _axis(data, x)
        if pd.api.types.is_numeric_dtype(data["_x"]):
            data["_x"] = data["_x"].round(2)  # pools seeds whose realized sparsity differs in the last digits
    panels = list(dict.fromkeys(data["_panel"]))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.7 * rows), squeeze=False)
    tables = []
    for ax, name in zip(axes.flat, panels):
        part = data[data["_panel"] == name]
        if x is None:
            s = part.groupby("_group")["_y"].agg(["mean", "min", "max", "count"]).reset_index()
            ax.barh(range(len(s)), s["mean"], xerr=[s["mean"] - s["min"], s["max"] - s["mean"]], capsize=2,
                    color=[f"C{i % 10}" for i in range(len(s))])
            ax.set_yticks(range(len(s)), s["_group"], fontsize=7)
            ax.set(xlabel=ylabel, xscale="log" if logy else "linear")
        else:
            parts = []
            for i, (group, g) in enumerate(part.groupby("_group", sort=True)):
                s = g.groupby("_x")["_y"].agg(["mean", "min", "max", "count"]).reset_index().assign(_group=group)
                ax.plot(s["_x"], s["mean"], marker="o", ms=3, lw=1.2, color=f"C{i % 10}",
                        label=f"{group} (n={int(s['count'].max())})")
                if (s["count"] > 1).any():
                    ax.fill_between(s["_x"], s["min"], s["max"], color=f"C{i % 10}", alpha=0.15, lw=0)
                parts.append(s)
            s = pd.concat(parts, ignore_index=True)
            if ref in part and part[ref].notna().any():
                level = _axis(part, ref)[0].mean()
                ax.axhline(level, color="k", ls="--", lw=1, label=f"{_short(ref)} ({level:.4g})")
            ax.set(xlabel=xlabel, ylabel=ylabel, xscale="log" if logx else "linear",
                   yscale="log" if logy else "linear")
            for axis, on in ((ax.xaxis, logx), (ax.yaxis, logy)):
                if on:
                    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.legend(fontsize=6)
        ax.set_title(f"{_short(panel)}={name}" if panel in data else title, fontsize=9)
        ax.grid(alpha=0.3)
        tables.append(s.assign(_panel=name))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title and panel in data:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    show(fig)
    return pd.concat(tables, ignore_index=True).rename(columns={"_panel": "panel", "_group": "group", "_x": "x"})


# ------------------------------------------------------------------------------------------------ the store
class Store:
    """The run store a notebook reads, the profile whose figures it plans, and where drawn figures are written
    (a temporary folder unless given: the notebooks never overwrite ``figures/out``)."""

    def __init__(self, runs_dir, profile: str = "tiny", out_dir=None):
        self.runs_dir, self.profile = str(runs_dir), profile
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="pruning-notebook-"))
        self.drawn: dict[str, list[Path]] = {}  # figure name -> the files its draw() wrote
        self.stats = pd.DataFrame()  # the numbers of the last exploratory plot
        _inline()

    def summary(self) -> pd.DataFrame:
        """Finished runs per script in the store."""
        df = collect(self.runs_dir)
        if df.empty:
            print(f"no finished runs in {self.runs_dir} yet")
            return df
        return df.groupby("script")["hash"].nunique().rename("finished runs").reset_index()

    def runs(self, script: str | tuple, where: dict | None = None, source: str = "runs") -> pd.DataFrame:
        """``collect()`` rows of one script (or several), selected by ``where`` (per script) and expanded by
        ``source`` (see ``expand``)."""
        parts = [select(collect(self.runs_dir, s), where) for s in ((script,) if isinstance(script, str) else script)]
        parts = [p for p in parts if len(p)]
        return expand(pd.concat(parts, ignore_index=True), source) if parts else pd.DataFrame()

    def explore(self, script: str | tuple, y: str, x: str | None = None, by=(), panel: str | None = None,
                where: dict | None = None, source: str = "runs", logx=False, logy=False, ref: str | None = None):
        """An exploratory plot (``plot``) of the finished runs of ``script`` in the store."""
        names = script if isinstance(script, str) else " + ".join(script)
        df = self.runs(script, where, source)
        if df.empty:
            print(f"no finished {names} runs{' of this selection' if where else ''} in {self.runs_dir}")
            return
        n = df["run_dir"].nunique()
        self.stats = plot(df, y, x, by, panel, logx, logy, title=f"{names}: {n} runs in the store", ref=ref)

    def figure(self, name: str, explore: dict | None = None) -> None:
        """The paper figure ``name`` drawn by its module when all its runs are done, else the command that computes
        them and ``explore(**explore)``."""
        if name not in FIGURES:
            print(f"{name}: no figures/<paper>/{name.replace('-', '_')}.py in this checkout")
            return
        module = figure_module(name)
        _display_markdown(f"**`{name}`** reproduces: {module.PAPER}")
        rows = planned_runs(name, self.profile, {"runs_dir": self.runs_dir})
        missing = missing_runs(rows)
        if not missing:
            self.drawn[name] = paths = self._draw(name, module, rows)
            for p in paths:
                if p.suffix == ".png":
                    from IPython.display import Image

                    _display(Image(filename=str(p)))
                elif p.suffix == ".md":
                    _display_markdown(p.read_text())
            return
        print(f"{len(missing)} of the {len(rows)} runs of {name} ({self.profile} profile) are not in {self.runs_dir}; "
              f"`make {name} PROFILE={self.profile} RUNS={self.runs_dir}` computes them.")
        if explore:
            print("Exploratory view of the runs that are there:")
            self.explore(**explore)

    def _draw(self, name: str, module, rows) -> list[Path]:
        """As ``figures.pipeline.make`` draws: ``collect()`` rows of exactly the figure's runs."""
        from common.store import Run

        hashes = {Run(s, c).hash for s, c in rows}
        df = collect(self.runs_dir)
        df = df[df["hash"].isin(hashes)].reset_index(drop=True)
        return module.draw(df, self.profile, self.out_dir / self.profile / name)


def _display_markdown(text: str) -> None:
    from IPython.display import Markdown

    _display(Markdown(text))
