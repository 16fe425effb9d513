"""A detection confusion matrix with a background row and column, counted as MMDetection's
``tools/analysis_tools/confusion_matrix.py`` counts it, and drawn with matplotlib.

Rows are ground-truth classes, columns predicted classes; the last row and column are the
background. Per image, only detections scoring at least ``score_thr`` count. Every detection
overlapping a ground-truth box at IoU >= ``iou_thr`` adds one to ``[gt class, det class]``; a
ground-truth box that no detection overlaps adds one to ``[gt class, background]`` (missed);
a detection that matched no ground-truth box *of its own class* adds one to ``[background, det
class]`` (false positive). So, as in MMDetection, a detection with the wrong class counts
both as a confusion and as a false positive.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from detcore.atomic import replacing


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[len(a), len(b)]`` of xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def count_image(matrix: np.ndarray, gt_boxes: np.ndarray, gt_labels: Sequence[int], det_boxes: np.ndarray,
                det_labels: Sequence[int], det_scores: Sequence[float], iou_thr: float = 0.5,
                score_thr: float = 0.3) -> None:
    """Add one image to ``matrix`` (``[K+1, K+1]`` ints, labels are 0..K-1, K is the background)."""
    keep = np.asarray(det_scores, dtype=np.float64) >= score_thr
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)[keep]
    det_labels = np.asarray(det_labels, dtype=np.int64).reshape(-1)[keep]
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    ious = box_iou(gt_boxes, det_boxes)
    true_positives = np.zeros(len(det_labels), dtype=np.int64)
    for i, gt_label in enumerate(gt_labels):
        matched = np.flatnonzero(ious[i] >= iou_thr)
        for j in matched:
            matrix[gt_label, det_labels[j]] += 1
            true_positives[j] += int(det_labels[j] == gt_label)
        if len(matched) == 0:
            matrix[gt_label, -1] += 1
    for j in np.flatnonzero(true_positives == 0):
        matrix[-1, det_labels[j]] += 1


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], out: str | os.PathLike,
                   title: str = "confusion matrix") -> Path:
    """Write ``matrix`` as a PNG: colours are each row's share (percent), cells show the counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*class_names, "background"]
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix * 100.0, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of the row")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    for (r, c), count in np.ndenumerate(matrix):
        ax.text(c, r, str(int(count)), ha="center", va="center", color="white" if share[r, c] > 50 else "black")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(out) as tmp:
            fig.savefig(tmp, dpi=100, format=out.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return out
