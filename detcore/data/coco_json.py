"""COCO annotation files: reading, validating and indexing them with pycocotools.

Torch-free on purpose, so ``detcore eval`` and the converters start without importing torch.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Sequence

from pycocotools.coco import COCO

from detcore.data.image_file import file_name_problem
from detcore.errors import DataError


def load_coco_json(path: str | Path) -> dict:
    """Read a COCO json file; a missing file or invalid json raises DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist; check ann_file (or the --ann path)")
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"annotation file {path} is not valid json: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation file {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"annotation file {path} is not a COCO detection file: expected an object "
                        f"with an 'images' list, 'annotations' and 'categories'")
    return data


def coco_from_dict(data: dict) -> COCO:
    """Build a pycocotools ``COCO`` index from an in-memory dict without its prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(path: str | Path) -> COCO:
    """``COCO(path)`` with DataError for missing/invalid files and no prints.

    The ground truth is checked first (:func:`check_ground_truth`): evaluating against a box
    with a non-positive size, a duplicate id or a dangling reference would give a wrong number
    without a word."""
    data = load_coco_json(path)
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    check_ground_truth(data, Path(path))
    return coco_from_dict(data)


def _check_ids(records: list, kind: str, path: Path, required: Sequence[str]) -> dict[int, int]:
    """Map id -> position; DataError on a missing field or a duplicate id."""
    seen: dict[int, int] = {}
    for pos, rec in enumerate(records):
        if not isinstance(rec, dict) or any(k not in rec for k in required):
            raise DataError(f"{path}: {kind}[{pos}] must be an object with {', '.join(required)}; got {rec!r:.200}")
        rid = rec["id"]
        if isinstance(rid, bool) or not isinstance(rid, (int, str)):
            raise DataError(f"{path}: {kind}[{pos}] has id {rid!r:.100}; expected an integer")
        if rid in seen:
            raise DataError(f"{path}: duplicate {kind[:-1]} id {rid} ({kind}[{seen[rid]}] and {kind}[{pos}]); "
                            f"ids must be unique")
        seen[rid] = pos
    return seen


def validate_coco(data: dict, path: Path, *, skip_degenerate_boxes: bool = False) -> None:
    """Raise DataError for what a dataset cannot read: ids, references, box shapes, image sizes,
    image file names that leave the image folder, and (unless ``skip_degenerate_boxes``) boxes
    with a non-positive width or height."""
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{path}: '{key}' must be a list")
    images = _check_ids(data["images"], "images", path, ("id", "file_name", "width", "height"))
    for img in data["images"]:
        w, h = img["width"], img["height"]
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            raise DataError(f"{path}: image id {img['id']} ({img['file_name']}) has width={w!r}, height={h!r}; "
                            f"expected positive integers")
        problem = file_name_problem(img["file_name"])
        if problem:
            raise DataError(f"{path}: image id {img['id']} has file_name {img['file_name']!r:.200}: {problem}; "
                            f"file names are read inside img_prefix: set img_prefix to the folder holding the "
                            f"images and give names relative to it")
    _check_annotations(data, path, images, skip_degenerate_boxes,
                       "set skip_degenerate_boxes: true on the dataset to skip such boxes with a count in the log")


def check_ground_truth(data: dict, path: Path) -> None:
    """Raise DataError for ground truth that evaluation would score wrongly: duplicate or dangling
    ids, boxes that are not 4 finite numbers or have a non-positive width or height."""
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{path}: '{key}' must be a list")
    images = _check_ids(data["images"], "images", path, ("id",))
    _check_annotations(data, path, images, False, "a box without area can never be matched, so it would lower recall")


def _check_annotations(data: dict, path: Path, images: dict[int, int], skip_degenerate_boxes: bool,
                       degenerate_hint: str) -> None:
    cats = _check_ids(data.get("categories", []), "categories", path, ("id", "name"))
    _check_ids(data.get("annotations", []), "annotations", path, ("id", "image_id", "category_id"))
    for pos, ann in enumerate(data.get("annotations", [])):
        where = f"{path}: annotation id {ann['id']} (annotations[{pos}])"
        if ann["image_id"] not in images:
            raise DataError(f"{where} refers to image id {ann['image_id']}, which is not in 'images'")
        if ann["category_id"] not in cats:
            raise DataError(f"{where} has unknown category id {ann['category_id']}; "
                            f"known ids: {sorted(cats)}")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            raise DataError(f"{where} has bbox {box!r}; expected [x, y, width, height] of 4 finite numbers")
        if not skip_degenerate_boxes and (box[2] <= 0 or box[3] <= 0):
            raise DataError(f"{path}: annotation id {ann['id']} of image id {ann['image_id']} has bbox {box} with a "
                            f"non-positive width or height; fix or remove the annotation ({degenerate_hint})")
