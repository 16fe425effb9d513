"""Text a user (or a job) wrote, made safe to print on a terminal: control characters shown escaped.

A note, a tag, a grid value, a path or a failure reason can hold terminal escape sequences
(``\\x1b[2J`` clears the screen, ``\\r`` rewrites a line, ``\\x1b]...`` sets the window title) or
line breaks that would forge table rows. Every command that prints such text passes it through
:func:`printable` (tables through :func:`printable_cells`), so it reads as ``\\x1b[2J`` instead of
acting. JSON output needs none of this: ``json.dumps`` escapes control characters itself.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

# C0 controls, DEL, C1 controls, and the Unicode line/paragraph separators and bidirectional overrides
# (which reorder what follows them on the screen)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` as one line of visible characters: each control character as ``\\n``, ``\\x1b``, ``\\u202e``..."""
    text = str(text)
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


def printable_cells(rows: Iterable[Sequence[object]]) -> list[tuple[str, ...]]:
    """Table rows with every cell :func:`printable` (a row is scanned once when it has nothing to escape)."""
    out = []
    for row in rows:
        cells = tuple(str(c) for c in row)
        if _CONTROL.search("".join(cells)):
            cells = tuple(printable(c) for c in cells)
        out.append(cells)
    return out
