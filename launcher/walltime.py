"""Wall-time limits written the way Slurm's ``--time`` takes them, as whole minutes."""
from __future__ import annotations

import math
import re

from launcher.errors import LauncherError

FORMATS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
_PATTERN = re.compile(r"^(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                      r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$")


def parse_walltime(text: str) -> int:
    """Minutes in a Slurm time limit (``sbatch --time``'s formats); seconds round up to the next minute.

    ``90``, ``90:00``, ``1:30:00``, ``0-1:30`` are all 90. Raises LauncherError naming the formats for
    anything else (``UNLIMITED`` included: the launcher's requeue budget needs a limit or none at all).
    """
    match = _PATTERN.match(str(text).strip())
    if match is None:
        raise LauncherError(f"--time {text!r}: expected a Slurm time limit ({FORMATS}), e.g. 90, 1:30:00 or 2-00:00")
    g = {k: int(v) if v is not None else 0 for k, v in match.groupdict().items()}
    if match["days"] is not None:
        seconds = ((g["days"] * 24 + g["dh"]) * 60 + g["dm"]) * 60 + g["ds"]
    elif match["c"] is not None:
        seconds = (g["a"] * 60 + g["b"]) * 60 + g["c"]
    else:
        seconds = g["a"] * 60 + g["b"]
    if seconds <= 0:
        raise LauncherError(f"--time {text!r}: the limit must be at least one second; leave --time out for the "
                            f"partition's own limit")
    return math.ceil(seconds / 60)
