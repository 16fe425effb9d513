"""The last lines of a file that may be long and still growing: rank logs, ``metrics.jsonl``."""
from __future__ import annotations

import os


def tail_lines(path: str | os.PathLike, max_bytes: int) -> list[str]:
    """The lines in the last ``max_bytes`` of ``path`` ([] if it does not exist).

    The first line is dropped when the read starts inside it, unless it is all there is.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > max_bytes and len(lines) > 1 else lines


def last_line(path: str | os.PathLike, max_bytes: int = 8192) -> str:
    """The last non-blank line of ``path``, stripped and cut to 300 characters ("" if none)."""
    lines = [ln.strip() for ln in tail_lines(path, max_bytes) if ln.strip()]
    return lines[-1][:300] if lines else ""
