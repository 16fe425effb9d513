"""CLI start-up: ``detcore --help`` and ``detcore train --help`` next to ``python -c pass``.

Each command is a fresh process run from the repository root with this tree first on
``PYTHONPATH`` (as the ``detcore`` console script runs it: ``python -m detcore.tools.cli``). Runs
of the four commands alternate (5 rounds quick, 15 full, after one unmeasured round). ``python
-c "import torch"`` is the cost ``--help`` paid before its imports were made lazy (issue 17); the
ratio of each row is to ``python -c pass``, the floor under any Python tool.
"""
from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.harness import REPO_ROOT, Context, Result, compared, interleave, log, measured

TITLE = "CLI start-up: detcore --help and detcore train --help vs python -c pass"
COMMANDS = {
    "detcore --help": ["-m", "detcore.tools.cli", "--help"],
    "detcore train --help": ["-m", "detcore.tools.cli", "train", "--help"],
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
}


def run(ctx: Context) -> Result:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def timed(args: list[str]):
        return lambda: subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, check=True,
                                      stdout=subprocess.DEVNULL) and None

    repeats = ctx.pick(5, 15)
    log(f"cli_startup: {len(COMMANDS)} commands x {repeats} rounds")
    times = interleave({name: timed(args) for name, args in COMMANDS.items()}, repeats, warmup=1)
    floor = times["python -c pass"]
    rows = [compared(name, times[name], floor, "s", note="ratio to python -c pass")
            for name in ("detcore --help", "detcore train --help", "python -c 'import torch'")]
    rows.append(measured("python -c pass (start-up floor)", floor, "s"))
    return Result(rows, {"repeats": repeats, "warmup": 1, "commands": {k: v for k, v in COMMANDS.items()}})
