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
    """``COCO(path)`` with DataError for missing/invalid files and no prints."""
    data = load_coco_json(path)
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    return coco_from_dict(data)


def _check_ids(records: list, kind: str, path: Path, required: Sequence[str]) -> dict[int, int]:
    """Map id -> position; DataError on a missing field or a duplicate id."""
    seen: dict[int, int] = {}
    for pos, rec in enumerate(records):
        if not isinstance(rec, dict) or any(k not in rec for k in required):
            raise DataError(f"{path}: {kind}[{pos}] must be an object with {', '.join(required)}; got {rec!r:.200}")
        rid = rec["id"]
        if rid in seen:
            raise DataError(f"{path}: duplicate {kind[:-1]} id {rid} ({kind}[{seen[rid]}] and {kind}[{pos}]); "
                            f"ids must be unique")
        seen[rid] = pos
    return seen


def validate_coco(data: dict, path: Path) -> None:
    """Raise DataError for structural problems: ids, references, box shapes, image sizes."""
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{path}: '{key}' must be a list")
    images = _check_ids(data["images"], "images", path, ("id", "file_name", "width", "height"))
    cats = _check_ids(data.get("categories", []), "categories", path, ("id", "name"))
    _check_ids(data.get("annotations", []), "annotations", path, ("id", "image_id", "category_id"))
    for img in data["images"]:
        w, h = img["width"], img["height"]
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            raise DataError(f"{path}: image id {img['id']} ({img['file_name']}) has width={w!r}, height={h!r}; "
                            f"expected positive integers")
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
