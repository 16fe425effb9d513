"""MMDetection's augmentations by name: boxes and masks move with the image, boxes that leave are dropped with
their masks and labels, magnitudes follow MMDetection's level formulas, AutoAugment picks one policy per
image, and every draw repeats under the trainer's per-sample seeding."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from detcore.data import build_pipeline
from detcore.engine.setup import SeededSamples
from detcore.errors import ConfigError

H, W = 60, 80
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def scene(boxes=((20, 15, 45, 35),), h: int = H, w: int = W) -> tuple[tv_tensors.Image, dict]:
    """A blue image with red filled rectangles; each rectangle's box and mask are exact."""
    image = torch.tensor(BLUE).view(3, 1, 1).repeat(1, h, w)
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        image[:, y1:y2, x1:x2] = torch.tensor(RED).view(3, 1, 1)
        masks[k, y1:y2, x1:x2] = 1
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY",
                                                canvas_size=(h, w)),
              "labels": torch.arange(1, len(boxes) + 1), "masks": tv_tensors.Mask(masks), "image_id": 3}
    return tv_tensors.Image(image), target


def red_pixels(image: torch.Tensor) -> torch.Tensor:
    """Where the image is (mostly) the object's red: fill (grey) and background (blue) are not."""
    r, g, b = image
    return (r > 0.6) & (g < 0.4) & (b < 0.4)


def bbox_of(pixels: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(pixels, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a & b).sum().item() / max(1, (a | b).sum().item())


GEOMETRIC = [  # (config, the box and mask must match the red pixels exactly (an integer shift) or closely)
    ({"type": "Rotate", "level": 5, "prob": 1.0}, False),                                   # 2.x, 15 degrees
    ({"type": "Rotate", "level": 10, "prob": 1.0, "max_rotate_angle": 20, "scale": 0.8}, False),
    ({"type": "Rotate", "level": 7, "max_mag": 30.0}, False),                               # 3.x
    ({"type": "Rotate"}, False),                                                            # 3.x, level drawn
    ({"type": "Translate", "level": 5, "prob": 1.0, "max_translate_offset": 20}, True),
    ({"type": "Translate", "level": 5, "prob": 1.0, "max_translate_offset": 20, "direction": "vertical"}, True),
    ({"type": "TranslateX", "level": 10}, True),
    ({"type": "TranslateY", "level": 10}, True),
    ({"type": "Shear", "level": 10, "prob": 1.0}, False),
    ({"type": "Shear", "level": 10, "prob": 1.0, "direction": "vertical"}, False),
    ({"type": "ShearX", "level": 6}, False),
    ({"type": "ShearY", "level": 6}, False),
]


@pytest.mark.parametrize("cfg,exact", GEOMETRIC, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_boxes_and_masks_move_with_the_object(cfg: dict, exact: bool) -> None:
    pipeline = build_pipeline([cfg])
    image0, _ = scene()
    for seed in range(4):
        torch.manual_seed(seed)
        image, target = pipeline(*scene())
        obj = red_pixels(image)
        assert not torch.equal(obj, red_pixels(image0)), "the transform did not move the object"
        assert target["labels"].tolist() == [1] and target["image_id"] == 3
        mask = target["masks"][0].bool()
        box = target["boxes"][0].tolist()
        if exact:
            assert torch.equal(mask, obj)
            assert box == bbox_of(obj)
        else:  # bilinear edges: the mask is the object's pixels but for a rim, the box bounds them
            assert iou(mask, obj) > 0.85
            assert box == pytest.approx(bbox_of(obj), abs=2.0)


def test_rotate_turns_clockwise_by_the_level_angle_as_mmcv() -> None:
    # 2.x: angle = level / 10 * max_rotate_angle = 15 degrees, clockwise; random_negative_prob 0 keeps the sign
    image, target = build_pipeline([{"type": "Rotate", "level": 5, "prob": 1.0, "random_negative_prob": 0.0}])(
        *scene([(60, 28, 64, 32)]))
    cx, cy = (W - 1) / 2, (H - 1) / 2
    x, y = 61.5 - cx, 29.5 - cy  # the object's centre, right of the image centre
    a = math.radians(15)  # clockwise on screen (y down)
    want = (cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a))
    x1, y1, x2, y2 = target["boxes"][0].tolist()
    assert ((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5) == pytest.approx(want, abs=0.6)
    assert (y1 + y2) / 2 > 30  # moved down: clockwise


def test_magnitudes_follow_mmdetection_levels() -> None:
    def dx(cfg: dict) -> float:
        _, target = build_pipeline([cfg])(*scene())
        return target["boxes"][0, 0].item() - 20.0

    # 2.x Translate: int(level / 10 * max_translate_offset), negated with random_negative_prob
    assert dx({"type": "Translate", "level": 3, "prob": 1.0, "max_translate_offset": 35, "random_negative_prob": 0}) == 10
    assert dx({"type": "Translate", "level": 3, "prob": 1.0, "max_translate_offset": 35, "random_negative_prob": 1}) == -10
    # 3.x TranslateX: int(width * round(level / 10 * (max_mag - min_mag) + min_mag, 1)); 0.25 rounds to 0.2
    assert dx({"type": "TranslateX", "level": 5, "min_mag": 0.0, "max_mag": 0.5, "reversal_prob": 0.0}) == 16
    assert dx({"type": "TranslateX", "level": 10, "reversal_prob": 1.0}) == -8
    # 2.x Shear: slope level / 10 * max_shear_magnitude about the top-left corner (x + slope * y)
    _, target = build_pipeline([{"type": "Shear", "level": 5, "prob": 1.0, "random_negative_prob": 0}])(*scene())
    assert target["boxes"][0].tolist() == pytest.approx([20 + 0.15 * 15, 15, 45 + 0.15 * 35, 35], abs=1e-3)
    # 3.x ShearY: angle in degrees, slope tan(angle)
    _, target = build_pipeline([{"type": "ShearY", "level": 10, "max_mag": 45.0, "reversal_prob": 0.0}])(*scene())
    assert target["boxes"][0].tolist() == pytest.approx([20, 15 + 20, 45, min(H, 35 + 45)], abs=1e-3)


def test_boxes_that_leave_the_image_are_dropped_with_masks_and_labels() -> None:
    boxes = ((2, 10, 12, 20), (40, 20, 70, 50), (55, 2, 75, 12))
    for cfg in ({"type": "Translate", "level": 10, "prob": 1.0, "max_translate_offset": 30, "random_negative_prob": 1},
                {"type": "TranslateX", "level": 10, "min_mag": 0.0, "max_mag": 0.4, "reversal_prob": 1.0}):
        image, target = build_pipeline([cfg])(*scene(boxes))  # 30 or 32 px to the left: the first box leaves
        assert target["labels"].tolist() == [2, 3]
        assert len(target["boxes"]) == len(target["masks"]) == 2
        for mask, box in zip(target["masks"], target["boxes"]):
            assert box.tolist() == bbox_of(mask.bool())
        assert torch.equal(target["masks"].sum(0).bool(), red_pixels(image))


def test_a_box_left_with_under_a_pixel_is_dropped_as_mmdetection_filters_it() -> None:
    _, target = build_pipeline([{"type": "Translate", "level": 10, "prob": 1.0, "max_translate_offset": 76,
                                 "random_negative_prob": 0}])(*scene(((2, 10, 12, 20), (40, 20, 79, 50))))
    assert target["labels"].tolist() == [1]  # the second box keeps 0 px (80 - 116 < 0): gone


def test_prob_zero_leaves_the_sample_and_fill_is_mmdetection_bgr() -> None:
    image0, target0 = scene()
    image, target = build_pipeline([{"type": "Rotate", "level": 10, "prob": 0.0}])(*scene())
    assert torch.equal(image, image0) and torch.equal(target["masks"], target0["masks"])
    image, _ = build_pipeline([{"type": "Translate", "level": 10, "prob": 1.0, "max_translate_offset": 10,
                                "random_negative_prob": 0, "img_fill_val": [124, 116, 104]}])(*scene())
    # the guide's (124, 116, 104) is blue, green, red as MMDetection's BGR images read it
    assert image[:, 5, 0].tolist() == pytest.approx([104 / 255, 116 / 255, 124 / 255])


@pytest.mark.parametrize("cfg,op", [
    ({"type": "ColorTransform", "level": 10, "prob": 1.0}, lambda i: F.adjust_saturation(i, 1.9)),
    ({"type": "BrightnessTransform", "level": 5, "prob": 1.0}, lambda i: F.adjust_brightness(i, 1.0)),
    ({"type": "ContrastTransform", "level": 0, "prob": 1.0}, lambda i: F.adjust_contrast(i, 0.1)),
    ({"type": "Color", "level": 2}, lambda i: F.adjust_saturation(i, 0.5)),        # round(0.46, 1)
    ({"type": "Brightness", "level": 10}, lambda i: F.adjust_brightness(i, 1.9)),
    ({"type": "Sharpness", "level": 5, "max_mag": 1.5}, lambda i: F.adjust_sharpness(i, 0.8)),
    ({"type": "Equalize"}, F.equalize), ({"type": "EqualizeTransform", "prob": 1.0}, F.equalize),
    ({"type": "Invert"}, F.invert), ({"type": "AutoContrast"}, F.autocontrast),
    ({"type": "Solarize", "level": 5}, lambda i: F.solarize(i, 128 / 255)),
    ({"type": "SolarizeAdd", "level": 10}, lambda i: torch.where(i < 128 / 255, (i + 110 / 255).clamp(max=1), i)),
    ({"type": "Posterize", "level": 5}, lambda i: F.posterize(i, 2)),
])
def test_colour_transforms_change_the_image_only(cfg: dict, op) -> None:
    torch.manual_seed(0)
    image0, target0 = scene()
    image0 = tv_tensors.Image(image0 * 0.6 + torch.rand_like(image0) * 0.3)
    image, target = build_pipeline([cfg])(image0.clone(), dict(target0))
    torch.testing.assert_close(image, op(image0))
    assert torch.equal(target["boxes"], target0["boxes"]) and torch.equal(target["masks"], target0["masks"])


GUIDE_POLICIES = [[{"type": "Rotate", "level": 5, "img_fill_val": [124, 116, 104], "prob": 0.5, "scale": 1}],
                  [{"type": "Rotate", "level": 7, "img_fill_val": [124, 116, 104]},
                   {"type": "Translate", "level": 5, "prob": 0.5, "img_fill_val": [124, 116, 104]}]]


def test_autoaugment_runs_exactly_one_policy_per_image() -> None:
    right = {"type": "Translate", "level": 10, "prob": 1.0, "max_translate_offset": 10, "random_negative_prob": 0}
    down = {**right, "direction": "vertical"}
    pipeline = build_pipeline([{"type": "AutoAugment", "policies": [[right], [down]]}])
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        _, target = pipeline(*scene())
        seen.add(tuple(target["boxes"][0].tolist()))
    assert seen == {(30.0, 15.0, 55.0, 35.0), (20.0, 25.0, 45.0, 45.0)}  # one or the other, never both or none
    weighted = build_pipeline([{"type": "AutoAugment", "policies": [[right], [down]], "prob": [0.0, 1.0]}])
    assert {tuple(weighted(*scene())[1]["boxes"][0].tolist()) for _ in range(5)} == {(20.0, 25.0, 45.0, 45.0)}


def test_autoaugment_is_reproducible_under_the_trainers_sample_seeds() -> None:
    class Scenes(torch.utils.data.Dataset):
        pipeline = build_pipeline([{"type": "AutoAugment", "policies": GUIDE_POLICIES}, {"type": "ColorTransform",
                                                                                         "level": 3}])

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            return self.pipeline(*scene(((10 + i, 10, 40, 30), (45, 20, 70, 50))))

    def draw(seed: int) -> list[tuple]:
        samples = SeededSamples(Scenes(), seed)
        return [(img, t["boxes"].tolist(), t["labels"].tolist()) for img, t in (samples[(e, i)] for e in range(3)
                                                                               for i in range(4))]

    first, again, other = draw(0), draw(0), draw(1)
    assert all(torch.equal(a[0], b[0]) and a[1:] == b[1:] for a, b in zip(first, again))
    # sample (epoch, i) is the pipeline under torch.manual_seed(its seed): the stream a plain seeding gives
    torch.manual_seed((0 * 1_000_003 + 2 * 100_003 + 3) % 2 ** 63)
    img, target = Scenes()[3]
    assert torch.equal(img, first[2 * 4 + 3][0]) and target["boxes"].tolist() == first[2 * 4 + 3][1]
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other))
    assert len({tuple(map(tuple, s[1])) for s in first}) > 4  # the images differ across epochs and samples


def test_default_policies_are_mmdetection_3x_v0_and_run() -> None:
    pipeline = build_pipeline([{"type": "AutoAugment"}])
    assert len(pipeline.transforms[0].policies) == 25
    for seed in range(10):
        torch.manual_seed(seed)
        image, target = pipeline(*scene())
        assert image.shape == (3, H, W) and len(target["boxes"]) == len(target["masks"]) == len(target["labels"])


@pytest.mark.parametrize("cfg,match", [
    ({"type": "Rotate", "level": 5, "max_rotate_angle": 30, "max_mag": 30.0}, r"Rotate: max_rotate_angle are "
                                                                               r"MMDetection 2.x parameters and max_mag"),
    ({"type": "Rotate", "img_fill_val": 128}, r"level is required with MMDetection 2.x's parameters"),
    ({"type": "Translate", "level": 11}, r"Translate: level must be a number in \[0, 10\], got 11"),
    ({"type": "Shear", "level": 5, "img_fill_val": [1, 2]}, r"img_fill_val must be a number or 3 numbers"),
    ({"type": "TranslateX", "min_mag": 0.5, "max_mag": 0.1}, r"min_mag=0.5 is above max_mag=0.1"),
    ({"type": "ShearX", "interpolation": "lanczos"}, r"interpolation must be one of nearest, bilinear"),
    ({"type": "AutoAugment", "policies": []}, r"policies must be a non-empty list"),
    ({"type": "AutoAugment", "policies": [[{"type": "Rotate"}], [{"type": "Sharpen"}]]},
     r"AutoAugment: policies\[1\]\[0\]: unknown transform type 'Sharpen'"),
    ({"type": "AutoAugment", "policies": [[{"type": "Rotate"}]], "prob": [0.5]}, r"prob must be 1 non-negative"),
])
def test_bad_parameters_are_one_line(cfg: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_pipeline([cfg])
