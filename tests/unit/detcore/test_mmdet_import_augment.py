"""`config import` of MMDetection's augmentations: AutoAugment policies (the guide's Part 3 config among them)
map onto detcore's transforms of the same names, the YAML builds, and what cannot carry over is listed."""
from __future__ import annotations

from pathlib import Path

import pytest

from detcore.config import load_config
from detcore.data import build_pipeline
from detcore.mmdet_import import import_config, write_yaml
from detcore.mmdet_import.data_map import map_data
from detcore.mmdet_import.reader import read_mmdet_config
from detcore.mmdet_import.source import Source
from detcore.mmdet_import.transform_map import UnmappedStep, is_augmentation, map_augmentation

CONFIGS = Path(__file__).resolve().parents[2] / "data" / "mmdet_configs"
GUIDE = CONFIGS / "cityscapes" / "cascade_mask_rcnn_r50_augfpn_autoaug_10e_cityscapes.py"
FILL = [124, 116, 104]
GUIDE_AUTOAUGMENT = {"type": "AutoAugment", "policies": [
    [{"type": "Rotate", "level": 5, "img_fill_val": FILL, "prob": 0.5, "scale": 1}],
    [{"type": "Rotate", "level": 7, "img_fill_val": FILL, "prob": 0.5},  # 2.x's default prob written out
     {"type": "Translate", "level": 5, "prob": 0.5, "img_fill_val": FILL}]]}


def test_the_guides_part3_train_pipeline_maps_policy_by_policy() -> None:
    src = Source(read_mmdet_config(GUIDE), str(GUIDE))
    model: dict = {"type": "MaskRCNN"}
    train = map_data(src, model)["data"]["train"]
    # the RepeatDataset wrapper is dropped (and said so); its inner pipeline is the train pipeline
    assert train["pipeline"] == [GUIDE_AUTOAUGMENT, {"type": "Resize", "scales": [[2048, 800], [2048, 1024]]},
                                 {"type": "RandomFlip", "prob": 0.5}]
    assert train["with_mask"] is True
    assert (model["min_size"], model["max_size"]) == (1024, 2048)
    summary = "\n".join(src.summary())
    assert "data.train.type: \"RepeatDataset\"  (RepeatDataset wrapper dropped" in summary
    assert "pipeline.2.policies" not in summary and "AutoAugment" not in summary  # nothing of it left behind
    steps = build_pipeline(train["pipeline"]).transforms
    assert [type(s).__name__ for s in steps] == ["AutoAugment", "Resize", "RandomFlip", "SanitizeBoxes"]
    rotate = steps[0]._pipelines[1].transforms[0]
    assert (rotate.version, rotate.prob, rotate.magnitude.max_mag) == (2, 0.5, 30.0)
    assert rotate.fill == pytest.approx([104 / 255, 116 / 255, 124 / 255])


def test_a_mask_rcnn_cityscapes_config_with_autoaugment_imports_and_the_yaml_builds(tmp_path: Path) -> None:
    config = tmp_path / "mask_rcnn_r50_fpn_autoaug_cityscapes.py"
    config.write_text(
        f"_base_ = '{CONFIGS}/cityscapes/mask_rcnn_r50_fpn_1x_cityscapes.py'\n"
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),\n"
        "    dict(type='AutoAugment', policies=[[dict(type='Shear', level=4, prob=0.6, direction='vertical')],\n"
        "        [dict(type='ColorTransform', level=6), dict(type='Translate', level=3, max_translate_offset=100.)]]),\n"
        "    dict(type='Resize', img_scale=(2048, 1024), keep_ratio=True), dict(type='RandomFlip', flip_ratio=0.5),\n"
        "    dict(type='DefaultFormatBundle'), dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])]\n"
        "data = dict(train=dict(dataset=dict(pipeline=train_pipeline)))\n")
    imported = import_config(config)
    pipeline = imported.config["data"]["train"]["pipeline"]
    assert pipeline[0] == {"type": "AutoAugment", "policies": [
        [{"type": "Shear", "level": 4, "prob": 0.6, "direction": "vertical"}],
        [{"type": "ColorTransform", "level": 6}, {"type": "Translate", "level": 3, "max_translate_offset": 100.0}]]}
    assert not any("AutoAugment" in line for line in imported.summary)
    cfg = load_config(write_yaml(imported, tmp_path / "imported.yaml"))
    assert type(build_pipeline(cfg["data"]["train"]["pipeline"]).transforms[0]).__name__ == "AutoAugment"


def test_a_policy_with_a_step_detcore_lacks_is_left_out_and_listed(tmp_path: Path) -> None:
    config = tmp_path / "detr_style.py"
    config.write_text(  # DETR's policies (MMDetection 2.x): a RandomCrop detcore does not have
        f"_base_ = '{CONFIGS}/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py'\n"
        "data = dict(train=dict(pipeline=[dict(type='LoadImageFromFile'), dict(type='AutoAugment', policies=[\n"
        "    [dict(type='Resize', img_scale=[(480, 1333), (512, 1333)], multiscale_mode='value', keep_ratio=True)],\n"
        "    [dict(type='Resize', img_scale=[(400, 1333)], multiscale_mode='value', keep_ratio=True),\n"
        "     dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600))]])]))\n")
    imported = import_config(config)
    assert imported.config["data"]["train"]["pipeline"] == []
    assert any(line.startswith("data.train.pipeline.1: ") and "left out: AutoAugment policies[1][1]: RandomCrop has "
               "no detcore equivalent" in line for line in imported.summary)


def test_map_augmentation_for_the_3x_importer() -> None:
    assert is_augmentation("TranslateX", 3) and not is_augmentation("TranslateX", 2)
    assert is_augmentation("Translate", 2) and not is_augmentation("Translate", 3)
    # 3.x Rotate with a level gets max_mag, so detcore reads it with 3.x's defaults (prob 1.0, rounding)
    assert map_augmentation({"type": "Rotate", "level": 5}, 3) == {"type": "Rotate", "level": 5, "max_mag": 30.0}
    assert map_augmentation({"type": "Rotate", "level": 5}, 2) == {"type": "Rotate", "level": 5, "prob": 0.5}
    rotate = build_pipeline([map_augmentation({"type": "Rotate", "level": 5}, 3)]).transforms[0]
    assert (rotate.version, rotate.prob, rotate.magnitude.rounded) == (3, 1.0, True)
    policy = map_augmentation({"type": "AutoAugment", "policies": [
        [{"type": "RandomChoiceResize", "scales": [(1333, 480), (1333, 512)], "keep_ratio": True},
         {"type": "ShearX", "prob": 0.4, "level": 3, "img_border_value": (1, 2, 3)}]], "prob": [1.0]}, 3)
    assert policy == {"type": "AutoAugment", "prob": [1.0], "policies": [
        [{"type": "Resize", "scales": [[1333, 480], [1333, 512]]},
         {"type": "ShearX", "prob": 0.4, "level": 3, "img_border_value": [1, 2, 3]}]]}
    assert map_augmentation({"type": "AutoAugment"}, 3) == {"type": "AutoAugment"}  # 3.x's default policies
    for step, why in (({"type": "AutoAugment"}, "requires them"), ({"type": "Mosaic"}, "'Mosaic' is not"),
                      ({"type": "AutoAugment", "policies": [[{"type": "Resize", "img_scale": [(1, 2), (3, 4)]}]]},
                       "multiscale_mode='range'")):
        with pytest.raises(UnmappedStep, match=why):
            map_augmentation(step, 2)


def test_a_3x_train_pipeline_maps_its_augmentations(tmp_path: Path) -> None:
    """3.x names (TranslateX, AutoAugment with 3.x parameters) map on the train split only."""
    base = CONFIGS / "v3" / "faster_rcnn" / "faster-rcnn_r50_fpn_1x_coco.py"
    path = tmp_path / "autoaug-3x.py"
    path.write_text(
        f"_base_ = {str(base)!r}\n"
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),\n"
        "    dict(type='AutoAugment', policies=[[dict(type='Rotate', prob=0.6, max_mag=30.0)],\n"
        "                                       [dict(type='TranslateX', prob=0.5, min_mag=0.0, max_mag=0.1)]]),\n"
        "    dict(type='Resize', scale=(1333, 800), keep_ratio=True), dict(type='RandomFlip', prob=0.5),\n"
        "    dict(type='PackDetInputs')]\n"
        "train_dataloader = dict(dataset=dict(pipeline=train_pipeline))\n")
    cfg = import_config(path).config
    train = [step["type"] for step in cfg["data"]["train"]["pipeline"]]
    assert train == ["AutoAugment", "Resize", "RandomFlip"]
    policies = cfg["data"]["train"]["pipeline"][0]["policies"]
    assert [[step["type"] for step in policy] for policy in policies] == [["Rotate"], ["TranslateX"]]
    assert all(step["type"] != "AutoAugment" for step in cfg["data"]["val"].get("pipeline", []))
    build_pipeline(cfg["data"]["train"]["pipeline"])  # the mapped steps build as detcore transforms
