"""Backbones, necks and detectors. Importing this package registers the built-in types."""
from __future__ import annotations

from detcore.models import backbones, cascade, necks  # noqa: F401  (register built-in types)
from detcore.models.detectors import build_detector

__all__ = ["build_detector"]
