"""torchvision's COCO detectors by name: the same detections as torchvision's own models, reported with
COCO's category ids and names, and evaluated by ``detcore test`` on a COCO-format split by category id.

Each weights file is seeded into a private torch hub cache from torchvision's own builder (random weights,
class biases raised so detections exist); torchvision then loads it through its weights API
(``weights=...COCO_V1``, strict), detcore through ``torchvision://NAME``. Images are small and both sides
run at the same ``min_size``/``max_size`` to keep this cheap.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
import torchvision.models.detection as tvd
from PIL import Image

from detcore.apis import inference_detector, init_detector
from detcore.tools.cli import main as detcore_main
from tests.unit.pretrained.seeding import seed_detector

ROOT = Path(__file__).resolve().parents[3]
SIZE = 160  # min_size = max_size on both sides; the 160x128 image is not resized
SMALL = [f"model.min_size={SIZE}", f"model.max_size={SIZE}"]
# Two-stage models run their box (and mask) heads on fewer proposals and detections, on both sides:
# torchvision's keyword -> detcore's key
FEWER = {"rpn_post_nms_top_n_test": "model.rpn.post_nms_top_n_test", "box_detections_per_img":
         "model.roi_head.detections_per_img"}
FEWER_VALUES = {"rpn_post_nms_top_n_test": 50, "box_detections_per_img": 10}


def _fewer(builder: str) -> tuple[dict, list[str]]:
    """torchvision's keyword arguments and detcore's --cfg-options for the same smaller run of ``builder``."""
    if builder.startswith(("fasterrcnn", "maskrcnn")):
        return FEWER_VALUES, [f"{FEWER[k]}={v}" for k, v in FEWER_VALUES.items()]
    return {}, []
# One of each kind through init_detector and `detcore test`, between them every part the nine configs use:
# frozen BN with eps 0 (v1), BN trunk and FPN, two-conv RPN head, conv box head, BN mask head (Mask v2),
# GroupNorm head and P6 from C5 (RetinaNet v2), FCOS. MobileNetV3 (320) runs through `detcore infer`.
TESTED = ["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn"]
# the rest: the same architecture as torchvision's builder (what a model costs to run twice is spared here)
OTHERS = ["fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn", "maskrcnn_resnet50_fpn",
          "retinanet_resnet50_fpn"]
COCO = tvm.get_weight("FasterRCNN_ResNet50_FPN_Weights.COCO_V1").meta["categories"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("torch")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        yield home / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO-format split with COCO's 80 categories (ids and names) and one 160x128 image."""
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    Image.fromarray((rng.random((128, 160, 3)) * 255).astype(np.uint8)).save(root / "img" / "scene.png")
    square = [[20.0, 20.0, 80.0, 20.0, 80.0, 90.0, 20.0, 90.0]]
    ann = {"images": [{"id": 42, "file_name": "scene.png", "width": 160, "height": 128}],
           "annotations": [{"id": 1, "image_id": 42, "category_id": 1, "bbox": [20, 20, 60, 70], "area": 4200,
                            "iscrowd": 0, "segmentation": square},
                           {"id": 2, "image_id": 42, "category_id": 18, "bbox": [90, 30, 50, 40], "area": 2000,
                            "iscrowd": 0, "segmentation": [[90.0, 30.0, 140.0, 30.0, 140.0, 70.0, 90.0, 70.0]]}],
           "categories": [{"id": i, "name": n} for i, n in enumerate(COCO) if i and n != "N/A"]}
    assert len(ann["categories"]) == 80
    (root / "ann.json").write_text(json.dumps(ann))
    return root


def _torchvision_detections(builder: str, image: Path) -> dict:
    """torchvision's own model with its COCO weights (read from the seeded cache) and their preprocessing
    (``weights.transforms()``), on ``image``."""
    weights = tvm.get_model_weights(builder).COCO_V1
    model = getattr(tvd, builder)(weights=weights, min_size=SIZE, max_size=SIZE, **_fewer(builder)[0])
    with torch.no_grad():
        return model.eval()([weights.transforms()(Image.open(image).convert("RGB"))])[0]


def _same_detections(ours: dict, theirs: dict) -> None:
    assert len(theirs["boxes"]) > 0  # the seeded weights do detect things
    np.testing.assert_array_equal(ours["labels"], theirs["labels"].numpy())
    np.testing.assert_allclose(ours["boxes"], theirs["boxes"].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours["scores"], theirs["scores"].numpy(), rtol=0, atol=1e-6)
    assert ours["class_names"] == [COCO[int(label)] for label in ours["labels"]]  # COCO's names, by id
    if "masks" in theirs:
        np.testing.assert_array_equal(ours["masks"], (theirs["masks"][:, 0] > 0.5).numpy())


def _init_detector_matches(cache: Path, split: Path, builder: str, spelling: str) -> dict:
    seed_detector(cache, builder)
    theirs = _torchvision_detections(builder, split / "img" / "scene.png")
    model = init_detector(ROOT / f"configs/torchvision/{builder}.yaml", spelling,
                          cfg_options=SMALL + _fewer(builder)[1])
    _same_detections(inference_detector(model, str(split / "img" / "scene.png")), theirs)
    return theirs


@pytest.mark.parametrize("builder", TESTED)
def test_init_detector_and_detcore_test_give_torchvisions_detections_by_coco_id(cache, split, builder, tmp_path,
                                                                                capsys) -> None:
    theirs = _init_detector_matches(cache, split, builder, f"torchvision://{builder}")
    out = tmp_path / "results.json"
    rc = detcore_main(["test", str(ROOT / f"configs/torchvision/{builder}.yaml"), f"torchvision://{builder}",
                       "--out", str(out), "--cfg-options", *SMALL, *_fewer(builder)[1], "data.workers_per_gpu=0",
                       f"data.test.ann_file={split / 'ann.json'}", f"data.test.img_prefix={split / 'img'}"])
    printed = capsys.readouterr().out
    assert rc == 0
    results = json.loads(out.read_text())
    # every detection of a category the split has (all of COCO's 80), by COCO category id, in the image's pixels
    keep = [COCO[int(label)] != "N/A" for label in theirs["labels"]]
    assert [r["category_id"] for r in results] == [int(lbl) for lbl, k in zip(theirs["labels"], keep) if k]
    boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in results)])
    np.testing.assert_allclose(boxes, theirs["boxes"].numpy()[keep], rtol=0, atol=1e-4)
    np.testing.assert_allclose([r["score"] for r in results], theirs["scores"].numpy()[keep], rtol=0, atol=1e-6)
    assert {r["image_id"] for r in results} == {42}
    assert ("segmentation" in results[0]) == builder.startswith("maskrcnn")
    # the per-class table names COCO's categories, and the published figure is printed beside
    assert "\nperson " in printed and "\ntoothbrush " in printed
    published = {"fasterrcnn_resnet50_fpn": "box AP 37.0", "maskrcnn_resnet50_fpn_v2": "box AP 47.4, mask AP 41.8",
                 "retinanet_resnet50_fpn_v2": "box AP 41.5", "fcos_resnet50_fpn": "box AP 39.2"}[builder]
    assert f"published by torchvision for {builder} on COCO val2017 (AP x 100): {published}" in printed


@pytest.mark.parametrize("builder", OTHERS)
def test_the_other_configs_build_torchvisions_architecture(builder: str) -> None:
    """Same state-dict keys and shapes, module types (torchvision builds BatchNorm where its COCO weights get
    frozen BN), preprocessing and thresholds as torchvision's builder."""
    from detcore.config import load_config
    from detcore.models import build_detector

    ours = build_detector(load_config(ROOT / f"configs/torchvision/{builder}.yaml")["model"]).eval()
    theirs = getattr(tvd, builder)(weights=None, weights_backbone=None, num_classes=91).eval()
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert shapes(ours) == shapes(theirs)
    types = lambda m: {n: type(x).__name__.replace("FrozenBatchNorm2d", "BatchNorm2d") for n, x in m.named_modules()
                       if not isinstance(x, (type(ours.backbone), type(ours.backbone.body), type(ours.backbone.fpn)))}
    assert {n: t for n, t in types(ours).items() if n.count(".") > 1} == \
        {n: t for n, t in types(theirs).items() if n.count(".") > 1}
    assert repr(ours.transform) == repr(theirs.transform)
    internal = set(vars(torch.nn.Module())) | {"arch", "weights_records"}  # nn.Module's own; detcore's records

    def settings(module: torch.nn.Module) -> dict:  # thresholds, top-k, anchor sizes, ...: plain values
        return {k: v for k, v in vars(module).items()
                if k not in internal and isinstance(v, (bool, int, float, str, tuple, dict))}

    for part in ("", "roi_heads", "rpn", "head", "anchor_generator", "rpn.anchor_generator"):
        mine, real = ours, theirs
        for attr in filter(None, part.split(".")):
            mine, real = getattr(mine, attr, None), getattr(real, attr, None)
        if real is not None:
            assert settings(mine) == settings(real), part


def test_infer_with_the_config_read_from_the_name(cache, split, tmp_path) -> None:
    """``detcore infer none torchvision://NAME`` (the config is configs/torchvision/NAME.yaml): torchvision's
    detections, named by COCO category."""
    builder = "fasterrcnn_mobilenet_v3_large_320_fpn"
    seed_detector(cache, builder)
    weights = tvm.get_model_weights(builder).COCO_V1
    with torch.no_grad():  # at its own size (320)
        theirs = getattr(tvd, builder)(weights=weights).eval()([weights.transforms()(
            Image.open(split / "img" / "scene.png").convert("RGB"))])[0]
    rc = detcore_main(["infer", "none", f"torchvision://{builder}", str(split / "img" / "scene.png"),
                       "--out-dir", str(tmp_path / "out"), "--json", "--score-thr", "0.0"])
    assert rc == 0
    (record,) = json.loads((tmp_path / "out" / "results.json").read_text())
    detections = record["detections"]
    assert [d["label"] for d in detections] == theirs["labels"].tolist() and len(detections) > 0
    np.testing.assert_allclose([d["box"] for d in detections], theirs["boxes"].numpy(), rtol=0, atol=0.01)
    assert all(COCO[d["label"]] == d["class"] for d in detections)
    assert (tmp_path / "out" / "scene.png").is_file()
