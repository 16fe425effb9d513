"""Each converter's output loads in detcore's own ``CocoDataset`` (the training input path)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from converter_samples import cityscapes_ids, via_balloon_json
from detcore.data.converters import convert_cityscapes, convert_via, convert_voc

coco_module = pytest.importorskip("detcore.data.coco")


def _non_crowd(out):
    data = json.loads(out.read_text())
    by_image = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        if not ann["iscrowd"]:
            by_image[ann["image_id"]].append(ann)
    return data, by_image


def _check(ds, out):
    data, by_image = _non_crowd(out)
    images = {img["id"]: img for img in data["images"]}
    assert len(ds) == sum(1 for anns in by_image.values() if anns)  # filter_empty_gt drops images without boxes
    for i in range(len(ds)):
        image, target = ds[i]
        img = images[target["image_id"]]
        assert tuple(image.shape) == (3, img["height"], img["width"])
        anns = by_image[img["id"]]
        want = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)
        assert np.allclose(np.asarray(target["boxes"]), want)
        assert [ds.cat_ids[k - 1] for k in target["labels"].tolist()] == [a["category_id"] for a in anns]
    return data


def test_voc_output_loads(voc_devkit, tmp_path):
    out = tmp_path / "voc.json"
    convert_voc(voc_devkit.root, out, progress=False)
    ds = coco_module.CocoDataset(out, voc_devkit.root)
    assert len(ds.CLASSES) == 20
    _check(ds, out)  # the difficult person is iscrowd, so it is not a training box


def test_cityscapes_output_loads_with_masks(cityscapes_root, tmp_path):
    out = tmp_path / "city.json"
    convert_cityscapes(cityscapes_root.root, out, split="train", progress=False)
    ds = coco_module.CocoDataset(out, cityscapes_root.root / "leftImg8bit", with_mask=True)
    _check(ds, out)
    regions = [v for k, v in cityscapes_root.sample.items() if k[0] == "train"]
    for i in range(len(ds)):
        _, target = ds[i]
        ids = cityscapes_ids(regions[i]).astype(np.int64)
        values = sorted(v for v in regions[i] if v >= 1000 and v // 1000 in (24, 25, 26, 27, 28, 31, 32, 33))
        assert np.array_equal(np.asarray(target["masks"]), np.stack([ids == v for v in values]).astype(np.uint8))


def test_via_output_loads_with_masks(tmp_path):
    src = via_balloon_json(tmp_path)
    out = tmp_path / "via.json"
    convert_via(src, out, class_name="balloon", progress=False)
    ds = coco_module.CocoDataset(out, src.parent, with_mask=True)
    _check(ds, out)
    _, target = ds[0]
    assert tuple(target["masks"].shape) == (2, 30, 40) and int(target["masks"][0].sum()) > 0
