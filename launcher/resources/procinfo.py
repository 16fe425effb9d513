"""Pid checks that survive pid reuse (:mod:`detcore.procinfo`, where the work-dir claim uses them too), and
the Linux process controls the launcher's process trees rely on (no-ops elsewhere)."""
from __future__ import annotations

import ctypes
import os
import sys

from detcore.procinfo import current_process, is_alive, process_start, process_state

__all__ = ["become_subreaper", "current_process", "die_with_parent", "is_alive", "process_start", "process_state"]
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36  # <linux/prctl.h>


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int, parent: int | None = None) -> None:
    """Receive ``sig`` when the parent process ends, even by SIGKILL (``PR_SET_PDEATHSIG``). With ``parent``
    (its pid, taken before the fork), a child whose parent died before this call (already re-parented) sends
    itself ``sig`` at once. For a ``preexec_fn`` or the first lines of a child."""
    if _prctl(_PR_SET_PDEATHSIG, int(sig)) and parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), int(sig))


def become_subreaper() -> bool:
    """Adopt the orphans of this process's descendants (``PR_SET_CHILD_SUBREAPER``); False where impossible."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)

