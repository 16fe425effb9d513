"""The detcore program skips the interpreter's final cycle collection once its command is done
(:mod:`detcore.shutdown`); ``main`` called in a process that goes on (a Ray worker, a test) leaves it alone."""
from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from detcore.tools import cli

ROOT = Path(__file__).resolve().parents[3]
SHAPES = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")


def test_console_freezes_after_the_command_and_main_does_not(monkeypatch, capsys) -> None:
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(sys, "argv", ["detcore"])  # the CLI rewrites sys.argv
    assert cli.main(["config", "show", SHAPES]) == 0 and frozen == []
    assert cli.console(["config", "show", SHAPES]) == 0 and frozen == [True]
    assert cli.console(["config", "show", "no-such.yaml"]) == 2 and frozen == [True, True]  # a user error too
    assert "no-such.yaml" in capsys.readouterr().err


def test_the_program_still_runs_every_exit_handler(tmp_path: Path) -> None:
    # logging's atexit flush and the command's output reach their files although the final collection is skipped
    code = ("import atexit, json, sys; from detcore.tools.cli import console; "
            f"atexit.register(lambda: open({str(tmp_path / 'atexit.json')!r}, 'w').write(json.dumps(True))); "
            f"sys.exit(console(['config', 'show', {SHAPES!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "model" in proc.stdout and json.loads((tmp_path / "atexit.json").read_text()) is True
