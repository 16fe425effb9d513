"""Small file helpers every backend and monitor shares: atomic JSON and following a growing file."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

from detcore.atomic import write_text_atomic


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON object from a file written atomically; None when it is missing or unreadable."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: str | os.PathLike, data: Mapping) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``.

    Raises OSError (e.g. a full disk) with the temporary file removed and ``path`` unchanged."""
    write_text_atomic(path, json.dumps(dict(data), sort_keys=True, default=str), fsync=True)


def line_count(path: Path) -> int:
    """How many whole lines ``path`` holds now (0 when it does not exist): where a new launch's lines will
    start in a log that every launch appends to."""
    count = 0
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                count += chunk.count(b"\n")
    except FileNotFoundError:
        pass
    return count


def follow_file(path: Path, finished: Callable[[], bool] | None = None, poll_s: float = 0.2) -> Iterator[str]:
    """Lines of ``path``; when ``finished`` is given, keep reading until it returns True and the file is drained."""
    pos, buf = 0, b""
    while True:
        done = finished() if finished is not None else True
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            chunk = b""
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
        if done and not chunk:
            if buf:
                yield buf.decode("utf-8", "replace")
            return
        if not chunk:
            time.sleep(poll_s)
