"""The synthetic shapes dataset: deterministic, valid COCO, honest masks, safe concurrent caching."""
from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from detcore.data import ShapesDataset, build_dataset, ensure_shapes, generate_shapes
from detcore.errors import DataError
from detcore.tools.cli import main as cli_main

SMALL = {"num_train": 12, "num_val": 4, "size": 64}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_same_seed_same_bytes_and_pixels(tmp_path):
    a = generate_shapes(tmp_path / "a", seed=3, **SMALL)
    b = generate_shapes(tmp_path / "b", seed=3, **SMALL)
    c = generate_shapes(tmp_path / "c", seed=4, **SMALL)
    for split in ("train", "val"):
        ann = f"annotations/instances_{split}.json"
        assert (a / ann).read_bytes() == (b / ann).read_bytes()
        assert (a / ann).read_bytes() != (c / ann).read_bytes()
        for png in sorted((a / "images" / split).glob("*.png")):
            assert np.array_equal(_pixels(png), _pixels(b / "images" / split / png.name))
    assert not list(tmp_path.glob(".*tmp*"))  # temp dirs renamed away


def test_valid_coco_with_masks_inside_boxes(tmp_path):
    root = generate_shapes(tmp_path / "shapes", seed=0, **SMALL)
    coco = COCO(str(root / "annotations" / "instances_train.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["rectangle", "ellipse", "triangle"]
    assert len(coco.getImgIds()) == 12
    for img_id in coco.getImgIds():
        info = coco.imgs[img_id]
        assert (root / "images" / "train" / info["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= 4
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert 0.2 * 64 - 1 <= w <= 0.5 * 64 + 1 and 0.2 * 64 - 1 <= h <= 0.5 * 64 + 1
            mask = coco.annToMask(ann)
            ys, xs = np.nonzero(mask)
            assert xs.min() >= x - 1 and xs.max() + 1 <= x + w + 1
            assert ys.min() >= y - 1 and ys.max() + 1 <= y + h + 1
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0


def test_shape_pixels_are_where_the_masks_say(tmp_path):
    root = generate_shapes(tmp_path / "shapes", seed=1, **SMALL)
    coco = COCO(str(root / "annotations" / "instances_val.json"))
    for img_id in coco.getImgIds():
        pixels = _pixels(root / "images" / "val" / coco.imgs[img_id]["file_name"]).astype(np.int32)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        union = np.zeros(pixels.shape[:2], bool)
        for ann in anns:
            union |= coco.annToMask(ann).astype(bool)
        background = np.median(pixels[~union], axis=0)
        inside = np.abs(pixels[union] - background).sum(axis=1)
        assert np.mean(inside > 40) > 0.9  # objects differ from the background


def test_ensure_shapes_caches_and_dataset_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("DETCORE_CACHE", str(tmp_path / "cache"))
    root = ensure_shapes(**SMALL)
    assert root == tmp_path / "cache" / "shapes-s64-t12-v4-seed0"
    mtime = (root / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert ensure_shapes(**SMALL) == root
    assert (root / "annotations" / "instances_train.json").stat().st_mtime_ns == mtime
    ds = build_dataset({"type": "ShapesDataset", "split": "val", **SMALL}, with_mask=True)
    assert isinstance(ds, ShapesDataset) and len(ds) == 4 and ds.CLASSES == ("rectangle", "ellipse", "triangle")
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and target["masks"].shape[0] == len(target["boxes"]) >= 1


def _ensure_in_process(cache: str) -> str:
    return str(ensure_shapes(cache, **SMALL, seed=7))


def test_concurrent_ensure_shapes_generates_once(tmp_path):
    cache = str(tmp_path / "cache")
    with mp.get_context("fork").Pool(3) as pool:
        roots = pool.map(_ensure_in_process, [cache] * 3)
    assert len(set(roots)) == 1
    root = Path(roots[0])
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")) == [root.name]
    assert len(list((root / "images" / "train").glob("*.png"))) == 12
    COCO(str(root / "annotations" / "instances_train.json"))


def test_cli_writes_dataset_and_refuses_non_empty_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["detcore"])  # the CLI rewrites sys.argv; restore it afterwards
    out = tmp_path / "out"
    assert cli_main(["shapes", str(out), "--train", "3", "--val", "2", "--size", "48", "--seed", "5"]) == 0
    assert len(list((out / "images" / "val").glob("*.png"))) == 2
    assert cli_main(["shapes", str(out), "--train", "3"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(DataError):
        generate_shapes(out, num_train=1, num_val=1)
