"""The checkpoints of the run a work dir holds, behind one object: save, the newest, pruning, the best.

``iter_N.pth``/``epoch_N.pth`` are the periodic checkpoints; after each save the ``last_checkpoint``
pointer and ``latest.pth`` name the newest complete file (each replaced atomically once that file is
on disk); ``best_<metric>.pth`` is a hard link to the best one. The trainer and its checkpoint hook
use only this class, so the layout and its atomicity live in one place.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from detcore.atomic import replacing
from detcore.checkpoint import (load_checkpoint, periodic_checkpoints_to_remove, point_latest, remove_stale_temp_files,
                                save_checkpoint)
from detcore.contract import WorkDir
from detcore.errors import CheckpointError

logger = logging.getLogger(__name__)


class CheckpointDir:
    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.root = Path(work_dir)

    def save(self, name: str, model: nn.Module, meta: Mapping[str, Any], **state: Any) -> Path:
        """Write checkpoint ``name`` atomically, then make it the newest (pointer and ``latest.pth``)."""
        path = save_checkpoint(self.root / name, model, meta, **state)
        WorkDir(self.root).point_to(name)
        point_latest(self.root, name)
        return path

    def latest(self) -> Path | None:
        """The file the pointer names if it exists and loads, else the newest periodic checkpoint that loads
        (a resume after a crash mid-save); None without one. Unreadable files are skipped with a warning."""
        newest = WorkDir(self.root).newest_checkpoint()
        candidates = [newest] if newest is not None else []
        candidates += sorted((p for p in self.root.glob("*.pth") if p.name.startswith(("iter_", "epoch_"))),
                             key=lambda p: p.stat().st_mtime, reverse=True)
        for path in candidates:
            try:
                if path.is_file() and "loop" in load_checkpoint(path):
                    return path
            except CheckpointError as exc:
                logger.warning("skipping unreadable checkpoint: %s", exc)
        return None

    def prune(self, max_keep: int, protect: set[str]) -> list[Path]:
        """Remove the periodic checkpoints beyond the newest ``max_keep`` (never those in ``protect``); what was
        removed (see :func:`detcore.checkpoint.periodic_checkpoints_to_remove`)."""
        removed = []
        for old in periodic_checkpoints_to_remove(self.root, max_keep, protect):
            try:
                old.unlink()
                removed.append(old)
            except FileNotFoundError:
                pass
        return removed

    def keep_best(self, checkpoint: Path, metric: str) -> Path:
        """Make ``best_<metric>.pth`` the same file as ``checkpoint`` (a hard link, replaced atomically)."""
        best = self.root / f"best_{metric}.pth"
        with replacing(best) as tmp:
            os.link(checkpoint, tmp)
        return best

    def remove_stale_temp_files(self) -> list[Path]:
        """Temporary files of saves killed mid-write (call on the one writing rank before it saves)."""
        return remove_stale_temp_files(self.root)
