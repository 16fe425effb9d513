"""Drawing predictions with torchvision's drawing utilities."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

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
