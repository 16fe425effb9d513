"""An exclusive file lock that waits in the kernel, with a deadline: the lease book's and the store's."""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
from pathlib import Path

from launcher.errors import LauncherError


class _Deadline(Exception):
    pass


def _raise_deadline(signum, frame):
    raise _Deadline


@contextlib.contextmanager
def blocking_flock(path: Path, timeout: float):
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block, waiting in the kernel.

    Hand-written instead of ``filelock.FileLock``: filelock only tries ``LOCK_NB`` and sleeps
    between tries, so 100 clients queued on the lease file spend the cores on their own
    wake-ups (benchmarks/bookkeeping.py: 100 simultaneous allocations took 0.75 s polling
    every 2 ms, 0.2 s blocking). A blocked ``flock`` sleeps until the holder unlocks or dies
    (the kernel drops the lock with the holder's descriptor). The deadline is a SIGALRM
    timer, so it holds in the main thread; other threads wait without one (the critical
    section is a millisecond of file I/O, and a dead holder frees the lock at once).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait_flock(fd, path, timeout)
        yield
    finally:
        os.close(fd)  # releases the lock


def _wait_flock(fd: int, path: Path, timeout: float) -> None:
    if threading.current_thread() is not threading.main_thread():
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    previous = signal.signal(signal.SIGALRM, _raise_deadline)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, timeout)
    started = time.monotonic()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except _Deadline:
        raise LauncherError(f"{path}: another launcher process has held this lock for over {timeout:.0f} s; "
                            f"find it with `fuser -v {path}` and stop it if it hangs") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
        if outer:  # someone else's timer was running: put back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3))


EXPERIMENT_LOCK_TIMEOUT_S = 300.0


@contextlib.contextmanager
def experiment_lock(home: Path, exp_id: str, timeout: float = EXPERIMENT_LOCK_TIMEOUT_S):
    """The lock every change of one experiment's launches takes (``resume``, ``cancel``): two resumes at
    once start exactly one run, and a cancel never races a resume. Readers do not take it."""
    folder = Path(home) / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = blocking_flock(folder / f"{exp_id}.lock", timeout)
        lock.__enter__()
    except OSError as exc:
        raise LauncherError(f"cannot take experiment {exp_id}'s lock in {folder} ({exc.strerror}); this command "
                            f"changes the experiment, so $LAUNCHER_HOME must be writable") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
