"""Shared test set-up: a private data cache and launcher home per test session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session generates the shapes data into its own cache (shared across its tests)."""
    if "DETCORE_CACHE" not in os.environ:
        os.environ["DETCORE_CACHE"] = str(tmp_path_factory.mktemp("detcore-cache"))
    # weights named in configs (torchvision://...) are looked up in a cache of the session's own, never the
    # user's: a test that needs a file seeds it (tests/unit/pretrained/seeding.py)
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch-home"))
