"""Every config of MMDetection 2.28.2's own tree (about 666 files) imports, or fails with one line; none is run."""
from __future__ import annotations

from tests.unit.detcore.mmdet_corpus import ROOT, import_tree


def test_every_mmdetection_config_imports_or_fails_with_one_line() -> None:
    outcome = import_tree(ROOT / ".cache/mmdet/configs", "2.28.2", 600)
    # Every Faster/Mask R-CNN, Cascade (Mask) R-CNN, RetinaNet and FCOS config on a plain ResNet + FPN imports.
    assert outcome["imported"] >= 130, outcome
    assert outcome["refused: architecture"] >= 300, outcome
