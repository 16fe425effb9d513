"""Is that process still the one we started? Pid checks that survive pid reuse (torch-free, stdlib only).

A process is named by ``(pid, start)`` where ``start`` is its start time in clock ticks since
boot (``/proc/<pid>/stat`` field 22). A pid whose start differs is someone else's process.
Zombies count as dead. No psutil import here, so the CLI stays fast.
"""
from __future__ import annotations

import os


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), None without such a process;
    OSError when there is no /proc to read (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    return stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parentheses: split after the last


def process_start(pid: int) -> int | None:
    """The start tick of a live (non-zombie) ``pid``, or None when there is no such process."""
    if pid <= 0:
        return None
    try:
        fields = _stat(pid)
    except OSError:
        return _psutil_start(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_state(pid: int) -> str:
    """``running``, ``stopped`` (SIGSTOP or a debugger), ``disk-wait`` or ``gone`` (Linux /proc)."""
    try:
        fields = _stat(pid) if pid > 0 else None
    except OSError:
        return "gone"
    if fields is None:
        return "gone"
    return {"T": "stopped", "t": "stopped", "D": "disk-wait", "Z": "gone", "X": "gone"}.get(fields[0], "running")


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
