"""Stopping a run on request (preemption): a signal asks, the trainer checkpoints and stops.

The request is a process-wide flag (set from a signal handler); the trainer reads it once per
iteration and shares it through that iteration's all-reduce, so every rank stops after the same
iteration.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

from detcore.contract import STOP_SIGNALS_ENV
from detcore.errors import ConfigError

_STOP = threading.Event()


def request_stop(*_: Any) -> None:
    """Ask the running trainer to checkpoint after the current iteration and stop (preemption).

    Safe to call from a signal handler. In a distributed run the request is shared through the
    per-iteration all-reduce, so every rank stops after the same iteration.
    """
    _STOP.set()


def stop_is_requested() -> bool:
    """True once :func:`request_stop` was called in this process."""
    return _STOP.is_set()


def install_stop_signals(names: str) -> list[str]:
    """Make each signal in ``names`` (e.g. ``"USR2,TERM"``) call :func:`request_stop`.

    Backends set ``DETCORE_STOP_SIGNALS`` (``contract.STOP_SIGNALS_ENV``) so a preempted worker
    checkpoints and exits with ``contract.EXIT_STOPPED`` instead of losing the iterations since
    its last checkpoint.
    """
    installed = []
    for name in filter(None, (n.strip().upper() for n in names.split(","))):
        sig = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
        if sig is None:
            raise ConfigError(f"{STOP_SIGNALS_ENV}: unknown signal {name!r}; use names like USR2,TERM")
        signal.signal(sig, request_stop)
        installed.append(sig.name)
    return installed


class TrainingInterrupted(Exception):
    """Raised after the checkpoint that follows :func:`request_stop`."""
