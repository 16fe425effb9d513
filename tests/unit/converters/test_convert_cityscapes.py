from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from detcore.data.converters import CITYSCAPES_INSTANCE_CLASSES, convert_cityscapes
from detcore.errors import DataError

from converter_samples import CITY_H, CITY_W, cityscapes_ids


def test_train_split_masks_boxes_crowd(cityscapes_root, tmp_path):
    out = tmp_path / "instances_train.json"
    summary = convert_cityscapes(cityscapes_root.root, out, split="train", progress=False)
    # 4 + 2 instance regions; id 7005 (road has no instances) is skipped
    assert summary == {"images": 2, "annotations": 6, "categories": 8, "skipped": 1}
    coco = COCO(str(out))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == CITYSCAPES_INSTANCE_CLASSES
    imgs = coco.loadImgs(coco.getImgIds())
    assert [i["file_name"] for i in imgs] == ["train/aachen/aachen_000000_000019_leftImg8bit.png",
                                              "train/bremen/bremen_000001_000019_leftImg8bit.png"]
    samples = [v for k, v in cityscapes_root.sample.items() if k[0] == "train"]
    for img, regions in zip(imgs, samples):
        assert (img["width"], img["height"]) == (CITY_W, CITY_H)
        assert (cityscapes_root.root / "leftImg8bit" / img["file_name"]).is_file()
        ids = cityscapes_ids(regions).astype(np.int64)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], iscrowd=None))
        drawn = {v: r for v, r in regions.items() if (v // 1000 if v >= 1000 else v) in CITYSCAPES_INSTANCE_CLASSES}
        assert len(anns) == len(drawn)
        for ann, value in zip(anns, sorted(drawn)):
            want = ids == value
            ys, xs = np.nonzero(want)
            assert ann["category_id"] == (value // 1000 if value >= 1000 else value)
            assert ann["iscrowd"] == (1 if value < 1000 else 0)
            assert isinstance(ann["segmentation"]["counts"], str)
            assert np.array_equal(coco.annToMask(ann), want.astype(np.uint8))
            assert ann["area"] == int(want.sum())
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    car_l = [a for a in coco.loadAnns(coco.getAnnIds()) if a["area"] == 20][0]  # the L-shaped car
    assert car_l["bbox"] == [0, 8, 8, 4] and car_l["category_id"] == 26
    assert len(coco.getAnnIds(iscrowd=True)) == 1  # the person group (pixel value 24)


def test_val_split_and_int32_png(cityscapes_root, tmp_path, monkeypatch):
    # Older Pillow reads Cityscapes' 16-bit pngs as mode 'I' (int32); feed such an image through the reader too
    png = next((cityscapes_root.root / "gtFine" / "val").glob("*/*_instanceIds.png"))
    arr = np.asarray(Image.open(png)).astype(np.int32)
    orig = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: Image.fromarray(arr) if str(p) == str(png) else orig(p, *a, **k))
    summary = convert_cityscapes(cityscapes_root.root, tmp_path / "val.json", split="val", progress=False)
    assert summary == {"images": 1, "annotations": 1, "categories": 8, "skipped": 0}
    ann = json.loads((tmp_path / "val.json").read_text())["annotations"][0]
    assert ann["category_id"] == 27 and ann["bbox"] == [2, 2, 2, 2] and ann["area"] == 4


def test_missing_image_and_size_mismatch(cityscapes_root, tmp_path):
    img = next((cityscapes_root.root / "leftImg8bit" / "val").glob("*/*.png"))
    Image.new("RGB", (CITY_W + 1, CITY_H)).save(img)
    with pytest.raises(DataError, match=r"frankfurt_000000_000294_gtFine_instanceIds\.png is 32x16 but its image"):
        convert_cityscapes(cityscapes_root.root, tmp_path / "x.json", split="val", progress=False)
    img.unlink()
    with pytest.raises(DataError, match=r"frankfurt_000000_000294_leftImg8bit\.png does not exist"):
        convert_cityscapes(cityscapes_root.root, tmp_path / "x.json", split="val", progress=False)


def test_bad_polygons_json_and_empty_split(cityscapes_root, tmp_path):
    poly = next((cityscapes_root.root / "gtFine" / "val").glob("*/*_polygons.json"))
    poly.write_text(json.dumps({"imgHeight": 99, "imgWidth": CITY_W, "objects": []}))
    with pytest.raises(DataError, match=r"_polygons\.json says 32x99"):
        convert_cityscapes(cityscapes_root.root, tmp_path / "x.json", split="val", progress=False)
    with pytest.raises(DataError, match=r"no .*gtFine/test/<city>/\*_gtFine_instanceIds\.png"):
        convert_cityscapes(cityscapes_root.root, tmp_path / "x.json", split="test", progress=False)
