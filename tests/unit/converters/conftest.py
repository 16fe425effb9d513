"""Fixtures building tiny VOC, Cityscapes and VIA datasets under tmp_path (see converter_samples.py)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from converter_samples import make_cityscapes_root, make_via_list_dir, make_voc_devkit


@pytest.fixture
def voc_devkit(tmp_path: Path) -> SimpleNamespace:
    return make_voc_devkit(tmp_path)


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> SimpleNamespace:
    return make_cityscapes_root(tmp_path)


@pytest.fixture
def via_list_dir(tmp_path: Path) -> Path:
    return make_via_list_dir(tmp_path)
