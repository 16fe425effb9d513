"""Evaluation: COCO metrics with pycocotools and gathering predictions across ranks."""
from __future__ import annotations

from detcore.evaluation.coco_eval import (METRIC_KEYS, evaluate_coco, format_table, gather_predictions,
                                          results_to_coco)

__all__ = ["METRIC_KEYS", "evaluate_coco", "format_table", "gather_predictions", "results_to_coco"]
