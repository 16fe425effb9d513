"""Fixtures shared by the integration tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A private LAUNCHER_HOME for one test."""
    return tmp_path / "home"
