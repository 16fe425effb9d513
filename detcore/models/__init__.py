"""Backbones, necks and detectors. Importing this package registers the built-in types.

The registries are importable from here as from ``detcore.registry`` (MMDetection's modules
import them from ``mmdet.models``): ``from detcore.models import NECKS``.
"""
from __future__ import annotations

from detcore.models import backbones, cascade, necks  # noqa: F401  (register built-in types)
from detcore.models.detectors import build_detector
from detcore.registry import BACKBONES, DETECTORS, HEADS, NECKS

__all__ = ["BACKBONES", "DETECTORS", "HEADS", "NECKS", "build_detector"]
