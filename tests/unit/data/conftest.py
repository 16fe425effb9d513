"""Small COCO datasets written to tmp dirs for the data tests."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]


def _image(mode: str, w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(w * 1000 + h)
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def base_spec() -> dict[str, Any]:
    """Four images: RGB with cat+dog, grayscale with bird, RGBA with a crowd dog only, one empty."""
    return {
        "images": [
            {"id": 1, "file_name": "rgb.png", "width": 40, "height": 30, "_mode": "RGB"},
            {"id": 2, "file_name": "gray.png", "width": 32, "height": 48, "_mode": "L"},
            {"id": 3, "file_name": "rgba.png", "width": 20, "height": 20, "_mode": "RGBA"},
            {"id": 4, "file_name": "empty.png", "width": 16, "height": 16, "_mode": "RGB"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "iscrowd": 0, "area": 80,
             "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [20, 10, 15, 12], "iscrowd": 0, "area": 180,
             "segmentation": [[20, 10, 35, 10, 35, 22, 20, 22]]},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [4, 4, 10, 20], "iscrowd": 0, "area": 200,
             "segmentation": [[4, 4, 14, 4, 14, 24, 4, 24]]},
            {"id": 13, "image_id": 3, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 1, "area": 25,
             "segmentation": {"size": [20, 20], "counts": [21, 5, 15, 5, 15, 5, 15, 5, 15, 5, 294]}},
        ],
        "categories": [dict(c) for c in CATEGORIES],
    }


@pytest.fixture
def coco_spec() -> Callable[[], dict[str, Any]]:
    """A function returning a fresh copy of :func:`base_spec`."""
    return base_spec


@pytest.fixture
def write_coco(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``write_coco(spec=None, name="ann.json")`` -> (ann_file, img_prefix); images from ``_mode``."""

    def write(spec: dict[str, Any] | None = None, name: str = "ann.json") -> tuple[Path, Path]:
        spec = base_spec() if spec is None else spec
        img_dir = tmp_path / "images"
        img_dir.mkdir(exist_ok=True)
        for img in spec["images"]:
            mode = img.pop("_mode", "RGB")
            if mode:
                _image(mode, img["width"], img["height"]).save(img_dir / img["file_name"])
        ann = tmp_path / name
        ann.write_text(json.dumps(spec))
        return ann, img_dir

    return write
