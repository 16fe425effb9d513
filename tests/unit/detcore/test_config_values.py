"""The table of checked config values: what it refuses, what it lets through, one line per key."""
from __future__ import annotations

from pathlib import Path

import pytest

from detcore.config import apply_overrides, load_config
from detcore.config_values import (MAX_BATCH_PER_GPU, MAX_CLASSES, MAX_IMAGE_SIDE, MAX_WORKERS_PER_GPU,
                                   value_problems)
from detcore.errors import ConfigProblems

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
RETINA = ROOT / "configs/retinanet/retinanet_r50_fpn_1x_coco.yaml"


def shapes(*overrides: str) -> dict:
    """The shapes config with ``overrides`` applied after loading (so the table is not run yet)."""
    return apply_overrides(load_config(SHAPES, import_custom=False), overrides)


def test_every_shipped_config_passes():
    configs = [p for p in (ROOT / "configs").rglob("*.yaml") if "_base_" not in p.parts]
    assert len(configs) >= 10
    for path in configs:
        assert value_problems(load_config(path, import_custom=False)) == [], path


def test_the_bounds_themselves_are_accepted():
    cfg = shapes(f"data.samples_per_gpu={MAX_BATCH_PER_GPU}", f"data.workers_per_gpu={MAX_WORKERS_PER_GPU}",
                 f"model.num_classes={MAX_CLASSES}", f"model.min_size=[{MAX_IMAGE_SIDE}, 1]",
                 f"model.max_size={MAX_IMAGE_SIDE}",
                 f"model.anchor_generator.sizes=[[{MAX_IMAGE_SIDE}], [1], [2.5], 4]",
                 "model.anchor_generator.aspect_ratios=[[0.01, 100], [1], [1], [1]]", "+model.rpn.nms_thresh=1",
                 "+model.roi_head.fg_iou_thresh=0", "+model.roi_head.bg_iou_thresh=0")
    assert value_problems(cfg) == []


@pytest.mark.parametrize("override,line", [
    ("data.samples_per_gpu=4097", "data.samples_per_gpu must be at most 4096 (images per GPU in one step; "
                                  "detection uses 1 to 64), got 4097"),
    ("data.samples_per_gpu=true", "data.samples_per_gpu must be a positive integer, got True"),
    ("data.workers_per_gpu=-1", "data.workers_per_gpu must be an integer >= 0, got -1"),
    ("model.min_size=[800, 100000]", "model.min_size.1 must be at most 16384 (pixels per image side), got 100000"),
    ("model.min_size=0", "model.min_size must be a positive integer, got 0"),
    ("model.max_size='1333'", "model.max_size must be a positive integer, got '1333' (write numbers without quotes"),
    ("model.anchor_generator.sizes=32", "model.anchor_generator.sizes must be a list with one entry"),
    ("model.anchor_generator.sizes=[[32, x]]", "model.anchor_generator.sizes.0.1 must be an anchor side in pixels "
                                                "from 1 to 16384, got 'x'"),
    ("model.anchor_generator.sizes=[[0.5]]", "model.anchor_generator.sizes.0.0 must be an anchor side"),
    ("model.anchor_generator.aspect_ratios=[]", "model.anchor_generator.aspect_ratios must be a list of aspect "
                                                 "ratios"),
    ("model.anchor_generator.aspect_ratios=[[1.0], [.nan]]", "model.anchor_generator.aspect_ratios.1.0 must be"),
    ("model.rpn.post_nms_top_n_train=0", "model.rpn.post_nms_top_n_train must be a positive integer, got 0"),
    ("+model.rpn.nms_thresh=1.5", "model.rpn.nms_thresh must be a number in [0, 1], got 1.5"),
    ("model.roi_head.detections_per_img=100000", "model.roi_head.detections_per_img must be at most 10000"),
    ("model.roi_head.roi_size=7.0", "model.roi_head.roi_size must be a positive integer, got 7.0"),
    ("model.neck.out_channels=100000", "model.neck.out_channels must be at most 4096"),
    ("+data.train.with_mask=maybe", "data.train.with_mask must be true or false, got 'maybe'"),
    ("+data.val.skip_degenerate_boxes=1", "data.val.skip_degenerate_boxes must be true or false, got 1"),
    ("+data.train.max_boxes_per_image=0", "data.train.max_boxes_per_image must be a positive integer, got 0"),
    ("+model.image_std=[0.229, 0.224]", "model.image_std must be three numbers (R, G, B) in (0, 1]"),
    ("+model.image_std=[58.4, 57.1, 57.4]", "model.image_std.0 must be a standard deviation of 0..1 pixel values"),
])
def test_each_bad_value_is_one_line_naming_the_key(override, line):
    problems = value_problems(shapes(override))
    assert len(problems) == 1 and problems[0].startswith(line), problems


def test_resize_steps_are_checked_and_other_steps_keep_their_own_keys():
    cfg = apply_overrides(load_config(RETINA, import_custom=False), ["data.train.pipeline.0.scale=[1333, 80000]"])
    assert value_problems(cfg) == ["data.train.pipeline.0.scale.1 must be at most 16384 (pixels per image side), "
                                   "got 80000"]
    cfg["data"]["train"]["pipeline"][0] = {"type": "RandomAffine", "scale": [0.5, 1.5]}  # a scale range, not a size
    assert value_problems(cfg) == []


@pytest.mark.parametrize("section,values,line", [
    ("rpn", {"bg_iou_thresh": 0.8}, "model.rpn.bg_iou_thresh (0.8) must not be above fg_iou_thresh (0.7)"),
    ("roi_head", {"fg_iou_thresh": 0.4}, "model.roi_head.bg_iou_thresh (0.5) must not be above fg_iou_thresh (0.4)"),
    ("test_cfg", {"fg_iou_thresh": 0.3, "bg_iou_thresh": 0.35}, "model.test_cfg.bg_iou_thresh (0.35)"),
])
def test_a_background_threshold_above_the_foreground_one_is_refused(section, values, line):
    """torchvision's Matcher asserts it (an AssertionError traceback minutes into a job)."""
    cfg = shapes()
    cfg["model"].setdefault(section, {}).update(values)
    problems = value_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(line), problems


def test_every_bad_key_is_listed_at_load_each_on_its_own_line():
    with pytest.raises(ConfigProblems) as exc:
        load_config(SHAPES, ["data.samples_per_gpu=1000000", "model.min_size=100000",
                             "model.anchor_generator.sizes=[[a]]"], import_custom=False)
    problems = exc.value.problems
    assert len(problems) == 3 and all(p.startswith(f"{SHAPES}: ") for p in problems), problems
    assert [p.split(": ")[1].split(" ")[0] for p in problems] == [
        "data.samples_per_gpu", "model.min_size", "model.anchor_generator.sizes.0.0"]


def test_keys_a_config_leaves_out_are_not_checked():
    assert value_problems({}) == [] and value_problems({"model": {"type": "FCOS"}, "data": {"train": None}}) == []


def test_the_docs_list_every_checked_key_and_bound():
    from detcore.config_values import CHECKS, MAX_DETECTIONS, MAX_PER_IMAGE

    text = (ROOT / "docs/config-checks.md").read_text()
    missing = [c.key for c in CHECKS if f"`{c.key}`" not in text and c.key.rsplit(".", 1)[-1] not in text]
    assert missing == []
    for bound in (MAX_IMAGE_SIDE, MAX_BATCH_PER_GPU, MAX_WORKERS_PER_GPU, MAX_CLASSES, MAX_PER_IMAGE, MAX_DETECTIONS):
        assert f"{bound:,}" in text or str(bound) in text, bound
