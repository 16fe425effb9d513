"""Pid checks that survive pid reuse: :mod:`detcore.procinfo`, where the work-dir claim uses them too."""
from __future__ import annotations

from detcore.procinfo import current_process, is_alive, process_start

__all__ = ["current_process", "is_alive", "process_start"]
