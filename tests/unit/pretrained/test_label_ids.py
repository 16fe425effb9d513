"""``label_ids: coco``: detections by COCO category id, matched to a dataset's categories by id; checkpoints
a test or inference run accepts (a detcore checkpoint, a plain state dict, a torchvision name)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detcore.apis import inference_detector, init_detector
from detcore.checkpoint import load_checkpoint
from detcore.config_check import config_problems
from detcore.errors import CheckpointError, ConfigError, DataError
from detcore.evaluation import results_to_coco
from detcore.evaluation.label_ids import (check_checkpoint_labels, check_coco_categories, coco_names, label_ids_of,
                                          label_names)
from detcore.models import build_detector

ROOT = Path(__file__).resolve().parents[3]
MODEL = {"type": "FasterRCNN", "num_classes": 2, "min_size": 96, "max_size": 96,
         "backbone": {"type": "TinyNet", "channels": [8, 16, 32, 32]}, "neck": {"type": "FPN", "out_channels": 32},
         "roi_head": {"representation_size": 32, "score_thresh": 0.0}}


def _dataset(cat_ids: list[int]) -> SimpleNamespace:
    info = SimpleNamespace(orig_size=(100, 200), img_shape=(100, 200))
    return SimpleNamespace(cat_ids=cat_ids, get_img_info=lambda _image_id: info)


def test_results_to_coco_maps_coco_labels_by_id_and_drops_categories_the_dataset_lacks() -> None:
    output = {"boxes": torch.tensor([[0.0, 0, 10, 10], [1, 1, 5, 5], [2, 2, 8, 8], [3, 3, 9, 9]]),
              "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([1, 2, 18, 90]),
              "masks": torch.rand(4, 1, 100, 200)}
    results = results_to_coco([(7, output)], _dataset([1, 18, 90]), label_ids="coco")
    assert [r["category_id"] for r in results] == [1, 18, 90] and [r["score"] for r in results] == \
        pytest.approx([0.9, 0.7, 0.6])
    assert results[1]["bbox"] == [2.0, 2.0, 6.0, 6.0] and all("segmentation" in r for r in results)
    # the default reads label k as the k-th category: 90 is out of range for three categories
    with pytest.raises(DataError, match=r"image id 7: predicted label 18 is outside 1..3.*label_ids: coco"):
        results_to_coco([(7, output)], _dataset([1, 18, 90]))


def test_coco_names_are_torchvisions_and_a_dataset_is_checked_by_id() -> None:
    assert len(coco_names()) == 91 and coco_names()[1] == "person" and coco_names()[12] == "N/A"
    assert label_names("coco", None)[17] == "dog" and label_names("classes", ["a"]) == ["a"]
    check_coco_categories({1: {"name": "person"}, 18: {"name": "dog"}, 1000: {"name": "balloon"}}, "ann.json")
    with pytest.raises(DataError, match="ann.json: category id 1 is 'balloon', but in COCO .* id 1 is 'person'"):
        check_coco_categories({1: {"name": "balloon"}}, "ann.json")
    with pytest.raises(DataError, match="none of its category ids"):
        check_coco_categories({1000: {"name": "balloon"}}, "ann.json")


def test_label_ids_values_and_a_coco_checkpoint_under_a_classes_config() -> None:
    assert label_ids_of({}) == "classes" and label_ids_of({"label_ids": "coco"}) == "coco"
    with pytest.raises(ConfigError, match="label_ids must be classes"):
        label_ids_of({"label_ids": "voc"})
    assert any(p.startswith("label_ids: got 'voc'") for p in config_problems({"label_ids": "voc"}, test=True))
    meta = {"label_ids": "coco", "torchvision": "fasterrcnn_resnet50_fpn"}
    with pytest.raises(ConfigError, match="use configs/torchvision/fasterrcnn_resnet50_fpn.yaml, or set label_ids"):
        check_checkpoint_labels("classes", meta, "torchvision://fasterrcnn_resnet50_fpn")
    check_checkpoint_labels("coco", meta, "x")
    check_checkpoint_labels("classes", {}, "x")


def test_a_torchvision_config_is_for_testing_not_training() -> None:
    from detcore.config import load_config

    cfg = load_config(ROOT / "configs/torchvision/fasterrcnn_resnet50_fpn.yaml")
    problems = config_problems(cfg, validate=False)
    assert any(p.startswith("label_ids: coco is for testing and inference") for p in problems)
    assert not any("label_ids" in p for p in config_problems(cfg, test=True))


def test_a_plain_state_dict_is_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_detector(MODEL).eval()
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    assert load_checkpoint(tmp_path / "plain.pth")["meta"] == {}
    image = (np.random.default_rng(0).random((80, 96, 3)) * 255).astype(np.uint8)
    ours = inference_detector(init_detector({"model": MODEL, "classes": ["a", "b"]}, tmp_path / "plain.pth"), image)
    theirs = inference_detector(model, image)
    np.testing.assert_array_equal(ours["boxes"], theirs["boxes"])


@pytest.mark.parametrize("content, words", [
    ({"model": {"w": torch.zeros(1)}}, "holds a dict with keys ['model']; expected a detcore checkpoint (meta and "
                                       "state_dict, as detcore train writes) or a plain state dict (parameter name "
                                       "-> tensor, as torch.save(model.state_dict(), path) writes)"),
    ([torch.zeros(1)], "holds list; expected a detcore checkpoint"),
])
def test_what_is_not_a_checkpoint_is_named_with_what_is_accepted(tmp_path: Path, content, words) -> None:
    torch.save(content, tmp_path / "x.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "x.pth")
    assert words in str(err.value) and "not a detcore checkpoint" not in str(err.value)


def test_a_backbone_name_is_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="torchvision://resnet50 holds ImageNet weights of a ResNet backbone, "
                                              "not a detector; set model.backbone.weights: torchvision://resnet50"):
        load_checkpoint("torchvision://resnet50", "load_from")
    with pytest.raises(ConfigError, match="did you mean 'torchvision://fcos_resnet50_fpn'"):
        load_checkpoint("torchvision://fcos_resnet50", "load_from")
