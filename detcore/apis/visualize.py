"""Drawing predictions and ground truth for people to read.

Small images are drawn scaled up (short side at least :data:`DRAW_MIN_SIDE` pixels, ``min_side=0``
keeps the input's size): the drawing is for looking at, the numbers (boxes, scores) stay in the
input's pixels. Every class has its colour (:mod:`detcore.apis.palette`), the same in every
drawing; boxes have a thin dark outline, masks are blended with the class colour, labels sit on
a box of the class colour with black or white text (whichever contrasts more), placed by
:func:`detcore.apis.label_layout.place_labels` so that they neither overlap nor leave the image.

torchvision's ``draw_segmentation_masks`` blends the masks and ``draw_bounding_boxes`` draws the
boxes; the labels are drawn with Pillow, because torchvision puts every label at its box's corner
(overlapping its neighbours', cut off at the image's edge).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from detcore.apis.label_layout import place_labels
from detcore.apis.palette import OUTLINE, class_color, text_color_on

DRAW_MIN_SIDE = 512      # small images are drawn with at least this short side
UPSCALE_MAX_SIDE = 4096  # ... without growing their long side past this
MASK_ALPHA = 0.5
HEADER_TEXT = (0, 0, 0)
WARNING_TEXT = (200, 0, 0)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A [3,H,W] image as uint8 (floats are taken to be in 0..1)."""
    if image.dtype == torch.uint8:
        return image
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def drawing_scale(height: int, width: int, min_side: int = DRAW_MIN_SIDE, max_side: int = UPSCALE_MAX_SIDE,
                  shrink: bool = False) -> float:
    """The factor an image is drawn at (pure): small images grow until their short side is
    ``min_side`` while their long side stays within ``max_side``; larger ones keep their size,
    or with ``shrink`` shrink until the long side is ``max_side``. ``min_side <= 0``: 1.0."""
    short, long = min(height, width), max(height, width)
    if short <= 0 or (min_side <= 0 and not shrink):
        return 1.0
    scale = min_side / short if 0 < min_side and short < min_side else 1.0
    if long * scale > max_side:
        scale = max_side / long
    return scale if shrink else max(scale, 1.0)


def font_px(height: int, width: int) -> int:
    """The label font's pixel size for a drawing of this size (14 px at 512 px, up to 24 px)."""
    return int(min(max(round(min(height, width) / 36), 12), 24))


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font at ``size`` pixels (its bitmap font where Pillow lacks FreeType)."""
    return ImageFont.load_default(size=size)


def draw_instances(image: torch.Tensor, boxes: torch.Tensor, labels: Sequence[int], captions: Sequence[str],
                   masks: torch.Tensor | None = None, *, min_side: int = DRAW_MIN_SIDE,
                   max_side: int = UPSCALE_MAX_SIDE, shrink: bool = False) -> torch.Tensor:
    """``image`` (3xHxW, uint8 or float 0..1) with instances drawn at :func:`drawing_scale`; uint8.

    ``boxes`` (x0, y0, x1, y1, the image's pixels) and ``masks`` (NxHxW) are drawn in their class
    colours (``labels``, 1-based); ``captions`` are placed in the given order (most important first).
    """
    canvas = to_uint8(image.detach().cpu())
    labels = [int(v) for v in labels]
    colors = [class_color(v) for v in labels]
    if masks is not None and len(masks) and len(labels):
        m = torch.as_tensor(masks).cpu()
        m = (m[:, 0] if m.dim() == 4 else m) > 0.5
        canvas = draw_segmentation_masks(canvas, m, alpha=MASK_ALPHA, colors=colors)
    _, h, w = canvas.shape
    scale = drawing_scale(h, w, min_side, max_side, shrink)
    if scale != 1.0:
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        canvas = F.resize(canvas, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    if not len(labels):
        return canvas
    _, h, w = canvas.shape
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu() * scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    line = max(2, round(min(h, w) / 200))
    outer = boxes + torch.tensor([-1.0, -1.0, 1.0, 1.0])
    canvas = draw_bounding_boxes(canvas, outer, colors=OUTLINE, width=line + 2)  # dark edge on both sides
    canvas = draw_bounding_boxes(canvas, boxes, colors=colors, width=line)
    return _draw_captions(canvas, boxes, colors, captions)


def _draw_captions(canvas: torch.Tensor, boxes: torch.Tensor, colors: Sequence[tuple[int, int, int]],
                   captions: Sequence[str]) -> torch.Tensor:
    _, h, w = canvas.shape
    font = label_font(font_px(h, w))
    ascent, descent = font.getmetrics()
    pad = 2
    sizes = [(math.ceil(font.getlength(c)) + 2 * pad, ascent + descent + 2 * pad) for c in captions]
    spots = place_labels(boxes.tolist(), sizes, w, h)
    pil = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    for caption, color, spot in zip(captions, colors, spots):
        if spot is None:
            continue
        x0, y0, x1, y1 = spot
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color, outline=OUTLINE)
        draw.text((x0 + pad, y0 + pad), caption, fill=text_color_on(color), font=font)
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    return class_names[label - 1] if class_names and 0 < label <= len(class_names) else str(label)


def draw_result(image: torch.Tensor, result: Mapping[str, Any], class_names: Sequence[str] | None = None,
                score_thr: float = 0.3, *, min_side: int = DRAW_MIN_SIDE, max_side: int = UPSCALE_MAX_SIDE,
                shrink: bool = False) -> torch.Tensor:
    """Boxes, masks and ``class score`` labels of the detections scoring at least ``score_thr``
    (the highest scores labelled first), at :func:`drawing_scale`."""
    scores = torch.as_tensor(result.get("scores", []), dtype=torch.float32).reshape(-1)
    order = [i for i in torch.argsort(scores, descending=True, stable=True).tolist() if scores[i] >= score_thr]
    keep = torch.as_tensor(order, dtype=torch.long)
    labels = torch.as_tensor(result.get("labels", []), dtype=torch.long).reshape(-1)[keep].tolist()
    boxes = torch.as_tensor(result.get("boxes", torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)[keep]
    masks = result.get("masks")
    masks = torch.as_tensor(masks)[keep] if masks is not None and len(masks) else None
    captions = [f"{class_name(lbl, class_names)} {scores[i]:.2f}" for lbl, i in zip(labels, order)]
    return draw_instances(image, boxes, labels, captions, masks, min_side=min_side, max_side=max_side,
                          shrink=shrink)


def draw_ground_truth(image: torch.Tensor, target: Mapping[str, Any], class_names: Sequence[str] | None = None,
                      *, min_side: int = DRAW_MIN_SIDE, max_side: int = UPSCALE_MAX_SIDE,
                      shrink: bool = False) -> torch.Tensor:
    """The target's boxes and masks (labels 1..K, in the image's pixels) in their class colours,
    labelled with the class names, at :func:`drawing_scale`."""
    boxes = torch.as_tensor(target.get("boxes", torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(target.get("labels", []), dtype=torch.long).reshape(-1).tolist()
    masks = target.get("masks")
    masks = masks if masks is not None and len(masks) == len(labels) else None
    return draw_instances(image, boxes, labels, [class_name(lbl, class_names) for lbl in labels], masks,
                          min_side=min_side, max_side=max_side, shrink=shrink)


PANEL_MIN_SIDE = 512   # TensorBoard panels: each half drawn with this short side ...
PANEL_MAX_SIDE = 1024  # ... and at most this long side (large images shrink: event files stay small)
GAP_PX = 8


def draw_comparison(image: torch.Tensor, target: Mapping[str, Any], result: Mapping[str, Any],
                    class_names: Sequence[str] | None = None, score_thr: float = 0.3, *,
                    min_side: int = PANEL_MIN_SIDE, max_side: int = PANEL_MAX_SIDE) -> torch.Tensor:
    """Ground truth (left) next to the predictions scoring at least ``score_thr`` (right), each half
    sized by :func:`drawing_scale` (``shrink``), under a header naming each half; when no prediction
    passes the threshold the right header says so, in red. The same class has the same colour in both."""
    left = draw_ground_truth(image, target, class_names, min_side=min_side, max_side=max_side, shrink=True)
    right = draw_result(image, result, class_names, score_thr, min_side=min_side, max_side=max_side, shrink=True)
    scores = torch.as_tensor(result.get("scores", []), dtype=torch.float32)
    passed = int((scores >= score_thr).sum())
    _, h, w = left.shape
    font = label_font(font_px(h, w) + 2)
    ascent, descent = font.getmetrics()
    header = ascent + descent + 8
    canvas = torch.full((3, h + header, 2 * w + GAP_PX), 255, dtype=torch.uint8)
    canvas[:, header:, :w] = left
    canvas[:, header:, w + GAP_PX:] = right
    pil = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    draw.text((4, 4), "ground truth", fill=HEADER_TEXT, font=font)
    note, color = ((f"predictions scoring >= {score_thr:g} ({passed})", HEADER_TEXT) if passed
                   else (f"no prediction scores >= {score_thr:g}", WARNING_TEXT))
    draw.text((w + GAP_PX + 4, 4), note, fill=color, font=font)
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()

