"""The embedded synthetic dataset: coloured rectangles, ellipses and triangles in COCO format.

``generate_shapes`` writes ``images/{train,val}/*.png`` and
``annotations/instances_{train,val}.json`` (boxes, polygon masks, mask areas). Output is a pure
function of the parameters: same json bytes and same pixels for the same seed. Each object is
drawn as the same polygon that annotates it; objects overlap little (box intersection at most
20% of the smaller box), so each stays mostly visible while its mask is the full shape.

``ensure_shapes`` generates into a cache directory once; concurrent callers (several ranks,
several jobs) serialise on a file lock and the data appears by an atomic rename.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

from detcore.data.coco import CocoDataset
from detcore.errors import ConfigError, DataError
from detcore.registry import DATASETS

logger = logging.getLogger(__name__)

CATEGORIES = [
    {"id": 1, "name": "rectangle", "supercategory": "shape"},
    {"id": 2, "name": "ellipse", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
SPLITS = {"train": 0, "val": 1}
MAX_OVERLAP = 0.2  # box intersection / smaller box area
ELLIPSE_POINTS = 32


def _shape_polygon(rng: np.random.Generator, cat_id: int, x0: float, y0: float, w: float, h: float) -> list[float]:
    """Flat [x1, y1, x2, y2, ...] polygon whose tight box is (x0, y0, w, h)."""
    if cat_id == 1:
        pts = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    elif cat_id == 2:
        t = np.arange(ELLIPSE_POINTS) * (2 * np.pi / ELLIPSE_POINTS)
        cx, cy = x0 + w / 2, y0 + h / 2
        pts = list(zip(cx + w / 2 * np.cos(t), cy + h / 2 * np.sin(t)))
    else:
        apex = x0 + float(rng.uniform(0.0, 1.0)) * w
        pts = [(apex, y0), (x0 + w, y0 + h), (x0, y0 + h)]
        if rng.random() < 0.5:  # point down instead of up
            pts = [(x, 2 * y0 + h - y) for x, y in pts]
    return [round(float(v), 2) for p in pts for v in p]


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / min(a[2] * a[3], b[2] * b[3])


def _colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A colour clearly different from the background (L1 distance >= 150 when possible)."""
    best, best_dist = None, -1
    for _ in range(20):
        c = rng.integers(0, 256, size=3)
        dist = int(np.abs(c - background).sum())
        if dist > best_dist:
            best, best_dist = c, dist
        if dist >= 150:
            break
    return tuple(int(v) for v in best)


def render_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image with 1-4 shapes; returns the image and ``[{category_id, polygon}]``."""
    background = rng.integers(0, 256, size=3)
    noise = rng.normal(0.0, 6.0, size=(size, size, 3))
    pixels = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    objects: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(30):
            cat_id = int(rng.integers(1, 4))
            w, h = rng.uniform(0.2, 0.5, size=2) * size
            x0, y0 = float(rng.uniform(0, size - w)), float(rng.uniform(0, size - h))
            box = (x0, y0, float(w), float(h))
            if all(_overlap(box, o["box"]) <= MAX_OVERLAP for o in objects):
                break
        else:
            continue
        polygon = _shape_polygon(rng, cat_id, *box)
        draw.polygon(polygon, fill=_colour(rng, background))
        objects.append({"category_id": cat_id, "polygon": polygon, "box": box})
    return image, objects


def _annotation(ann_id: int, image_id: int, obj: dict[str, Any], size: int) -> dict[str, Any]:
    poly = obj["polygon"]
    xs, ys = poly[0::2], poly[1::2]
    x, y = min(xs), min(ys)
    rle = mask_utils.merge(mask_utils.frPyObjects([poly], size, size))
    return {
        "id": ann_id, "image_id": image_id, "category_id": obj["category_id"],
        "bbox": [round(x, 2), round(y, 2), round(max(xs) - x, 2), round(max(ys) - y, 2)],
        "area": float(mask_utils.area(rle)), "segmentation": [poly], "iscrowd": 0,
    }


def _write_split(root: Path, split: str, num: int, size: int, seed: int, bar: Callable[[int], Any]) -> None:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num):
        rng = np.random.default_rng([seed, SPLITS[split], index])
        image, objects = render_image(rng, size)
        image_id, file_name = index + 1, f"{index:06d}.png"
        image.save(image_dir / file_name, format="PNG", compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for obj in objects:
            annotations.append(_annotation(len(annotations) + 1, image_id, obj, size))
        bar(1)
    data = {
        "info": {"description": f"detcore synthetic shapes ({split}, size={size}, seed={seed})", "version": "1"},
        "images": images, "annotations": annotations, "categories": CATEGORIES,
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data, separators=(",", ":")))


def _check_params(num_train: int, num_val: int, size: int, seed: int) -> None:
    for name, value, low in (("num_train", num_train, 0), ("num_val", num_val, 0), ("size", size, 32), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"shapes: {name} must be an int >= {low}, got {value!r}")


def generate_shapes(out_dir: str | Path, num_train: int = 200, num_val: int = 50, size: int = 128, seed: int = 0,
                    *, progress: bool = False) -> Path:
    """Write the dataset to ``out_dir`` (which must not exist or be empty) and return it.

    Files are written into a temporary sibling directory and renamed into place, so a reader
    never sees a half-written dataset.
    """
    _check_params(num_train, num_val, size, seed)
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir} already exists and is not an empty directory; remove it or choose another")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with tqdm(total=num_train + num_val, desc="shapes", unit="img", disable=not progress) as bar:
            _write_split(tmp, "train", num_train, size, seed, bar.update)
            _write_split(tmp, "val", num_val, size, seed, bar.update)
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote shapes dataset (%d train, %d val, %dpx, seed %d) to %s", num_train, num_val, size, seed, out_dir)
    return out_dir


def default_cache_root() -> Path:
    """``$DETCORE_CACHE`` or ``~/.cache/detcore``."""
    return Path(os.environ.get("DETCORE_CACHE") or Path.home() / ".cache" / "detcore").expanduser()


def ensure_shapes(root: str | Path | None = None, *, num_train: int = 200, num_val: int = 50, size: int = 128,
                  seed: int = 0) -> Path:
    """Return ``<root>/shapes-s<size>-t<train>-v<val>-seed<seed>``, generating it if missing.

    Safe for concurrent callers: one generates under a file lock, the others wait and reuse it.
    Leftover temporary directories of a crashed generator are removed under the lock.
    """
    _check_params(num_train, num_val, size, seed)
    cache = Path(root).expanduser() if root is not None else default_cache_root()
    target = cache / f"shapes-s{size}-t{num_train}-v{num_val}-seed{seed}"
    if (target / "annotations" / "instances_val.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f".{target.name}.lock")):
        if not (target / "annotations" / "instances_val.json").is_file():
            for stale in cache.glob(f".{target.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if target.exists() and not any(target.iterdir()):
                target.rmdir()
            generate_shapes(target, num_train, num_val, size, seed)
    return target


@DATASETS.register()
class ShapesDataset(CocoDataset):
    """A split of the synthetic shapes dataset, generated into the cache on first use.

    ``root`` is the cache root (default ``$DETCORE_CACHE`` or ``~/.cache/detcore``).
    """

    def __init__(self, split: str = "train", num_train: int = 200, num_val: int = 50, size: int = 128, seed: int = 0,
                 root: str | Path | None = None, pipeline: Sequence[Mapping[str, Any]] | Callable = (),
                 classes: Sequence[str] | None = None, with_mask: bool = False, test_mode: bool = False,
                 filter_empty_gt: bool = True) -> None:
        if split not in SPLITS:
            raise ConfigError(f"ShapesDataset: split must be one of {sorted(SPLITS)}, got {split!r}")
        self.split = split
        data_root = ensure_shapes(root, num_train=num_train, num_val=num_val, size=size, seed=seed)
        super().__init__(ann_file=data_root / "annotations" / f"instances_{split}.json",
                         img_prefix=data_root / "images" / split, classes=classes, pipeline=pipeline,
                         filter_empty_gt=filter_empty_gt, test_mode=test_mode, with_mask=with_mask)
