"""Is that process still the one we started? Pid checks that survive pid reuse (torch-free, stdlib only).

A process is named by ``(pid, start)`` where ``start`` is its start time in clock ticks since
boot (``/proc/<pid>/stat`` field 22). A pid whose start differs is someone else's process.
Zombies count as dead. No psutil import here, so the CLI stays fast.
"""
from __future__ import annotations

import os


def process_start(pid: int) -> int | None:
    """The start tick of a live (non-zombie) ``pid``, or None when there is no such process."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    except OSError:
        return _psutil_start(pid)
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _psutil_start(pid: int) -> int | None:  # non-Linux fallback
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return int(proc.create_time() * 100)
    except psutil.Error:
        return None


def is_alive(pid: int, start: int | None) -> bool:
    """True when ``pid`` runs and (if ``start`` is known) is the same process as before."""
    now = process_start(pid)
    return now is not None and (start is None or start == now)


def current_process() -> tuple[int, int]:
    pid = os.getpid()
    return pid, process_start(pid) or 0
