"""``detcore --help``, every ``detcore COMMAND --help`` and ``--version`` answer without importing torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detcore.tools.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[3]
# parse the arguments as the console script does, then report whether torch was imported on the way
PROBE = """
import sys
from detcore.tools.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("TORCH_IMPORTED" if "torch" in sys.modules else "TORCH_NOT_IMPORTED", code, file=sys.stderr)
"""


def probe(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("args", [("--help",), *((name, "--help") for name in COMMANDS), ("--version",)],
                         ids=lambda a: " ".join(a))
def test_help_and_version_do_not_import_torch(args: tuple[str, ...]) -> None:
    proc = probe(*args)
    assert proc.stderr.strip().endswith("TORCH_NOT_IMPORTED 0"), proc.stderr[-2000:]
    if args == ("--version",):
        assert proc.stdout.startswith("detcore (detlaunch"), proc.stdout
    else:
        assert proc.stdout.startswith("usage: detcore"), proc.stdout
    if args == ("--help",):
        assert all(name in proc.stdout for name in COMMANDS)
