"""Cityscapes fine annotations to COCO instances json with RLE masks.

Layout read (``ROOT`` is the dataset root)::

    ROOT/gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png    (16-bit, one id per pixel)
    ROOT/gtFine/<split>/<city>/<stem>_gtFine_polygons.json      (checked for size only)
    ROOT/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png

The ``instanceIds`` png is authoritative, as in mmdetection's Cityscapes converter: a pixel
value ``v >= 1000`` is instance ``v % 1000`` of label id ``v // 1000``; a value ``v < 1000``
is the bare label id, which for an instance class marks a crowd/group region (``iscrowd:
1``, one region per class per image). Only the eight instance classes are kept; their
Cityscapes label ids are used as COCO category ids so results map back to Cityscapes'
own evaluation. ``file_name`` is relative to ``ROOT/leftImg8bit/``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_util
from tqdm import tqdm

from detcore.data.converters.coco_json import build_coco_dict, read_image_size, summarize, write_coco_json
from detcore.data.image_file import check_image_file
from detcore.errors import DataError

logger = logging.getLogger(__name__)

# Cityscapes label id -> name, for the classes with instances (cityscapesscripts' labels.py).
CITYSCAPES_INSTANCE_CLASSES: dict[int, str] = {
    24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 31: "train", 32: "motorcycle", 33: "bicycle",
}
CITYSCAPES_SPLITS: tuple[str, ...] = ("train", "val", "test")
_INSTANCE_SUFFIX = "_gtFine_instanceIds.png"


def convert_cityscapes(root: str | os.PathLike, out_json: str | os.PathLike, split: str = "train",
                       progress: bool = True) -> dict[str, int]:
    """Convert ``gtFine/<split>`` under ``root`` into one COCO json with RLE masks.

    Each instance gets its mask as compressed RLE (``counts`` as str), ``bbox`` and ``area``
    from the mask. Raises ``DataError`` naming the file when the split has no annotations,
    an image or png is missing or unreadable, or sizes disagree. Returns
    ``{images, annotations, categories, skipped}``; ``skipped`` counts instance ids whose
    label is not an instance class (a labelling error in the png; logged).
    """
    root = Path(root)
    if split not in CITYSCAPES_SPLITS:
        raise DataError(f"Cityscapes: unknown split {split!r}; expected one of {', '.join(CITYSCAPES_SPLITS)}")
    ann_dir = root / "gtFine" / split
    pngs = sorted(ann_dir.glob(f"*/*{_INSTANCE_SUFFIX}"))
    if not pngs:
        raise DataError(f"Cityscapes: no {ann_dir}/<city>/*{_INSTANCE_SUFFIX} files; expected the dataset root "
                        f"containing gtFine/ and leftImg8bit/ (from gtFine_trainvaltest.zip)")
    categories = [{"id": cid, "name": name, "supercategory": "cityscapes"}
                  for cid, name in CITYSCAPES_INSTANCE_CLASSES.items()]
    images: list[dict] = []
    annotations: list[dict] = []
    skipped = 0
    for png in tqdm(pngs, desc=f"cityscapes {split}", unit="img", disable=not progress):
        stem = png.name[: -len(_INSTANCE_SUFFIX)]
        image_path = root / "leftImg8bit" / split / png.parent.name / f"{stem}_leftImg8bit.png"
        ids = _read_instance_ids(png)
        height, width = ids.shape
        image_size = read_image_size(image_path, f"Cityscapes: {png}")
        if image_size != (width, height):
            raise DataError(f"Cityscapes: {png} is {width}x{height} but its image {image_path} is "
                            f"{image_size[0]}x{image_size[1]}; expected equal sizes")
        _check_polygons_size(png.with_name(f"{stem}_gtFine_polygons.json"), width, height)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": image_path.relative_to(root / "leftImg8bit").as_posix(),
                       "width": width, "height": height})
        instances, bad = _instances_from_ids(ids, png)
        skipped += bad
        for ann in instances:
            ann.update(id=len(annotations) + 1, image_id=image_id)
            annotations.append(ann)
    dataset = build_coco_dict(images, annotations, categories, f"Cityscapes gtFine {split}, converted by detcore")
    out = write_coco_json(dataset, out_json)
    return summarize(dataset, skipped, out, f"Cityscapes {root} ({split})")


def _read_instance_ids(png: Path) -> np.ndarray:
    """Read an ``instanceIds`` png (Pillow gives mode ``I`` or ``I;16``) as an int64 array."""
    check_image_file(png, " (a Cityscapes instanceIds png)")  # the size limit, from the header, before decoding
    try:
        with Image.open(png) as img:
            if img.mode not in ("I", "I;16", "I;16B", "L"):
                raise DataError(f"Cityscapes: {png} has image mode {img.mode}; expected a 16-bit single-channel "
                                f"instanceIds png")
            return np.asarray(img).astype(np.int64)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"Cityscapes: cannot read {png} ({exc}); expected a 16-bit instanceIds png") from None


def _check_polygons_size(path: Path, width: int, height: int) -> None:
    """Cross-check the polygons json's image size when it exists (the png stays authoritative)."""
    if not path.is_file():
        logger.debug("Cityscapes: no %s; using the instanceIds png only", path)
        return
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        size = (int(meta["imgWidth"]), int(meta["imgHeight"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"Cityscapes: {path} is not a valid polygons json ({exc!r}); expected imgWidth, "
                        f"imgHeight and objects") from None
    if size != (width, height):
        raise DataError(f"Cityscapes: {path} says {size[0]}x{size[1]} but the instanceIds png is "
                        f"{width}x{height}; expected equal sizes")


def _instances_from_ids(ids: np.ndarray, png: Path) -> tuple[list[dict], int]:
    """One annotation per instance-class id in ``ids``; returns them and the count of bad ids."""
    anns: list[dict] = []
    bad = 0
    for value in np.unique(ids):
        value = int(value)
        label = value // 1000 if value >= 1000 else value
        if label not in CITYSCAPES_INSTANCE_CLASSES:
            if value >= 1000:
                logger.warning("Cityscapes: %s has instance id %d of label %d, which has no instances; skipped",
                               png, value, label)
                bad += 1
            continue
        rle = mask_util.encode(np.asfortranarray(ids == value, dtype=np.uint8))
        bbox = [float(v) for v in mask_util.toBbox(rle)]
        area = int(mask_util.area(rle))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append({"category_id": label, "segmentation": rle, "bbox": bbox, "area": area,
                     "iscrowd": 0 if value >= 1000 else 1})
    return anns, bad
