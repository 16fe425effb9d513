"""Pipelines: boxes and masks stay aligned through every geometric transform."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from detcore.data import build_pipeline
from detcore.data.transforms import Resize, SanitizeBoxes
from detcore.errors import ConfigError, RegistryError

BOXES = [[10.0, 12.0, 30.0, 40.0], [40.0, 20.0, 70.0, 35.0]]


def _sample(h: int = 60, w: int = 80) -> tuple[tv_tensors.Image, dict]:
    """An image whose objects are filled rectangles, so each mask's box is the object's box."""
    masks = torch.zeros(len(BOXES), h, w, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(BOXES):
        masks[k, int(y1):int(y2), int(x1):int(x2)] = 1
    image = tv_tensors.Image(torch.rand(3, h, w))
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor(BOXES), format="XYXY", canvas_size=(h, w)),
              "labels": torch.tensor([1, 2]), "masks": tv_tensors.Mask(masks), "image_id": 7}
    return image, target


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize("cfg", [
    [{"type": "RandomFlip", "prob": 1.0}],
    [{"type": "RandomFlip", "prob": 1.0, "direction": "vertical"}],
    [{"type": "Resize", "scale": [200, 100]}],
    [{"type": "Resize", "size": 45}],
    [{"type": "RandomRotate", "degrees": [25, 25]}],
    [{"type": "RandomRotate", "degrees": [90, 90]}],
    [{"type": "RandomAffine", "degrees": 0, "translate": [0.1, 0.1]}],
    [{"type": "RandomAffine", "degrees": 15, "translate": [0.05, 0.05], "scale": [0.9, 1.1]}],
    [{"type": "Resize", "scales": [[100, 50], [160, 90]]}, {"type": "RandomFlip", "prob": 0.5},
     {"type": "PhotoMetricDistortion", "prob": 1.0}],
])
def test_boxes_and_masks_stay_aligned(cfg):
    torch.manual_seed(0)
    pipeline = build_pipeline(cfg)
    for _ in range(3):
        image, target = pipeline(*_sample())
        assert target["masks"].shape[-2:] == image.shape[-2:] == target["boxes"].canvas_size
        assert len(target["boxes"]) == len(target["labels"]) == len(target["masks"]) == 2
        torch.testing.assert_close(_mask_boxes(target["masks"]), target["boxes"].as_subclass(torch.Tensor),
                                   atol=2.0, rtol=0.0)
        assert target["labels"].tolist() == [1, 2] and target["image_id"] == 7


def test_flip_moves_boxes_to_the_mirrored_place():
    image, target = build_pipeline([{"type": "RandomFlip", "prob": 1.0}])(*_sample())
    assert target["boxes"].tolist() == [[50.0, 12.0, 70.0, 40.0], [10.0, 20.0, 40.0, 35.0]]


def test_resize_sizes_and_output_size():
    assert Resize(scale=[1333, 800]).output_size(480, 640) == (800, 1067)
    assert Resize(scale=[200, 100]).output_size(60, 80) == (100, 133)
    assert Resize(size=30).output_size(60, 80) == (30, 40)
    assert Resize(size=60, max_size=70).output_size(60, 80) == (53, 70)
    assert Resize(scales=[[100, 50], [160, 90]]).output_size(60, 80) is None
    image, target = build_pipeline([{"type": "Resize", "scale": [200, 100]}])(*_sample())
    assert image.shape[-2:] == (100, 133)
    assert target["boxes"].tolist()[0] == pytest.approx([16.625, 20.0, 49.875, 66.667], abs=0.01)


def test_multiscale_picks_every_scale():
    torch.manual_seed(0)
    pipeline = build_pipeline([{"type": "Resize", "scales": [40, 50, 60]}])
    seen = {pipeline(*_sample())[0].shape[-2] for _ in range(30)}
    assert seen == {40, 50, 60}
    assert pipeline.output_size(60, 80) is None


def test_sanitize_drops_degenerate_boxes_with_labels_and_masks():
    image, target = _sample()
    target["boxes"] = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 12.0, 30.0, 40.0], [75.0, 20.0, 95.0, 35.0],
                                                             [82.0, 10.0, 90.0, 20.0]]),
                                               format="XYXY", canvas_size=(60, 80))
    target["labels"] = torch.tensor([1, 2, 3])
    target["masks"] = tv_tensors.Mask(torch.cat([target["masks"], target["masks"][:1]]))
    image, target = SanitizeBoxes()(image, target)
    assert target["boxes"].tolist() == [[10.0, 12.0, 30.0, 40.0], [75.0, 20.0, 80.0, 35.0]]  # clipped, dropped
    assert target["labels"].tolist() == [1, 2] and len(target["masks"]) == 2


def test_pipeline_is_deterministic_given_torch_seed():
    cfg = [{"type": "RandomAffine", "degrees": 10, "translate": [0.1, 0.1]}, {"type": "RandomFlip"},
           {"type": "PhotoMetricDistortion"}]
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        image, target = build_pipeline(cfg)(*_sample())
        runs.append((image, target["boxes"]))
    torch.testing.assert_close(runs[0], runs[1])


def test_build_pipeline_appends_sanitize_and_reports_bad_configs():
    assert isinstance(build_pipeline([]).transforms[-1], SanitizeBoxes)
    assert len(build_pipeline([{"type": "SanitizeBoxes", "min_size": 2}]).transforms) == 1
    with pytest.raises(RegistryError, match="did you mean 'RandomFlip'"):
        build_pipeline([{"type": "RandomFlp"}])
    with pytest.raises(ConfigError, match="divide them by 255"):
        build_pipeline([{"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.4, 57.1, 57.4]}])
    with pytest.raises(ConfigError, match="exactly one of scale, size or scales"):
        build_pipeline([{"type": "Resize", "scale": [100, 50], "size": 40}])
    with pytest.raises(ConfigError, match="list of"):
        build_pipeline({"type": "Resize"})


def test_normalize_on_unit_scale():
    image, _ = build_pipeline([{"type": "Normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}])(*_sample())
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0 and float(image.min()) < 0.0
