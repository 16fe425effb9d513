"""Drawing predictions and ground truth with torchvision's drawing utilities (and Pillow for captions)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 165, 0), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128)]


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A [3,H,W] image as uint8 (floats are taken to be in 0..1)."""
    if image.dtype == torch.uint8:
        return image
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def draw_result(image: torch.Tensor, result: Mapping[str, Any], class_names: Sequence[str] | None = None,
                score_thr: float = 0.3) -> torch.Tensor:
    """Boxes, masks and ``label score`` captions of detections scoring at least ``score_thr``."""
    canvas = to_uint8(image.cpu())
    scores = torch.as_tensor(result.get("scores", []), dtype=torch.float32)
    keep = scores >= score_thr
    if not bool(keep.any()):
        return canvas
    labels = torch.as_tensor(result["labels"])[keep].tolist()
    colors = [PALETTE[int(lbl) % len(PALETTE)] for lbl in labels]
    masks = result.get("masks")
    if masks is not None and len(masks):
        m = torch.as_tensor(masks)[keep]
        m = (m[:, 0] if m.dim() == 4 else m) > 0.5
        canvas = draw_segmentation_masks(canvas, m.cpu(), alpha=0.45, colors=colors)
    names = [class_names[int(lbl) - 1] if class_names and 0 < int(lbl) <= len(class_names) else str(int(lbl))
             for lbl in labels]
    captions = [f"{n} {s:.2f}" for n, s in zip(names, scores[keep].tolist())]
    boxes = torch.as_tensor(result["boxes"], dtype=torch.float32)[keep].cpu()
    return draw_bounding_boxes(canvas, boxes, labels=captions, colors=colors, width=2)


GT_COLOR = (0, 200, 0)
HEADER_PX = 14
GAP_PX = 4


def draw_ground_truth(image: torch.Tensor, target: Mapping[str, Any],
                      class_names: Sequence[str] | None = None) -> torch.Tensor:
    """The target's boxes (labels 1..K, in the image's pixels) in green, captioned with class names."""
    canvas = to_uint8(image.cpu())
    boxes = torch.as_tensor(target.get("boxes", torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4).cpu()
    if not len(boxes):
        return canvas
    labels = torch.as_tensor(target["labels"]).tolist()
    names = [class_names[int(lbl) - 1] if class_names and 0 < int(lbl) <= len(class_names) else str(int(lbl))
             for lbl in labels]
    return draw_bounding_boxes(canvas, boxes, labels=names, colors=GT_COLOR, width=2)


def draw_comparison(image: torch.Tensor, target: Mapping[str, Any], result: Mapping[str, Any],
                    class_names: Sequence[str] | None = None, score_thr: float = 0.3) -> torch.Tensor:
    """Ground truth (left, green) next to the predictions scoring at least ``score_thr`` (right), under a
    legend line; when no prediction passes the threshold the right panel's legend says so, in red."""
    from PIL import Image, ImageDraw

    left = draw_ground_truth(image, target, class_names)
    right = draw_result(image, result, class_names, score_thr)
    scores = torch.as_tensor(result.get("scores", []), dtype=torch.float32)
    passed = int((scores >= score_thr).sum())
    _, h, w = left.shape
    canvas = torch.full((3, h + HEADER_PX, 2 * w + GAP_PX), 255, dtype=torch.uint8)
    canvas[:, HEADER_PX:, :w] = left
    canvas[:, HEADER_PX:, w + GAP_PX:] = right
    pil = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    draw.text((2, 1), "ground truth", fill=GT_COLOR)
    if passed:
        draw.text((w + GAP_PX + 2, 1), f"{passed} predicted >= {score_thr:g}", fill=(0, 0, 0))
    else:
        draw.text((w + GAP_PX + 2, 1), f"no prediction >= {score_thr:g}", fill=(220, 0, 0))
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()
