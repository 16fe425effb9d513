"""Tiny datasets in the real on-disk formats (VOC, Cityscapes, VIA), drawn with known answers.

Plain builders live here (importable by tests under a unique module name); ``conftest.py``
wraps them in fixtures.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image


def _jpeg(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 150)).save(path, quality=90)


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[tuple[str, tuple, int]]) -> str:
    """A VOC annotation; ``size=None`` leaves ``<size>`` out, ``(0, 0)`` writes zeros."""
    size_xml = "" if size is None else (f"<size><width>{size[0]}</width><height>{size[1]}</height>"
                                        f"<depth>3</depth></size>")
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, difficult in objects)
    return (f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
            f"<source><database>The VOC Database</database></source>{size_xml}"
            f"<segmented>0</segmented>{objs}</annotation>")


# (year, id, true image size, size written in the xml, objects (name, (xmin, ymin, xmax, ymax), difficult), splits)
VOC_SAMPLE = [
    ("2007", "000001", (48, 32), (48, 32), [("dog", (5, 3, 20, 12), 0), ("person", (10, 10, 30, 30), 1)],
     ("trainval",)),
    ("2007", "000002", (40, 30), None, [("car", (1, 1, 40, 30), 0)], ("trainval",)),
    ("2007", "000003", (36, 28), (0, 0), [("cat", (2, 4, 9, 8), 0)], ("test",)),
    ("2012", "2008_000001", (50, 40), (50, 40), [("aeroplane", (2, 2, 10, 10), 0), ("tvmonitor", (20, 5, 49, 39), 0)],
     ("trainval",)),
]


def make_voc_devkit(tmp_path: Path) -> SimpleNamespace:
    root = tmp_path / "VOCdevkit"
    lists: dict[tuple[str, str], list[str]] = {}
    for year, image_id, true_size, xml_size, objects, splits in VOC_SAMPLE:
        year_dir = root / f"VOC{year}"
        _jpeg(year_dir / "JPEGImages" / f"{image_id}.jpg", *true_size)
        (year_dir / "Annotations").mkdir(parents=True, exist_ok=True)
        (year_dir / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", xml_size, objects))
        for split in splits:
            lists.setdefault((year, split), []).append(image_id)
    for (year, split), ids in lists.items():
        main = root / f"VOC{year}" / "ImageSets" / "Main"
        main.mkdir(parents=True, exist_ok=True)
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        (main / f"dog_{split}.txt").write_text("".join(f"{i} -1\n" for i in ids))  # class lists sit alongside
    return SimpleNamespace(root=root, sample=VOC_SAMPLE)


# Cityscapes: (split, city, stem, {pixel value: (rows, cols) slices or list of those})
CITY_W, CITY_H = 32, 16


def cityscapes_ids(regions: dict[int, list[tuple[slice, slice]]]) -> np.ndarray:
    ids = np.full((CITY_H, CITY_W), 7, dtype=np.uint16)  # road (not an instance class)
    ids[0, :] = 0  # unlabeled
    ids[15, 0:3] = 11  # building
    for value, parts in regions.items():
        for rows, cols in parts:
            ids[rows, cols] = value
    return ids


CITYSCAPES_SAMPLE = {
    ("train", "aachen", "aachen_000000_000019"): {
        26000: [(slice(2, 6), slice(3, 10))],                                  # car: bbox [3,2,7,4], area 28
        26001: [(slice(8, 12), slice(0, 4)), (slice(11, 12), slice(4, 8))],    # car, L: bbox [0,8,8,4], area 20
        24: [(slice(1, 5), slice(20, 24))],                                    # person crowd: [20,1,4,4], 16
        33000: [(slice(12, 16), slice(28, 32))],                               # bicycle: [28,12,4,4], 16
    },
    ("train", "bremen", "bremen_000001_000019"): {
        25000: [(slice(3, 9), slice(5, 7))],                                   # rider: [5,3,2,6], 12
        31000: [(slice(9, 13), slice(10, 30))],                                # train: [10,9,20,4], 80
        7005: [(slice(14, 15), slice(20, 22))],                                # bad: road has no instances
    },
    ("val", "frankfurt", "frankfurt_000000_000294"): {
        27000: [(slice(2, 4), slice(2, 4))],                                   # truck
    },
}


def make_cityscapes_root(tmp_path: Path) -> SimpleNamespace:
    root = tmp_path / "cityscapes"
    for (split, city, stem), regions in CITYSCAPES_SAMPLE.items():
        ann_dir = root / "gtFine" / split / city
        ann_dir.mkdir(parents=True)
        ids = cityscapes_ids(regions)
        Image.fromarray(ids).save(ann_dir / f"{stem}_gtFine_instanceIds.png")  # 16-bit grayscale, mode I;16
        polygons = {"imgHeight": CITY_H, "imgWidth": CITY_W,
                    "objects": [{"label": "car", "polygon": [[3, 2], [9, 2], [9, 5], [3, 5]]}]}
        (ann_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps(polygons))
        img_dir = root / "leftImg8bit" / split / city
        img_dir.mkdir(parents=True)
        Image.new("RGB", (CITY_W, CITY_H), (10, 20, 30)).save(img_dir / f"{stem}_leftImg8bit.png")
    return SimpleNamespace(root=root, sample=CITYSCAPES_SAMPLE)


def via_balloon_json(tmp_path: Path) -> Path:
    """VIA 1 style (balloon dataset): regions as a dict, no class attribute."""
    folder = tmp_path / "balloon" / "train"
    _jpeg(folder / "a.jpg", 40, 30)
    _jpeg(folder / "b.jpg", 36, 24)
    data = {
        "a.jpg1234": {"filename": "a.jpg", "size": 1234, "file_attributes": {}, "regions": {
            "0": {"shape_attributes": {"name": "polygon", "all_points_x": [2, 12, 12, 2],
                                       "all_points_y": [3, 3, 9, 9]}, "region_attributes": {}},   # 10x6 = 60
            "1": {"shape_attributes": {"name": "polygon", "all_points_x": [20, 30, 20],
                                       "all_points_y": [5, 5, 15]}, "region_attributes": {}},     # triangle 50
        }},
        "b.jpg999": {"filename": "b.jpg", "size": 999, "file_attributes": {}, "regions": {}},
    }
    path = folder / "via_region_data.json"
    path.write_text(json.dumps(data))
    return path


def via2_entries() -> dict:
    """VIA 2 style: regions as a list, class in the 'type' attribute (text and dropdown)."""
    return {
        "c.png100": {"filename": "c.png", "size": 100, "file_attributes": {}, "regions": [
            {"shape_attributes": {"name": "rect", "x": 1, "y": 2, "width": 5, "height": 4},
             "region_attributes": {"type": "zebra"}},                                            # 5x4 = 20
            {"shape_attributes": {"name": "polygon", "all_points_x": [0, 4, 4, 0],
                                  "all_points_y": [10, 10, 12, 12]},
             "region_attributes": {"type": {"apple": True, "zebra": False}}},                     # 4x2 = 8
            {"shape_attributes": {"name": "circle", "cx": 5, "cy": 5, "r": 2}, "region_attributes": {"type": "apple"}},
        ]},
    }


def make_via_list_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "via2"
    folder.mkdir()
    Image.new("RGB", (20, 16)).save(folder / "c.png")
    return folder
