"""Where each detection's label goes: next to its box, inside the image, clear of the other labels (pure).

torchvision's ``draw_bounding_boxes`` writes every label at its box's top-left corner, so labels of
nearby boxes overlap and a box at the image's edge has its label cut off; this places them first.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, ends exclusive


def place_labels(boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]], width: int, height: int,
                 gap: int = 1) -> list[Rect | None]:
    """A rectangle for each label of size ``(w, h)`` belonging to ``boxes[i]`` (x0, y0, x1, y1), in order.

    The first choice is just above the box's top-left corner; when that is taken or outside the
    image, the nearest free place around the box (stacked above or below, inside under its top
    edge, shifted sideways), preferring places that cover no other box. Every rectangle lies
    inside the ``width`` x ``height`` image and no two overlap (``gap`` pixels apart). A label
    that cannot go within about three label heights of its box (the image is too small or too
    crowded there) gets None: draw its box without it. Earlier labels get the better places, so
    pass the most confident detections first.
    """
    placed = np.zeros((0, 4), dtype=np.int64)
    obstacles = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out: list[Rect | None] = []
    for i, ((w, h), box) in enumerate(zip(sizes, obstacles)):
        w, h = int(w), int(h)
        if w > width or h > height or w <= 0 or h <= 0:
            out.append(None)
            continue
        cands = _candidates(box, w, h, width, height, gap)
        x0, y0 = cands[:, 0], cands[:, 1]
        x1, y1 = x0 + w, y0 + h
        free = np.ones(len(cands), dtype=bool)
        if len(placed):
            free = ~_overlaps(x0 - gap, y0 - gap, x1 + gap, y1 + gap, placed).any(axis=1)
        if not free.any():
            out.append(None)
            continue
        others = np.delete(obstacles, i, axis=0)
        covered = _overlaps(x0, y0, x1, y1, others).sum(axis=1) if len(others) else np.zeros(len(cands))
        want_x, want_y = _clamp(box[0], 0, width - w), box[1] - h
        cost = np.abs(x0 - want_x) + np.abs(y0 - want_y) + 2 * h * covered
        cost[~free] = np.inf
        best = int(np.argmin(cost))
        rect = (int(x0[best]), int(y0[best]), int(x1[best]), int(y1[best]))
        placed = np.vstack([placed, np.asarray(rect)[None]])
        out.append(rect)
    return out


def _clamp(v: float, lo: int, hi: int) -> int:
    return int(min(max(round(v), lo), hi))


def _candidates(box: np.ndarray, w: int, h: int, width: int, height: int, gap: int) -> np.ndarray:
    """Top-left corners near ``box``: rows of label slots from three heights above it to three below,
    at its left edge, its right edge and steps of half a label between; all inside the image."""
    bx0, by0, bx1, by1 = (float(v) for v in box)
    step = h + gap
    reach = 3 * step
    ys = np.concatenate([np.arange(by0 - h, by0 - h - reach - 1, -step), np.arange(by0, by1 + reach + 1, step),
                         np.arange(by0 - h + step // 2, by1 + reach + 1, step)])
    xs = np.concatenate([[bx0, bx1 - w], np.arange(bx0 - w, bx1 + 1, max(1, w // 2))])
    ys = np.unique(np.clip(np.round(ys), 0, height - h)).astype(np.int64)
    xs = np.unique(np.clip(np.round(xs), 0, width - w)).astype(np.int64)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _overlaps(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """``[candidates, rects]``: True where candidate rectangle i and ``rects[j]`` share an area."""
    return ((x0[:, None] < rects[None, :, 2]) & (rects[None, :, 0] < x1[:, None])
            & (y0[:, None] < rects[None, :, 3]) & (rects[None, :, 1] < y1[:, None]))
