"""The Cityscapes configs: MMDetection's 8 classes, scales and schedule, read from `detcore convert cityscapes`
output; the guide's Part 3 config holds its AugFPN neck and Rotate/Translate AutoAugment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from detcore.config import load_config
from detcore.data import build_dataset, build_pipeline
from detcore.data.converters import CITYSCAPES_INSTANCE_CLASSES, convert_cityscapes
from detcore.models import build_detector

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs" / "cityscapes"
NO_DOWNLOAD = ["model.backbone.weights=null"]


def _cityscapes(root: Path, split: str) -> None:
    """One 64x32 image in Cityscapes' layout with a car (26000) and a rider (25001)."""
    ids = np.full((32, 64), 7, dtype=np.uint16)
    ids[4:20, 6:30], ids[10:30, 40:50] = 26000, 25001
    for sub, name, array in (("gtFine", "x_000000_000019_gtFine_instanceIds.png", ids),
                             ("leftImg8bit", "x_000000_000019_leftImg8bit.png", np.zeros((32, 64, 3), np.uint8))):
        (root / sub / split / "x").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / sub / split / "x" / name)


@pytest.mark.parametrize("name,masks", [("faster_rcnn_r50_fpn_1x_cityscapes", False),
                                        ("mask_rcnn_r50_fpn_1x_cityscapes", True)])
def test_configs_read_converted_cityscapes_with_mmdetections_classes_scales_and_schedule(
        name: str, masks: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml", NO_DOWNLOAD)
    assert cfg["classes"] == list(CITYSCAPES_INSTANCE_CLASSES.values()) and cfg["model"]["num_classes"] == 8
    assert cfg["model"]["backbone"]["depth"] == 50
    # MMDetection: 8 epochs over RepeatDataset(times=8), LR step after epoch 7, batch 8, lr 0.01
    assert cfg["runner"] == {"type": "EpochBasedRunner", "max_epochs": 64} and cfg["lr_config"]["step"] == [56]
    assert cfg["optimizer"]["lr"] == 0.01 and cfg["auto_scale_lr"]["base_batch_size"] == 8
    assert cfg["evaluation"] == {"interval": 8, "metric": ["bbox", "segm"] if masks else ["bbox"]}
    model = build_detector(cfg["model"])
    assert (tuple(model.transform.min_size), model.transform.max_size) == (tuple(range(800, 1025, 32)), 2048)
    assert type(model).__name__ == ("MaskRCNN" if masks else "FasterRCNN")

    monkeypatch.chdir(tmp_path)  # the config's paths, relative to the working directory
    for split in ("train", "val"):
        _cityscapes(tmp_path / "data/cityscapes", split)
        convert_cityscapes("data/cityscapes", f"data/cityscapes/annotations/instancesonly_filtered_gtFine_{split}.json",
                           split=split, progress=False)
    dataset = build_dataset({**cfg["data"]["train"], "classes": cfg["classes"]})
    image, target = dataset[0]
    assert image.shape == (3, 32, 64)
    assert sorted(target["labels"].tolist()) == [2, 3]  # rider, car in MMDetection's class order
    assert ("masks" in target) is masks
    assert len(build_dataset({**cfg["data"]["test"], "classes": cfg["classes"], "test_mode": True})) == 1


def test_the_guides_config_holds_its_neck_augmentations_and_10_epochs() -> None:
    raw = yaml.safe_load((CONFIGS / "cascade_mask_rcnn_r50_augfpn_autoaug_10e_cityscapes.yaml").read_text())
    assert raw["_base_"][0] == "../_base_/models/cascade_mask_rcnn_r50_fpn.yaml"
    assert raw["custom_imports"] == {"imports": ["examples.augfpn_neck"], "allow_failed_imports": False}
    assert raw["model"]["neck"] == {"_delete_": True, "type": "AugFPN", "in_channels": [256, 512, 1024, 2048],
                                    "out_channels": 256, "num_outs": 5}
    assert (raw["runner"]["max_epochs"], raw["lr_config"]["step"]) == (80, [64])  # 10 x RepeatDataset(8), step at 8
    steps = build_pipeline(raw["data"]["train"]["pipeline"]).transforms
    auto = steps[0]
    assert [[type(t).__name__ for t in p.transforms] for p in auto._pipelines] == [["Rotate"], ["Rotate", "Translate"]]
    assert [t.prob for p in auto._pipelines for t in p.transforms] == [0.5, 0.5, 0.5]
    torch.manual_seed(0)
    image, target = build_pipeline(raw["data"]["train"]["pipeline"])(torch.rand(3, 64, 128), {})
    assert image.shape == (3, 64, 128)
