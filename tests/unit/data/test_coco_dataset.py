"""CocoDataset on small real COCO files: classes, crowd, filtering, colour modes, masks, errors."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from detcore.data import CocoDataset, build_dataset
from detcore.errors import DataError


def test_all_classes_labels_boxes_and_targets(write_coco):
    ann, img_dir = write_coco()
    ds = CocoDataset(ann, img_dir)
    assert ds.CLASSES == ("cat", "dog", "bird") and ds.cat_ids == [1, 2, 3]
    assert ds.img_ids == [1, 2]  # crowd-only and empty images are filtered for training
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32 and image.shape == (3, 30, 40)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target["boxes"].tolist() == [[2, 3, 12, 11], [20, 10, 35, 22]]  # xywh -> xyxy
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1, 2]
    assert target["image_id"] == 1 and target["orig_size"] == (30, 40) and target["img_shape"] == (30, 40)
    assert "masks" not in target
    assert ds.get_aspect_ratio(1) == pytest.approx(32 / 48)


def test_classes_select_and_order_categories(write_coco):
    ann, img_dir = write_coco()
    ds = CocoDataset(ann, img_dir, classes=["dog", "cat"])
    assert ds.CLASSES == ("dog", "cat") and ds.cat_ids == [2, 1]
    assert ds.img_ids == [1]  # the bird image has nothing of these classes
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 1]  # cat -> label 2, dog -> label 1


def test_crowd_excluded_and_empty_images_kept_in_test_mode(write_coco):
    ann, img_dir = write_coco()
    for ds in (CocoDataset(ann, img_dir, test_mode=True), CocoDataset(ann, img_dir, filter_empty_gt=False)):
        assert ds.img_ids == [1, 2, 3, 4]
        _, target = ds[2]  # the RGBA image with only a crowd annotation
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert len(CocoDataset(ann, img_dir).coco.getAnnIds(iscrowd=True)) == 1  # still there for evaluation


def test_grayscale_and_rgba_become_rgb(write_coco):
    ann, img_dir = write_coco()
    ds = CocoDataset(ann, img_dir, test_mode=True)
    gray, _ = ds[1]
    assert gray.shape == (3, 48, 32) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    rgba, _ = ds[2]
    assert rgba.shape == (3, 20, 20)


def test_masks_from_polygons_and_rle(write_coco, coco_spec):
    spec = coco_spec()
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((8, 10), np.uint8), ((3, 19), (2, 28)))))
    spec["annotations"][0]["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    ann, img_dir = write_coco(spec)
    ds = CocoDataset(ann, img_dir, with_mask=True)
    _, target = ds[0]
    masks = target["masks"]
    assert isinstance(masks, tv_tensors.Mask) and masks.dtype == torch.uint8 and masks.shape == (2, 30, 40)
    for mask, box in zip(masks, target["boxes"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
        assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
    assert int(masks[0].sum()) == 80


def test_partially_outside_box_clipped_and_degenerate_skipped_when_asked(write_coco, coco_spec, caplog):
    spec = coco_spec()
    spec["annotations"][0]["bbox"] = [30, 20, 20, 20]  # partially outside a 40x30 image
    spec["annotations"] += [
        {"id": 20, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 4], "iscrowd": 0},
        {"id": 21, "image_id": 1, "category_id": 1, "bbox": [50, 40, 5, 5], "iscrowd": 0},
    ]
    ann, img_dir = write_coco(spec)
    with caplog.at_level(logging.WARNING, logger="detcore.data.coco"):
        ds = CocoDataset(ann, img_dir, skip_degenerate_boxes=True)
    _, target = ds[0]
    assert target["boxes"].tolist() == [[30, 20, 40, 30], [20, 10, 35, 22]]
    assert ds.skipped == {"non-positive width or height": 1, "entirely outside the image": 1}
    assert str(ann) in caplog.text and "skipped 2 annotations" in caplog.text and "annotation id 20" in caplog.text


@pytest.mark.parametrize("box", [[5, 5, 0, 4], [5, 5, -3, 4], [5, 5, 4, 0], [5, 5, 4, -0.5]])
@pytest.mark.parametrize("test_mode", [False, True])
def test_a_box_with_non_positive_size_is_refused_naming_the_annotation(write_coco, coco_spec, box, test_mode):
    spec = coco_spec()
    spec["annotations"].append({"id": 20, "image_id": 2, "category_id": 1, "bbox": box, "iscrowd": 0})
    ann, img_dir = write_coco(spec)
    with pytest.raises(DataError) as exc:
        CocoDataset(ann, img_dir, test_mode=test_mode)
    message = str(exc.value)
    assert "\n" not in message
    for words in (str(ann), "annotation id 20 of image id 2", f"bbox {box}", "non-positive width or height",
                  "skip_degenerate_boxes: true"):
        assert words in message, message


@pytest.mark.parametrize("name", ["../../../etc/hostname", "/etc/hostname", "sub/../../rgb.png", "a/../rgb.png", "",
                                  7])
def test_an_image_file_name_outside_img_prefix_is_refused(write_coco, coco_spec, name):
    spec = coco_spec()
    ann, img_dir = write_coco(spec)
    data = json.loads(ann.read_text())
    data["images"][1]["file_name"] = name
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        CocoDataset(ann, img_dir, test_mode=True)
    assert str(ann) in str(exc.value) and "image id 2 has file_name" in str(exc.value), exc.value


def test_links_the_user_placed_inside_img_prefix_are_followed(write_coco, coco_spec, tmp_path):
    """A dataset folder made of links into a shared store: a linked file and a linked folder."""
    ann, img_dir = write_coco(coco_spec())
    store = tmp_path / "store"
    (store / "sub").mkdir(parents=True)
    (img_dir / "gray.png").rename(store / "gray.png")
    (img_dir / "rgba.png").rename(store / "sub" / "rgba.png")
    (img_dir / "gray.png").symlink_to(store / "gray.png")
    (img_dir / "linked").symlink_to(store / "sub")
    data = json.loads(ann.read_text())
    data["images"][2]["file_name"] = "linked/rgba.png"
    ann.write_text(json.dumps(data))
    ds = CocoDataset(ann, img_dir, test_mode=True)
    assert [tuple(ds[i][0].shape) for i in (1, 2)] == [(3, 48, 32), (3, 20, 20)]


def test_build_dataset_from_config(write_coco):
    ann, img_dir = write_coco()
    ds = build_dataset({"type": "CocoDataset", "ann_file": str(ann), "img_prefix": str(img_dir)},
                       test_mode=True, pipeline=[{"type": "Resize", "scale": [80, 60]}])
    image, target = ds[0]
    assert image.shape == (3, 60, 80) and target["img_shape"] == (60, 80) and target["orig_size"] == (30, 40)
    assert target["boxes"].tolist() == [[4, 6, 24, 22], [40, 20, 70, 44]]
    info = ds.get_img_info(1)
    assert info.orig_size == (30, 40) and info.img_shape == (60, 80)


def _broken(spec: dict, key: str) -> dict:
    if key == "unknown_category":
        spec["annotations"][1]["category_id"] = 99
    elif key == "duplicate_image":
        spec["images"][1]["id"] = 1
    elif key == "duplicate_annotation":
        spec["annotations"][1]["id"] = 10
    elif key == "bad_bbox":
        spec["annotations"][1]["bbox"] = [1, 2, 3]
    elif key == "unknown_image":
        spec["annotations"][1]["image_id"] = 42
    return spec


@pytest.mark.parametrize("key, message", [
    ("unknown_category", "unknown category id 99"),
    ("duplicate_image", "duplicate image id 1"),
    ("duplicate_annotation", "duplicate annotation id 10"),
    ("bad_bbox", "annotation id 11"),
    ("unknown_image", "image id 42"),
])
def test_bad_records_name_file_and_record(write_coco, coco_spec, key, message):
    ann, img_dir = write_coco(_broken(coco_spec(), key))
    with pytest.raises(DataError, match=message) as err:
        CocoDataset(ann, img_dir)
    assert str(ann) in str(err.value)


def test_missing_and_invalid_annotation_file(tmp_path, write_coco):
    with pytest.raises(DataError, match="does not exist") as err:
        CocoDataset(tmp_path / "nope.json", tmp_path)
    assert "nope.json" in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(DataError, match="not valid json") as err:
        CocoDataset(bad, tmp_path)
    assert str(bad) in str(err.value)


def test_empty_after_filtering_and_unknown_class(write_coco):
    ann, img_dir = write_coco()
    spec = json.loads(ann.read_text())
    spec["annotations"] = [a for a in spec["annotations"] if a["category_id"] != 3]
    ann.write_text(json.dumps(spec))
    with pytest.raises(DataError, match="no images left after filtering in .*ann.json.*check classes"):
        CocoDataset(ann, img_dir, classes=["bird"])
    with pytest.raises(DataError, match=r"classes \['horse'\] are not categories of .*ann.json"):
        CocoDataset(ann, img_dir, classes=["horse"])


def test_missing_and_corrupt_image_files(write_coco):
    ann, img_dir = write_coco()
    (img_dir / "gray.png").unlink()
    (img_dir / "rgb.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = CocoDataset(ann, img_dir)
    with pytest.raises(DataError, match="rgb.png .*image id 1.*corrupt"):
        ds[0]
    with pytest.raises(DataError, match="gray.png .*image id 2.*does not exist"):
        ds[1]


def test_too_many_boxes_on_one_training_image_is_refused_before_any_step(write_coco):
    ann, img_dir = write_coco()
    ds = CocoDataset(ann, img_dir)
    most = max(len(ds._targets[i][0]) for i in ds.img_ids)
    CocoDataset(ann, img_dir, max_boxes_per_image=most)  # at the limit is fine
    with pytest.raises(DataError, match=rf"ann.json: image id \d+ \(\S+\) has {most} boxes, more than "
                                        rf"max_boxes_per_image={most - 1}.*max_boxes_per_image: {most}"):
        CocoDataset(ann, img_dir, max_boxes_per_image=most - 1)
    CocoDataset(ann, img_dir, test_mode=True, max_boxes_per_image=most - 1)  # testing never matches boxes
