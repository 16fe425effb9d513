"""Every config of MMDetection 3.3.0's own tree (about 869 files) imports, or fails with one line; none is run."""
from __future__ import annotations

from tests.unit.detcore.mmdet_corpus import ROOT, import_tree


def test_every_mmdetection3_config_imports_or_fails_with_one_line() -> None:
    outcome = import_tree(ROOT / ".cache/mmdet3/configs", "3.3.0", 800)
    # Every Faster/Mask R-CNN, Cascade (Mask) R-CNN, RetinaNet and FCOS config on a plain ResNet + FPN imports
    # (160 of them); the rest is other architectures (DETR, YOLO, RTMDet, HTC, ...), refused by name.
    assert outcome["imported"] >= 155, outcome
    assert outcome["refused: architecture"] >= 590, outcome
