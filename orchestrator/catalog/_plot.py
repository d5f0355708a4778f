"""The catalog as a picture: top-1 accuracy against FLOPs, anchors marked, Pareto front drawn.

``plot(df, "front.png")`` (or ``python -m orchestrator.catalog plot CATALOG --out front.png``)
draws every stitch as a dot coloured by trial (or by sampling rule or sweep), the anchors
(unstitched models) as stars annotated with their names, and the Pareto front (see
:func:`~orchestrator.catalog._query.pareto_front`) as a dashed step line: the best top-1
reachable within each FLOPs budget. The FLOPs axis is in GFLOPs or MFLOPs and logarithmic
when the FLOPs span more than 10x. Matplotlib draws with its Agg canvas directly (no
``pyplot``), so calling this from a notebook neither opens windows nor switches its backend.

Matplotlib is imported inside the functions that draw, the one deferral here: ``import
orchestrator.catalog`` and ``python -m orchestrator.catalog query`` start without its import time.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

from orchestrator.catalog._query import anchor_path, pareto_front
from orchestrator.catalog._read import load
from orchestrator.catalog._repeats import drop_repeats
from orchestrator.cli import flops_unit, plural
from snnet import SNNetError

__all__ = ["COLOR_BY", "plot", "plot_path"]

#: What the colours can distinguish.
COLOR_BY = ("trial", "sampling", "sweep")
_SIZE = (9.0, 6.0)  # inches
_DPI = 150
_MAX_LEGEND = 16  # colour entries listed before "+N more"


def _minor_label(value: float, _pos: Any = None) -> str:
    """Label the 2x and 5x minor ticks of a log axis that spans less than three decades."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (2.0, 5.0) else ""


def _groups(df: pd.DataFrame, color_by: str) -> list[str]:
    """The colour label of every row."""
    def text(v: Any, missing: str) -> str:
        return missing if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)

    if color_by == "trial":
        many_sweeps = "sweep" in df.columns and df["sweep"].nunique(dropna=False) > 1
        if many_sweeps:
            return [f"{text(s, '?')}/{text(t, '?')}" for s, t in zip(df["sweep"], df["trial_id"])]
        return [text(t, "?") for t in df["trial_id"]]
    column = "sampling" if color_by == "sampling" else "sweep"
    return [text(v, "(none)") for v in df[column]]


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def _default_title(df: pd.DataFrame, catalog: str | os.PathLike[str] | None) -> str:
    parts = []
    if catalog is not None:
        name = os.path.basename(os.fspath(catalog).rstrip("/")) or os.fspath(catalog)
        parts.append(f"catalog {name}")
    if "sweep" in df.columns:
        names = sorted(str(s) for s in df["sweep"].dropna().unique())
        if len(names) == 1:
            parts.append(f"sweep {names[0]}")
        elif names:
            parts.append(f"{len(names)} sweeps")
    by = [c for c in ("sweep", "trial_id") if c in df.columns]
    trials = df.groupby(by, dropna=False).ngroups if "trial_id" in by else None
    parts.append(f"{len(df)} stitches" + (f", {plural(trials, 'trial')}" if trials else ""))
    return "Stitch " + " \u00b7 ".join(parts) if catalog is not None else "Stitches: " + " \u00b7 ".join(parts)


def plot(
    df: pd.DataFrame | str | os.PathLike[str],
    out: str | os.PathLike[str],
    color_by: str = "trial",
    *,
    title: str | None = None,
    sweep: str | None = None,
    catalog: str | os.PathLike[str] | None = None,
    pareto: bool = True,
) -> str:
    """Draw top-1 against FLOPs for every row of ``df`` into ``out`` (PNG, 9x6 in at 150 dpi).

    ``df`` is a DataFrame from :func:`load`/:func:`query` or a catalog path (then read with
    ``sweep``). ``color_by`` is ``"trial"``, ``"sampling"`` or ``"sweep"``. Rows without top-1
    are left out. ``catalog`` only names the catalog in the default title. Returns the file written:
    ``out``, or ``out + ".png"`` when ``out`` has no extension; a folder or an empty ``out`` raises
    SNNetError before the catalog is read.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = plot_path(out)
    df, catalog = _plottable(df, color_by, sweep, catalog)
    rows = df[df["top1"].notna() & df["flops"].notna()]
    if rows.empty:
        raise SNNetError("Nothing to plot: no row has both FLOPs and a top-1 accuracy.")
    flops = [float(f) for f in rows["flops"]]
    top1 = [float(t) for t in rows["top1"]]
    scale, prefix = flops_unit(max(flops), units=("G", "M", "K"))
    x = [f / scale for f in flops]
    is_anchor = [len(anchor_path(a)) == 1 for a in rows["anchors"]]

    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles = _scatter(ax, x, top1, is_anchor, _groups(rows, color_by), color_by)
    if pareto:
        _draw_front(ax, rows, x)
    _scale_x(ax, x)
    ax.margins(x=0.05, y=0.06)
    _name_anchors(ax, rows, x, top1, is_anchor)
    ax.set_xlabel(f"{prefix}FLOPs per image" + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.set_title(title if title is not None else _default_title(rows, catalog), fontsize=11)
    _legends(fig, ax, handles, color_by, pareto)
    try:
        fig.savefig(out, dpi=_DPI)
    except (ValueError, OSError) as e:
        raise SNNetError(f"Cannot write the plot to {out!r}: {e}") from None
    return out


def _plottable(
    df: pd.DataFrame | str | os.PathLike[str], color_by: str, sweep: str | None,
    catalog: str | os.PathLike[str] | None,
) -> tuple[pd.DataFrame, str | os.PathLike[str] | None]:
    """The table to plot (read from the catalog when ``df`` names one) and the catalog the title
    names; a missing column or a wrong ``color_by`` raises SNNetError."""
    if color_by not in COLOR_BY:
        raise SNNetError(f"--color-by / color_by must be one of {', '.join(COLOR_BY)}, got {color_by!r}.")
    if not isinstance(df, pd.DataFrame):
        catalog = df if catalog is None else catalog
        df = drop_repeats(load(df, sweep=sweep))  # a configuration counts once, as in query
    needed = ["flops", "top1", "anchors"] + (["trial_id"] if color_by == "trial" else [color_by])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise SNNetError(f"Cannot plot: the table lacks the column(s) {', '.join(missing)}.")
    return df, catalog


def plot_path(out: str | os.PathLike[str]) -> str:
    """The file the plot goes to: ``out``, with ``.png`` added when it names no format (as matplotlib
    would add it, so the name returned is the file written); a folder, an empty name or a missing
    folder raises SNNetError before anything is read."""
    out = os.fspath(out)
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    if not out or out.endswith(seps) or os.path.isdir(out):
        got = "an empty name" if not out else f"{out!r}, which is a folder"
        raise SNNetError(f"The plot's file (--out / out) must name a file such as front.png, got {got}; "
                         f"to write into a folder, name the file in it: "
                         f"{os.path.join(out or '.', 'front.png')!r}.")
    if not os.path.splitext(os.path.basename(out))[1].strip("."):
        out = out.rstrip(".") + ".png"
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise SNNetError(f"Cannot write the plot to {out!r}: the folder {folder!r} does not exist.")
    return out


def _scatter(ax: Any, x: list[float], top1: list[float], is_anchor: list[bool], labels: list[str],
             color_by: str) -> list[Any]:
    """Dots for stitches and stars for anchors, one colour per label; the legend entries."""
    from matplotlib.lines import Line2D

    order = sorted(set(labels))
    colors = dict(zip(order, _palette(len(order))))
    handles: list[Any] = []
    for label in order:
        pts = [i for i, lab in enumerate(labels) if lab == label and not is_anchor[i]]
        ax.scatter([x[i] for i in pts], [top1[i] for i in pts], s=26, color=colors[label], alpha=0.8,
                   edgecolors="white", linewidths=0.4, zorder=3)
        stars = [i for i, lab in enumerate(labels) if lab == label and is_anchor[i]]
        ax.scatter([x[i] for i in stars], [top1[i] for i in stars], s=190, marker="*", color=colors[label],
                   edgecolors="black", linewidths=0.7, zorder=5)
        handles.append(Line2D([], [], ls="", marker="o", markersize=7, color=colors[label], label=label))
    shown = handles[:_MAX_LEGEND]
    if len(handles) > _MAX_LEGEND:
        shown.append(Line2D([], [], ls="", label=f"+{len(handles) - _MAX_LEGEND} more {color_by}s"))
    return shown


def _draw_front(ax: Any, rows: pd.DataFrame, x: list[float]) -> None:
    front = pareto_front(rows.assign(_x=x))
    if not front.empty:
        fx, fy = list(front["_x"]), [float(t) for t in front["top1"]]
        ax.step(fx, fy, where="post", color="black", lw=1.3, ls="--", zorder=4)
        ax.scatter(fx, fy, s=70, facecolors="none", edgecolors="black", linewidths=1.0, zorder=4)


def _scale_x(ax: Any, x: list[float]) -> None:
    """A logarithmic FLOPs axis when the FLOPs span more than 10x."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    xmin, xmax = min(x), max(x)
    if xmin > 0 and xmax / xmin > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if xmax / xmin < 1000:
            ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        else:
            ax.xaxis.set_minor_formatter(NullFormatter())


def _name_anchors(ax: Any, rows: pd.DataFrame, x: list[float], top1: list[float], is_anchor: list[bool]) -> None:
    """Name each anchor once, at its best evaluation; labels on the right half point leftwards."""
    best: dict[str, int] = {}
    for i, a in enumerate(rows["anchors"]):
        if is_anchor[i]:
            name = anchor_path(a)[0]
            if name not in best or top1[i] > top1[best[name]]:
                best[name] = i
    left, right = (min(x), max(x))
    logx = ax.get_xscale() == "log"
    for name, i in sorted(best.items(), key=lambda kv: x[kv[1]]):
        span = (math.log(right / left) if logx else right - left) or 1.0
        where = (math.log(x[i] / left) if logx else x[i] - left) / span
        to_left = where > 0.6
        ax.annotate(name, (x[i], top1[i]), xytext=(-9 if to_left else 9, -14), textcoords="offset points",
                    ha="right" if to_left else "left", fontsize=8, zorder=6,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.7", alpha=0.85))


def _legends(fig: Any, ax: Any, handles: list[Any], color_by: str, pareto: bool) -> None:
    """The marker key inside the axes, the colours outside on the right."""
    from matplotlib.lines import Line2D

    keys = [Line2D([], [], ls="", marker="o", markersize=6, color="0.45", label="stitch"),
            Line2D([], [], ls="", marker="*", markersize=13, color="0.45", markeredgecolor="black",
                   label="anchor")]
    if pareto:
        keys.append(Line2D([], [], color="black", ls="--", marker="o", markerfacecolor="none", label="Pareto front"))
    legend_title = {"trial": "trial", "sampling": "sampling rule", "sweep": "sweep"}[color_by]
    ax.legend(handles=keys, loc="lower right", fontsize=8, framealpha=0.9)
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title=legend_title, title_fontsize=9,
               frameon=False)
