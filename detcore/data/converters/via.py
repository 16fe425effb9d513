"""VGG Image Annotator (VIA) json to COCO instances json with polygon masks.

Accepted inputs (the balloon dataset's ``via_region_data.json`` is the first kind):

* VIA 1.x / 2.x exported annotations: a top-level dict ``{key: {filename, size, regions,
  file_attributes}}`` where ``regions`` is a dict ``{"0": region, ...}`` (VIA 1) or a list
  (VIA 2);
* a VIA 2 project file, whose entries sit under ``_via_img_metadata``.

A region is ``{shape_attributes: {name, ...}, region_attributes: {...}}``. ``polygon``
(``all_points_x``/``all_points_y``) and ``rect`` (``x, y, width, height``) are converted;
other shapes (circle, ellipse, point, polyline) and zero-area shapes are skipped with a
warning and counted in ``skipped``. Points are used as VIA stores them (pixel coordinates).
VIA's ``size`` is the file's byte size, not its dimensions, so widths and heights are read
from the image files in ``img_dir``. ``file_name`` is the VIA ``filename`` (relative to
``img_dir``).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from detcore.data.converters.coco_json import build_coco_dict, read_image_size, summarize, write_coco_json
from detcore.data.image_file import file_name_problem
from detcore.errors import DataError

logger = logging.getLogger(__name__)


def convert_via(via_json: str | os.PathLike, out_json: str | os.PathLike, class_name: str | None = None,
                class_attribute: str | None = None, img_dir: str | os.PathLike | None = None,
                progress: bool = True) -> dict[str, int]:
    """Convert a VIA json into a COCO json with one polygon per region.

    Give exactly one of ``class_name`` (every region is that class, category id 1) or
    ``class_attribute`` (the region attribute holding the class name; categories are the
    names found, sorted, ids 1..K). ``img_dir`` defaults to the json's folder. Raises
    ``DataError`` naming the file and the entry/region for malformed input. Returns
    ``{images, annotations, categories, skipped}``.
    """
    src = Path(via_json)
    if (class_name is None) == (class_attribute is None):
        raise DataError("VIA: give exactly one of class_name (one class for every region) or class_attribute "
                        "(the region attribute naming the class)")
    if class_name is not None and not class_name.strip():
        raise DataError("VIA: class_name is empty; expected the category name, e.g. 'balloon'")
    entries = _load_entries(src)
    image_root = Path(img_dir) if img_dir is not None else src.parent
    images: list[dict] = []
    shapes: list[tuple[int, str, dict]] = []  # (image id, class name, annotation without ids)
    skipped = 0
    seen: dict[str, str] = {}
    for key, entry in tqdm(entries.items(), desc=f"VIA {src.name}", unit="img", disable=not progress):
        record = f"VIA: {src} entry {key!r}"
        filename = entry["filename"]
        problem = file_name_problem(filename)
        if problem:
            raise DataError(f"{record}: filename {filename!r:.200}: {problem}; expected a name relative to the "
                            f"image folder (--img-dir)")
        if filename in seen:
            raise DataError(f"{record}: filename {filename!r} also appears in entry {seen[filename]!r}; "
                            f"expected one entry per image")
        seen[filename] = key
        width, height = read_image_size(image_root / filename, record)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": filename, "width": width, "height": height})
        regions = entry["regions"]
        for index, region in enumerate(regions.values() if isinstance(regions, dict) else regions):
            where = f"{record} region #{index}"
            ann = _region_to_annotation(region, where)
            if ann is None:
                skipped += 1
                continue
            if class_name is not None:
                name = class_name.strip()
            else:
                name = _class_from_attribute(region, class_attribute, where)
            shapes.append((image_id, name, ann))
    names = sorted({name for _, name, _ in shapes}) if class_name is None else [class_name.strip()]
    cat_ids = {name: i + 1 for i, name in enumerate(names)}
    categories = [{"id": cat_ids[n], "name": n, "supercategory": "none"} for n in names]
    annotations = [{**ann, "id": i + 1, "image_id": image_id, "category_id": cat_ids[name]}
                   for i, (image_id, name, ann) in enumerate(shapes)]
    dataset = build_coco_dict(images, annotations, categories, f"VIA {src.name}, converted by detcore")
    out = write_coco_json(dataset, out_json)
    return summarize(dataset, skipped, out, f"VIA {src}")


def _load_entries(src: Path) -> dict[str, dict]:
    """Read the json and return its per-image entries, validated."""
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"VIA: {src} does not exist; expected a VIA project or annotations json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"VIA: {src} is not valid JSON ({exc})") from None
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or ("project" in data and "metadata" in data and "file" in data):
        raise DataError(f"VIA: {src} is not a VIA 1/2 json; expected a dict of "
                        f"{{filename, size, regions, file_attributes}} entries (or a VIA 2 project with "
                        f"_via_img_metadata). VIA 3 projects are not supported: export them as VIA 2 json")
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str) or not entry["filename"]:
            raise DataError(f"VIA: {src} entry {key!r} has no 'filename'; expected "
                            f"{{filename, size, regions, file_attributes}}")
        if not isinstance(entry.get("regions"), (dict, list)):
            raise DataError(f"VIA: {src} entry {key!r} ({entry['filename']}): 'regions' is "
                            f"{type(entry.get('regions')).__name__}; expected a dict or a list")
    return data


def _region_to_annotation(region: Any, where: str) -> dict | None:
    """Return ``{segmentation, bbox, area, iscrowd}`` for a region, or None to skip it."""
    shape = region.get("shape_attributes") if isinstance(region, dict) else None
    if not isinstance(shape, dict):
        raise DataError(f"{where}: no 'shape_attributes' dict; expected {{shape_attributes, region_attributes}}")
    kind = shape.get("name")
    if kind == "polygon":
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if not (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys) >= 3
                and all(isinstance(v, (int, float)) for v in xs + ys)):
            raise DataError(f"{where}: polygon needs all_points_x and all_points_y as equal-length lists of at "
                            f"least 3 numbers")
        points = [(float(x), float(y)) for x, y in zip(xs, ys)]
    elif kind == "rect":
        try:
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: rect needs numeric x, y, width, height") from None
        points = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    else:
        logger.warning("%s: shape %r is not supported (polygon, rect); skipped", where, kind)
        return None
    area = _shoelace_area(points)
    if area <= 0:
        logger.warning("%s: %s has zero area; skipped", where, kind)
        return None
    px, py = [p[0] for p in points], [p[1] for p in points]
    x0, y0 = min(px), min(py)
    return {"segmentation": [[c for p in points for c in p]], "bbox": [x0, y0, max(px) - x0, max(py) - y0],
            "area": area, "iscrowd": 0}


def _class_from_attribute(region: dict, attribute: str, where: str) -> str:
    """The class name stored in ``region_attributes[attribute]`` (text, or a VIA 2 dropdown/checkbox)."""
    attrs = region.get("region_attributes")
    attrs = attrs if isinstance(attrs, dict) else {}
    raw = attrs.get(attribute)
    value = raw
    if isinstance(raw, dict):  # VIA 2 checkbox/dropdown: {option: true}
        chosen = [k for k, v in raw.items() if v]
        value = chosen[0] if len(chosen) == 1 else None
    if not isinstance(value, str) or not value.strip():
        have = ", ".join(sorted(attrs)) or "none"
        raise DataError(f"{where}: region attribute {attribute!r} is {raw!r}; expected a non-empty class name "
                        f"(region attributes present: {have})")
    return value.strip()


def _shoelace_area(points: list[tuple[float, float]]) -> float:
    """Area of a simple polygon (absolute value of the shoelace sum)."""
    s = 0.0
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]):
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0
