"""Fixtures shared by the integration tests."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import psutil
import pytest


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A private LAUNCHER_HOME for one test; anything its jobs left running is killed afterwards,
    so a failing test cannot starve the tests after it."""
    path = tmp_path / "home"
    yield path
    leftovers = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("LAUNCHER_HOME") == str(path):
                leftovers.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in leftovers:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(leftovers, timeout=10)
