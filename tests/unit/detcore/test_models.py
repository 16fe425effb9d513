"""Every detector type builds from its config and runs a CPU forward in train and eval mode."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models.detection as tvd

from detcore.config import load_config
from detcore.errors import ConfigError
from detcore.models import build_detector

ROOT = Path(__file__).resolve().parents[3]
TINY = {"type": "TinyNet", "channels": [8, 16, 32, 32], "norm": "gn"}


def _targets(masks: bool = False) -> list[dict]:
    t = {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0]]), "labels": torch.tensor([1, 2])}
    if masks:
        m = torch.zeros(2, 128, 128, dtype=torch.uint8)
        m[0, 12:70, 10:60] = 1
        m[1, 20:50, 70:120] = 1
        t["masks"] = m
    return [t]


@pytest.mark.parametrize("arch", ["FasterRCNN", "MaskRCNN", "RetinaNet", "FCOS"])
def test_tiny_detector_train_and_eval_forward(arch: str) -> None:
    neck = {"type": "FPN", "out_channels": 32, "extra_blocks": "pool" if "RCNN" in arch else "p6p7"}
    cfg = {"type": arch, "num_classes": 2, "backbone": TINY, "neck": neck, "min_size": 128, "max_size": 128}
    if "RCNN" in arch:
        cfg["roi_head"] = {"representation_size": 64, **({"mask_layers": [16, 16]} if arch == "MaskRCNN" else {})}
    model = build_detector(cfg)
    model.train()
    losses = model([torch.rand(3, 128, 128)], _targets(arch == "MaskRCNN"))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 128, 128), torch.rand(3, 96, 128)])
    assert len(out) == 2 and {"boxes", "scores", "labels"} <= set(out[0])
    if arch == "MaskRCNN":
        assert "masks" in out[0]


@pytest.mark.parametrize("config,factory,kwargs", [
    ("faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml", tvd.fasterrcnn_resnet50_fpn, {}),
    ("mask_rcnn/mask_rcnn_r50_fpn_1x_coco.yaml", tvd.maskrcnn_resnet50_fpn, {}),
    ("retinanet/retinanet_r50_fpn_1x_coco.yaml", tvd.retinanet_resnet50_fpn, {}),
    ("fcos/fcos_r50_fpn_1x_coco.yaml", tvd.fcos_resnet50_fpn, {}),
])
def test_standard_configs_match_torchvision_state_dict(config: str, factory, kwargs) -> None:
    """A user with torchvision's COCO weights on disk can start from them (num_classes 90 -> 91 outputs)."""
    cfg = load_config(ROOT / "configs" / config, ["model.num_classes=90", "model.backbone.weights=null"])
    ours = build_detector(cfg["model"]).state_dict()
    theirs = factory(weights=None, weights_backbone=None, num_classes=91, **kwargs).state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}  # FrozenBN has none
    assert set(ours) == set(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_mobilenet_backbone_matches_torchvision() -> None:
    cfg = {"type": "FasterRCNN", "num_classes": 90, "backbone": {"type": "MobileNetV3"},
           "neck": {"type": "FPN", "out_channels": 256},
           "anchor_generator": {"sizes": [[32, 64, 128, 256, 512]] * 3, "aspect_ratios": [0.5, 1.0, 2.0]}}
    ours = build_detector(cfg).state_dict()
    theirs = tvd.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}
    assert set(ours) == set(theirs)


@pytest.mark.parametrize("depth", [18, 34, 101])
def test_resnet_depths_build(depth: int) -> None:
    cfg = {"type": "RetinaNet", "num_classes": 1, "min_size": 64, "max_size": 64,
           "backbone": {"type": "ResNet", "depth": depth, "returned_layers": [2, 3, 4]},
           "neck": {"type": "FPN", "out_channels": 64, "extra_blocks": "p6p7"}}
    model = build_detector(cfg).eval()
    with torch.no_grad():
        assert len(model([torch.rand(3, 64, 64)])) == 1


def test_bad_model_options_are_named() -> None:
    with pytest.raises(ConfigError, match="model.num_classes must be a positive integer"):
        build_detector({"type": "FasterRCNN", "num_classes": 0, "backbone": TINY, "neck": {"type": "FPN"}})
    with pytest.raises(ConfigError, match="anchor_generator has 2 levels"):
        build_detector({"type": "FasterRCNN", "num_classes": 1, "backbone": TINY, "neck": {"type": "FPN"},
                        "anchor_generator": {"sizes": [[16], [32]]}})
    with pytest.raises(ConfigError, match=r"model.rpn: unknown option\(s\) \['nms'\]"):
        build_detector({"type": "FasterRCNN", "num_classes": 1, "backbone": TINY, "neck": {"type": "FPN"},
                        "rpn": {"nms": 0.7}})
