"""Seed a torch hub cache with files of torchvision's names, made by torchvision's own builders (no network).

torch hub checks a file's hash only when it downloads it, so a file already in the cache under the
real name is what both torchvision's builders (``weights=...COCO_V1``) and detcore read.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision.models as tvm
import torchvision.models.detection as tvd

from detcore.pretrained.names import PREFIX, parse_weights

# COCO category ids the seeded detectors favour: person, car, dog
FAVOURED = [1, 3, 18]


def cache_file(checkpoints: Path, name: str) -> Path:
    return checkpoints / parse_weights(name if "://" in name or "_Weights." in name else PREFIX + name).file


def seed_classifier(checkpoints: Path, builder: str, seed: int = 0) -> dict:
    """A random-init torchvision classifier saved as ``builder``'s first weights file; its state dict."""
    torch.manual_seed(seed)
    state = getattr(tvm, builder)().state_dict()
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache_file(checkpoints, builder))
    return state


def seed_detector(checkpoints: Path, builder: str, seed: int = 0) -> dict:
    """torchvision's ``builder`` with random weights, saved as its COCO weights file; its state dict.

    The class biases are raised for :data:`FAVOURED` so detections survive the score thresholds. A v1
    builder without weights builds BatchNorm where its COCO weights use frozen BN; the keys are the
    same but the BN counters, which the published files (made for frozen BN) lack: they are dropped.
    """
    torch.manual_seed(seed)
    model = getattr(tvd, builder)(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        if hasattr(model, "roi_heads"):
            model.roi_heads.box_predictor.cls_score.bias[FAVOURED] = torch.tensor([3.0, 2.9, 2.8])
        elif builder.startswith("retinanet"):
            model.head.classification_head.cls_logits.bias.view(-1, 91)[:, FAVOURED] = torch.tensor([1.0, 0.9, 0.8])
        else:  # FCOS: score = sqrt(class probability x centerness)
            model.head.classification_head.cls_logits.bias[FAVOURED] = torch.tensor([2.0, 1.9, 1.8])
            model.head.regression_head.bbox_ctrness.bias.fill_(2.0)
    state = model.state_dict()
    if not builder.endswith("_v2"):
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache_file(checkpoints, builder))
    return state
