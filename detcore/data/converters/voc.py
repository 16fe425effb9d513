"""Pascal VOC (``VOCdevkit``) to COCO instances json.

Layout read::

    VOCdevkit/VOC2007/Annotations/<id>.xml
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    VOCdevkit/VOC2007/ImageSets/Main/<split>.txt      (one image id per line)
    VOCdevkit/VOC2012/...

Conventions of the output (``file_name`` is relative to ``VOCdevkit/`` so a dataset config
uses ``img_prefix: VOCdevkit/``):

* categories are the 20 VOC classes in the standard order, ids 1..20;
* VOC boxes are 1-based *inclusive* pixel coordinates: the object covers pixel columns
  ``xmin..xmax``. In COCO's continuous frame (pixel ``i`` spans ``[i, i+1)``, 0-based) that is
  ``x = xmin - 1, y = ymin - 1, w = xmax - xmin + 1, h = ymax - ymin + 1``;
* ``difficult`` objects get ``difficult: 1`` *and* ``iscrowd: 1``. ``pycocotools``' COCOeval
  treats ``iscrowd`` ground truth as an "ignore" region: a detection matched to it counts as
  neither a true nor a false positive and it does not count towards recall, which is what
  the VOC protocol does with ``difficult`` objects. (COCOeval matches crowd regions by
  intersection over the *detection* area, so the two protocols can differ on a few
  borderline detections; ``detcore.evaluation.voc_eval`` implements VOC's rule exactly
  from the ``difficult`` field.)
"""
from __future__ import annotations

import difflib
import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from detcore.data.converters.coco_json import build_coco_dict, read_image_size, summarize, write_coco_json
from detcore.data.image_file import check_pixels, file_name_problem
from detcore.errors import DataError

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOC_YEARS: tuple[str, ...] = ("2007", "2012")


def convert_voc(devkit_root: str | os.PathLike, out_json: str | os.PathLike, split: str = "trainval",
                years: Sequence[str] | None = None, progress: bool = True) -> dict[str, int]:
    """Convert the ``split`` list of each VOC year under ``devkit_root`` into one COCO json.

    ``years`` defaults to every ``VOC<year>`` folder present that has the split list; a
    year named explicitly must have it. Raises ``DataError`` naming the file (and object)
    for a missing list or annotation, invalid XML, an unknown class or a degenerate box.
    Returns ``{images, annotations, categories, skipped}`` (``skipped`` is always 0 here:
    VOC input is either valid or an error).
    """
    root = Path(devkit_root)
    if not root.is_dir():
        raise DataError(f"VOC: {root} is not a folder; expected the VOCdevkit folder containing VOC2007/ or VOC2012/")
    year_dirs = _select_years(root, split, years)
    categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(VOC_CLASSES)]
    images: list[dict] = []
    annotations: list[dict] = []
    for year_dir in year_dirs:
        ids = _read_split_list(year_dir / "ImageSets" / "Main" / f"{split}.txt")
        for image_id in tqdm(ids, desc=f"{year_dir.name} {split}", unit="img", disable=not progress):
            image, objects = _parse_annotation(root, year_dir, image_id)
            image["id"] = len(images) + 1
            images.append(image)
            for obj in objects:
                obj.update(id=len(annotations) + 1, image_id=image["id"])
                annotations.append(obj)
    dataset = build_coco_dict(images, annotations, categories,
                              f"Pascal VOC {'+'.join(d.name for d in year_dirs)} {split}, converted by detcore")
    out = write_coco_json(dataset, out_json)
    return summarize(dataset, 0, out, f"VOC {root} ({split})")


def _select_years(root: Path, split: str, years: Sequence[str] | None) -> list[Path]:
    """Return the ``VOC<year>`` folders to convert, validating an explicit ``years``."""
    if years:
        chosen = []
        for year in dict.fromkeys(str(y) for y in years):
            if year not in VOC_YEARS:
                raise DataError(f"VOC: unknown year {year!r}; expected one of {', '.join(VOC_YEARS)}")
            year_dir = root / f"VOC{year}"
            split_file = year_dir / "ImageSets" / "Main" / f"{split}.txt"
            if not split_file.is_file():
                raise DataError(f"VOC: split list {split_file} does not exist; expected VOC{year} with "
                                f"ImageSets/Main/{split}.txt (available: {_available_splits(year_dir)})")
            chosen.append(year_dir)
        return chosen
    present = [root / f"VOC{y}" for y in VOC_YEARS if (root / f"VOC{y}").is_dir()]
    if not present:
        raise DataError(f"VOC: no VOC2007/ or VOC2012/ folder in {root}; pass the VOCdevkit folder as SRC")
    chosen = [d for d in present if (d / "ImageSets" / "Main" / f"{split}.txt").is_file()]
    for d in present:
        if d not in chosen:
            logger.warning("VOC: %s has no ImageSets/Main/%s.txt; leaving that year out", d, split)
    if not chosen:
        found = "; ".join(f"{d.name}: {_available_splits(d)}" for d in present)
        raise DataError(f"VOC: no year in {root} has the split {split!r} (available splits: {found}); "
                        f"pass --split with one of them")
    return chosen


def _available_splits(year_dir: Path) -> str:
    main = year_dir / "ImageSets" / "Main"
    names = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
    return ", ".join(names) or "none"


def _read_split_list(path: Path) -> list[str]:
    """Image ids from an ``ImageSets/Main`` list (first column; class lists have a second one)."""
    ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError(f"VOC: split list {path} is empty; expected one image id per line")
    for image_id in ids:  # an id names Annotations/<id>.xml and JPEGImages/<id>.jpg
        problem = file_name_problem(image_id)
        if problem:
            raise DataError(f"VOC: split list {path} has image id {image_id!r:.200}: {problem}; expected ids "
                            f"such as 2008_000123")
    return ids


def _parse_annotation(root: Path, year_dir: Path, image_id: str) -> tuple[dict, list[dict]]:
    """Return the COCO ``image`` entry (without id) and its annotations (without ids)."""
    xml_path = year_dir / "Annotations" / f"{image_id}.xml"
    try:
        tree = ET.parse(xml_path)
    except FileNotFoundError:
        raise DataError(f"VOC: annotation {xml_path} does not exist (image {image_id!r} is listed in "
                        f"the split file); expected Annotations/{image_id}.xml") from None
    except ET.ParseError as exc:
        raise DataError(f"VOC: {xml_path} is not valid XML ({exc})") from None
    node = tree.getroot()
    image_path = year_dir / "JPEGImages" / f"{image_id}.jpg"
    width, height = _int_or_zero(node.findtext("size/width")), _int_or_zero(node.findtext("size/height"))
    if width <= 0 or height <= 0:
        width, height = read_image_size(image_path, f"VOC: {xml_path} has no <size>")
    elif not image_path.is_file():
        raise DataError(f"VOC: image {image_path} for {xml_path} does not exist; expected JPEGImages/{image_id}.jpg")
    else:
        check_pixels(image_path, width, height, f" (the <size> of {xml_path})")
    image = {"file_name": image_path.relative_to(root).as_posix(), "width": width, "height": height}
    objects = [_parse_object(obj, xml_path, index) for index, obj in enumerate(node.findall("object"))]
    return image, objects


def _parse_object(obj: ET.Element, xml_path: Path, index: int) -> dict:
    record = f"VOC: {xml_path} object #{index}"
    name = (obj.findtext("name") or "").strip()
    if name not in VOC_CLASSES:
        close = difflib.get_close_matches(name.lower(), VOC_CLASSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"{record}: unknown class {name!r}{hint}; expected one of {', '.join(VOC_CLASSES)}")
    box = obj.find("bndbox")
    try:
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{record} ({name}): <bndbox> needs numeric xmin, ymin, xmax, ymax") from None
    w, h = xmax - xmin + 1, ymax - ymin + 1
    if w <= 0 or h <= 0:
        raise DataError(f"{record} ({name}): empty box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}; "
                        f"expected xmax >= xmin and ymax >= ymin")
    difficult = 1 if _int_or_zero(obj.findtext("difficult")) else 0
    return {
        "category_id": VOC_CLASSES.index(name) + 1,
        "bbox": [xmin - 1, ymin - 1, w, h],
        "area": w * h,
        "iscrowd": difficult,
        "difficult": difficult,
    }


def _int_or_zero(text: str | None) -> int:
    try:
        return int(float(text)) if text is not None else 0
    except ValueError:
        return 0
