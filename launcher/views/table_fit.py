"""A text table made to fit a terminal: columns dropped or cut in a stated order until it is narrow enough (pure,
except :func:`terminal_width`, which reads the environment).

The caller names the steps (:class:`Drop` a column, :class:`Cap` a column's width); :func:`fit` takes them in
order and stops as soon as the table fits, so the first steps are the least missed. A cut cell keeps its start
and its end around an ellipsis (``faster_rc…-seed=1``): names of runs differ at either end.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Sequence, TextIO

ELLIPSIS = "…"
GAP = 2  # spaces between columns


@dataclass(frozen=True)
class Drop:
    column: int


@dataclass(frozen=True)
class Cap:
    column: int
    width: int


Step = Drop | Cap


def terminal_width(stream: TextIO | None = None) -> int | None:
    """The width to fit: ``COLUMNS`` when set to a positive number, else the terminal's width when ``stream``
    (stdout) is one, else None (no limit). A pipe gets whole rows, as ``ps`` gives them: ``grep`` and ``awk``
    must see every column, and a width the reader never chose would cut them at random."""
    raw = os.environ.get("COLUMNS", "")
    if raw.strip().isdigit() and int(raw) > 0:
        return int(raw)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns or None
    except (AttributeError, OSError, ValueError):
        pass
    return None


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters around an ellipsis, its start and end kept."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def fit(widths: Sequence[int], width: int | None, steps: Sequence[Step]) -> tuple[list[int], dict[int, int]]:
    """The columns to show and the widths some are cut to, so that the table (``widths``: each column's widest
    cell, header included, ``GAP`` apart) is at most ``width`` wide: ``steps`` are taken in order until it is.
    Room the later steps freed goes back to the columns cut first. A table that no step makes narrow enough
    comes back with every step taken."""
    shown = list(range(len(widths)))
    caps: dict[int, int] = {}

    def total() -> int:
        return sum(min(widths[i], caps.get(i, widths[i])) for i in shown) + GAP * max(len(shown) - 1, 0)

    for step in steps:
        if width is None or total() <= width:
            break
        if isinstance(step, Drop):
            if step.column in shown:
                shown.remove(step.column)
        elif step.width < widths[step.column]:
            caps[step.column] = min(step.width, caps.get(step.column, step.width))
    caps = {i: n for i, n in caps.items() if i in shown}
    for i in list(caps):  # room that later drops freed goes back to the columns cut first
        room = width - total() if width is not None else 0
        if room > 0:
            caps[i] = min(widths[i], caps[i] + room)
            if caps[i] == widths[i]:
                del caps[i]
    return shown, caps


def cut_table(table: Sequence[Sequence[str]], shown: Sequence[int], caps: dict[int, int]) -> list[tuple[str, ...]]:
    """``table``'s rows with only the ``shown`` columns, in that order, each capped cell shortened."""
    return [tuple(shorten(row[i], caps[i]) if i in caps else row[i] for i in shown) for row in table]
