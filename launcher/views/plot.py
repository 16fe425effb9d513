"""``launcher plot``: one metric of several experiments on one figure.

The points come from each work dir's ``metrics.jsonl`` (train records every logging interval,
val records at each evaluation; see :mod:`launcher.views.metrics`). Curves are x = iteration; each
experiment has its own colour and line style (:func:`curve_styles`: 10 colours, then the same
colours dashed, dotted, dash-dotted), the legend sits to the right of the axes, and a run with a
single point is a marker with its value written next to it. When every experiment has one
point (a metric evaluated once per run), the figure is a dot plot instead: one row per
experiment, its value marked and written. matplotlib draws without pyplot (no display, no
global state), and the PNG is written to a temporary file and renamed into place.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from detcore.atomic import replacing
from launcher.errors import LauncherError
from launcher.views.metrics import read_history

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_NOT_METRICS = ("iter", "epoch", "mode")
COLORS = tuple(f"C{i}" for i in range(10))  # matplotlib's default (tab10) cycle
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LEGEND_ROWS = 30  # legend entries per column


@dataclass(frozen=True)
class CurveStyle:
    color: str
    linestyle: str
    marker: str


def curve_styles(n: int) -> list[CurveStyle]:
    """The style of each of ``n`` curves (pure): the 10 colours in order, then again with the next line
    style and marker, so (colour, line style) pairs differ up to 40 curves and (colour, marker) up to 80."""
    return [CurveStyle(COLORS[i % len(COLORS)], LINE_STYLES[(i // len(COLORS)) % len(LINE_STYLES)],
                       MARKERS[(i // len(COLORS)) % len(MARKERS)]) for i in range(n)]


def curve(records: Sequence[dict[str, Any]], metric: str) -> tuple[list[int], list[float]]:
    """``(iterations, values)`` of ``metric`` in the records that have both (pure). A resumed run that
    logged an iteration twice keeps the newer value."""
    points: dict[int, float] = {}
    for rec in records:
        value, it = rec.get(metric), rec.get("iter")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(it, int):
            points[it] = float(value)
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def available_metrics(histories: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """Every numeric key any record has (except iter/epoch), sorted."""
    return sorted({k for records in histories for rec in records for k, v in rec.items()
                   if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)})


def _value(v: float) -> str:
    """Three significant digits, trailing zeros kept so values line up (0.600, 0.456, 1.16)."""
    return f"{v:#.3g}".rstrip(".")


def draw_figure(labels: Sequence[str], curves: Sequence[tuple[list[int], list[float]]], metric: str,
                title: str | None = None) -> Figure:
    """The figure of ``curves`` (one per label; empty ones are left out): curves over iterations with
    the legend outside the axes, or a dot plot when no curve has more than one point."""
    from matplotlib.figure import Figure

    styles = curve_styles(len(labels))
    drawn = [(label, xs, ys, style) for label, (xs, ys), style in zip(labels, curves, styles) if xs]
    longest = max((len(label) for label, *_ in drawn), default=10)
    if all(len(xs) == 1 for _, xs, _, _ in drawn):
        fig = Figure(figsize=(5.5 + 0.07 * longest, 1.4 + 0.32 * len(drawn)), dpi=100, layout="constrained")
        _dot_plot(fig.add_subplot(), drawn, metric, title)
        return fig
    columns = math.ceil(len(drawn) / LEGEND_ROWS)
    rows = math.ceil(len(drawn) / columns)
    fig = Figure(figsize=(7 + columns * (0.9 + 0.075 * longest), max(5.0, 1.2 + 0.22 * rows)), dpi=100,
                 layout="constrained")
    ax = fig.add_subplot()
    for label, xs, ys, style in drawn:
        if len(xs) == 1:
            ax.plot(xs, ys, linestyle="none", marker=style.marker, markersize=7, color=style.color, label=label)
            ax.annotate(_value(ys[0]), (xs[0], ys[0]), xytext=(6, 4), textcoords="offset points",
                        fontsize="small", color=style.color)
        else:
            ax.plot(xs, ys, color=style.color, linestyle=style.linestyle, linewidth=1.6,
                    marker=style.marker if len(xs) < 20 else None, markersize=4, label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small", ncols=columns, handlelength=3)
    return fig


def _dot_plot(ax, drawn: Sequence[tuple[str, list[int], list[float], CurveStyle]], metric: str,
              title: str | None) -> None:
    """One row per experiment: its single value as a marker, the value (and iteration, when they
    differ) written next to it."""
    iters = {xs[0] for _, xs, _, _ in drawn}
    for row, (_label, xs, ys, style) in enumerate(drawn):
        ax.plot(ys, [row], linestyle="none", marker=style.marker, markersize=8, color=style.color)
        note = _value(ys[0]) if len(iters) == 1 else f"{_value(ys[0])} (iter {xs[0]})"
        ax.annotate(note, (ys[0], row), xytext=(8, 0), textcoords="offset points", va="center", fontsize="small")
    ax.set_yticks(range(len(drawn)), [label for label, *_ in drawn], fontsize="small")
    ax.set_ylim(len(drawn) - 0.5, -0.5)  # the first experiment on top
    ax.margins(x=0.2)
    ax.set_xlabel(metric)
    ax.grid(True, axis="x", alpha=0.3)
    at = f" at iteration {next(iter(iters))}" if len(iters) == 1 else ""
    ax.set_title(title or f"{metric}{at} (one value per experiment)")


def plot_curves(labels: Sequence[str], work_dirs: Sequence[str], metric: str, out: str | os.PathLike,
                title: str | None = None) -> list[int]:
    """Draw ``metric`` of each work dir (see :func:`draw_figure`) into the PNG ``out``; the number of
    points per curve. An unknown metric (no experiment has it) raises, listing the metrics the experiments have."""
    histories = [read_history(d) for d in work_dirs]
    curves = [curve(h, metric) for h in histories]
    if not any(xs for xs, _ in curves):
        names = available_metrics(histories)
        raise LauncherError(f"--metric {metric!r}: none of these experiments logged it; "
                            + (f"choose one of {', '.join(names)}" if names else
                               "they have no metrics.jsonl records yet"))
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise LauncherError(f"--out {str(out)!r}: expected a file name ending in .png")
    if not out.parent.is_dir():
        raise LauncherError(f"--out {str(out)!r}: folder {out.parent} does not exist; create it first")
    fig = draw_figure(labels, curves, metric, title)
    with replacing(out) as tmp:
        fig.savefig(tmp, format="png")
    return [len(xs) for xs, _ in curves]
