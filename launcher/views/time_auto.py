"""``--time auto``: a wall-time limit from the run's estimate plus a stated margin (pure).

The limit is the estimate (:mod:`launcher.views.estimate`) times :data:`MARGIN_FACTOR` plus
:data:`MARGIN_MIN` minutes, rounded up to whole minutes. A run that still reaches it is not lost:
on Slurm it checkpoints before the limit and requeues (``--signal-delay``, ``--max-timeouts``).
Without a finished run that resembles the new one there is no estimate, and the user is asked
for an explicit ``--time``.
"""
from __future__ import annotations

import math
from typing import Sequence

from launcher.errors import LauncherError
from launcher.views.estimate import Estimate, duration_text

AUTO = "auto"
MARGIN_FACTOR = 1.5
MARGIN_MIN = 10

def auto_minutes(seconds: float) -> int:
    """The limit asked for a run estimated at ``seconds``: x1.5 + 10 min, rounded up to whole minutes."""
    return math.ceil((seconds * MARGIN_FACTOR + MARGIN_MIN * 60) / 60)


def auto_time(estimates: Sequence[Estimate]) -> tuple[int, str]:
    """The limit for runs with these estimates (a sweep asks for its longest) and the line that says how it was
    made; LauncherError (one line) when one of them has no estimate."""
    missing = next((e for e in estimates if e.seconds is None), None)
    if missing is not None or not estimates:
        why = missing.basis if missing is not None else "nothing to estimate"
        raise LauncherError(f"--time auto: {why}; pass --time with a limit in minutes (e.g. --time 120)")
    longest = max(estimates, key=lambda e: e.seconds or 0.0)
    minutes = auto_minutes(longest.seconds or 0.0)
    return minutes, (f"--time auto: {minutes} min = the estimate {duration_text(longest.seconds or 0.0)} "
                     f"x{MARGIN_FACTOR:g} + {MARGIN_MIN} min, rounded up to whole minutes")
