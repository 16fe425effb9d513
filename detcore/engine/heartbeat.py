"""Liveness signals for a hang watchdog: heartbeat files and Python stack dumps on request.

A starter that watches for hangs sets ``contract.HEARTBEAT_DIR_ENV`` (``detcore train`` hands it
to the trainer as ``heartbeat_dir``); each rank then records its newest finished iteration with
:func:`detcore.contract.write_heartbeat`. Writes are rate-limited (at most one every
:attr:`Heartbeat.min_interval` seconds), so a fast loop pays only a clock read per iteration.
Writing is best effort: a full disk never stops training.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from detcore import contract


class Heartbeat:
    """Rate-limited ``contract.write_heartbeat(directory, rank, iteration, phase)`` for one rank (thread-safe).

    ``phase`` is what the rank does since its newest iteration (``training``, ``evaluating``): a monitor
    shows it as the job's stage.
    """

    min_interval = 0.5  # seconds between two writes (an iteration slower than this writes every time)

    def __init__(self, directory: str | os.PathLike, rank: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory, self.rank, self.clock = directory, rank, clock
        self.phase = "training"
        self._last = -float("inf")
        self._lock = threading.Lock()
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            pass  # best effort, like every write below

    def beat(self, iteration: int, *, force: bool = False) -> bool:
        """Record ``iteration`` unless the last write was under ``min_interval`` ago; True if written."""
        with self._lock:
            now = self.clock()
            if not force and now - self._last < self.min_interval:
                return False
            self._last = now
            contract.write_heartbeat(self.directory, self.rank, iteration, self.phase)
            return True

    def enter(self, phase: str, iteration: int) -> None:
        """Say at once that this rank is now ``phase`` (one of ``contract.PHASES``) after ``iteration``."""
        self.phase = phase
        self.beat(iteration, force=True)


@contextmanager
def beating(beat: Callable[[], object] | None, every: float = 1.0) -> Iterator[None]:
    """Call ``beat()`` every ``every`` seconds from a helper thread while the block runs.

    Only for local work that cannot report progress itself (COCOeval, a slow save): wrapped
    around a collective it would hide a real hang. ``beat=None`` does nothing.
    """
    if beat is None:
        yield
        return
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every):
            beat()

    thread = threading.Thread(target=loop, name="detcore-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def install_stack_dump_signal(sig: int = signal.SIGUSR1) -> None:
    """On ``sig``, print every thread's Python stack to stderr and carry on (``faulthandler``).

    Lets a watchdog ask a suspected hung rank where it is before ending it. Works from any
    thread (a C-level handler), so also under Ray Train, where detcore runs in a helper thread.
    """
    faulthandler.register(sig, file=sys.stderr, all_threads=True, chain=False)
