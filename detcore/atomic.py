"""Files replaced whole: a reader sees the old content or the new one, never a torn file (stdlib only).

Every small file detcore and the launcher rewrite in place (the checkpoint pointer, best and latest
checkpoints, heartbeats, status and record files, converted annotations, figures) is written through
:func:`replacing`. Checkpoints themselves go through :func:`detcore.checkpoint.atomic_torch_save`,
which also maps a full disk to a CheckpointError.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def temp_sibling(path: str | os.PathLike) -> Path:
    """``.NAME.PID.tmp`` beside ``path``: hidden, and named so that a writer killed mid-write is recognised
    (:func:`detcore.checkpoint.remove_stale_temp_files`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write; when the block ends without an error it
    replaces ``path`` (``os.replace``, after ``fsync`` when asked), otherwise it is removed and ``path`` is
    unchanged. The temporary name is per process: one process writes a given file from one thread."""
    tmp = temp_sibling(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Replace ``path`` with ``text`` (UTF-8) as :func:`replacing` does; OSError (a full disk) leaves it as it was."""
    with replacing(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
