"""Weights names: every accepted spelling, misspellings with suggestions, the torch-free table equal to torchvision's."""
from __future__ import annotations

import os

import pytest
import torch.hub
import torchvision.models as tvm

from detcore.errors import ConfigError
from detcore.pretrained.names import (BACKBONE_OF, DETECTOR_OF, TORCHVISION, backbone_fit_problem, hub_checkpoints_dir,
                                      is_weights_name, parse_weights)


@pytest.mark.parametrize("spelling, name, file", [
    # MMDetection's (mmcv's) torchvision:// names: the builder's first weights, torchvision 0.12's files
    ("torchvision://resnet50", "ResNet50_Weights.IMAGENET1K_V1", "resnet50-0676ba61.pth"),
    ("torchvision://resnet101", "ResNet101_Weights.IMAGENET1K_V1", "resnet101-63fe2227.pth"),
    ("torchvision://mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", "mobilenet_v3_large-8738ca79.pth"),
    ("torchvision://fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
     "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"),
    # MMEngine's builder.weights keys
    ("torchvision://resnet50.imagenet1k_v2", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
    ("torchvision://fcos_resnet50_fpn.coco_v1", "FCOS_ResNet50_FPN_Weights.COCO_V1",
     "fcos_resnet50_fpn_coco-99b0c9b7.pth"),
    # torchvision's enum names, DEFAULT resolved to what it stands for, with or without the prefix
    ("ResNet50_Weights.IMAGENET1K_V2", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
    ("ResNet50_Weights.DEFAULT", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
    ("MobileNet_V3_Large_Weights.DEFAULT", "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
     "mobilenet_v3_large-5c1a4163.pth"),
    ("torchvision://ResNet50_Weights.IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V1", "resnet50-0676ba61.pth"),
    ("MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1", "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
     "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"),
])
def test_every_spelling_names_torchvisions_file(spelling: str, name: str, file: str) -> None:
    weights = parse_weights(spelling)
    assert (weights.name, weights.file, weights.given) == (name, file, spelling)
    assert weights.url == tvm.get_weight(name).url  # torchvision's own answer
    assert weights.sha256_prefix == file.rsplit("-", 1)[1].split(".")[0]
    assert is_weights_name(spelling)


def test_local_paths_and_other_values_are_not_names(tmp_path) -> None:
    for value in ("checkpoints/r50.pth", str(tmp_path / "ResNet50.pth"), "~/w.pth", "resnet50"):
        assert parse_weights(value) is None and not is_weights_name(value)
    assert parse_weights(None) is None and parse_weights(3) is None


@pytest.mark.parametrize("typo, suggestion", [
    ("torchvision://resnt50", "torchvision://resnet50"),
    ("torchvision://fasterrcnn_resnet50_fpn_coco", "torchvision://fasterrcnn_resnet50_fpn"),  # torchvision 0.12's key
    ("torchvision://resnet50.imagenet1k_v3", "torchvision://resnet50"),
    ("ResNet50_Weights.IMAGENET1K_V3", "ResNet50_Weights.IMAGENET1K_V2"),
    ("Resnet50_Weights.DEFAULT", "ResNet50_Weights.DEFAULT"),
    ("FasterRCNN_ResNet50_FPN_Weights.COCO", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"),
])
def test_a_misspelt_name_is_one_line_with_the_closest_names(typo: str, suggestion: str) -> None:
    assert is_weights_name(typo)  # never taken for a file
    with pytest.raises(ConfigError) as err:
        parse_weights(typo, "model.backbone.weights")
    message = str(err.value)
    assert message.startswith(f"model.backbone.weights: unknown weights name {typo!r}; did you mean")
    assert repr(suggestion) in message and "\n" not in message and "detcore model list" in message


@pytest.mark.parametrize("value", ["open-mmlab://detectron2/resnet50_caffe",
                                   "https://download.openmmlab.com/mmdetection/v2.0/x.pth", "modelzoo://resnet50"])
def test_other_url_schemes_are_refused_in_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match="detcore loads torchvision:// names and local files only"):
        parse_weights(value, "load_from")


def test_the_table_is_torchvisions_weights_api() -> None:
    """Each builder's weights enum, members in order, files (URLs) and DEFAULT are torchvision's."""
    for builder, (enum, files, default) in TORCHVISION.items():
        real = tvm.get_model_weights(builder)
        assert real.__name__ == enum
        assert [(w.name, w.url) for w in real] == [(m, "https://download.pytorch.org/models/" + f) for m, f in files]
        assert real.DEFAULT.name == default
    assert set(TORCHVISION) == set(BACKBONE_OF) | set(DETECTOR_OF)
    # every COCO detection builder of torchvision that detcore builds is here (SSD, keypoints: not built)
    detection = set(tvm.list_models(module=tvm.detection))
    assert set(DETECTOR_OF) == {b for b in detection if not b.startswith(("ssd", "keypointrcnn"))}


def test_the_cache_folder_is_torch_hubs(monkeypatch, tmp_path) -> None:
    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert hub_checkpoints_dir() == type(hub_checkpoints_dir())(torch.hub.get_dir()) / "checkpoints"
    assert os.fspath(hub_checkpoints_dir()).startswith(os.path.expanduser("~"))


def test_backbone_fit() -> None:
    assert backbone_fit_problem(parse_weights("torchvision://resnet50"), "ResNet", 50) is None
    assert backbone_fit_problem(parse_weights("MobileNet_V3_Large_Weights.DEFAULT"), "MobileNetV3") is None
    assert "use torchvision://resnet101 or set depth: 50" in backbone_fit_problem(
        parse_weights("torchvision://resnet50"), "ResNet", 101)
    fcos = parse_weights("torchvision://fcos_resnet50_fpn")
    assert "give it to load_from" in backbone_fit_problem(fcos, "ResNet", 50)
    assert "use torchvision://mobilenet_v3_large" in backbone_fit_problem(
        parse_weights("torchvision://resnet50"), "MobileNetV3")
    resnet18 = parse_weights("torchvision://resnet18")
    assert "TinyNet has no torchvision weights" in backbone_fit_problem(resnet18, "TinyNet")
