"""Evaluation: COCO metrics with pycocotools and gathering predictions across ranks.

``gather_predictions`` and ``results_to_coco`` need torch and are imported on first use, so
``detcore eval`` (pycocotools only) starts without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from detcore.evaluation.coco_eval import METRIC_KEYS, evaluate_coco, format_table

_LAZY = {"gather_predictions": "detcore.evaluation.predictions", "results_to_coco": "detcore.evaluation.predictions"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detcore.evaluation' has no attribute {name!r}")


__all__ = ["METRIC_KEYS", "evaluate_coco", "format_table", "gather_predictions", "results_to_coco"]
