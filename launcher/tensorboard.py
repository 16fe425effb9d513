"""One TensorBoard over several experiments' ``tb/`` folders, bound to 127.0.0.1 by default."""
from __future__ import annotations

import os
import re
import sys
from typing import Iterable

from launcher.errors import LauncherError
from launcher.store import Experiment


def run_name(exp: Experiment) -> str:
    """``name-id`` without the ``:`` and ``,`` that ``--logdir_spec`` uses as separators."""
    return re.sub(r"[:,\s]", "_", f"{exp.name}-{exp.id}")


def tensorboard_command(experiments: Iterable[Experiment], host: str = "127.0.0.1", port: int = 6006,
                        python: str = sys.executable) -> tuple[str, ...]:
    """``python -m tensorboard.main --logdir_spec name:path,... --host H --port P`` (pure)."""
    runs = [f"{run_name(e)}:{os.path.join(e.work_dir, 'tb')}" for e in experiments]
    if not runs:
        raise LauncherError("no experiments to show; pass experiment ids or submit one first")
    bad = [r for r in runs if "," in r.split(":", 1)[1]]
    if bad:
        raise LauncherError(f"work dir of {bad[0].split(':')[0]} contains a comma, which --logdir_spec cannot hold")
    return (python, "-m", "tensorboard.main", "--logdir_spec", ",".join(runs), "--host", host, "--port", str(port))
