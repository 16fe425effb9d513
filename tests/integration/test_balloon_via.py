"""The balloon workflow: VIA annotations -> `detcore convert via` -> train and test a Mask R-CNN."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tests.integration.helpers import ROOT, detcore, final_val


def _balloon_split(root: Path, n: int, seed: int) -> Path:
    """Images with 1-2 filled ellipses ('balloons') and a VIA project annotating them as polygons."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    project = {}
    for i in range(n):
        img = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(0, 120, 3)))
        draw = ImageDraw.Draw(img)
        regions = []
        for _ in range(int(rng.integers(1, 3))):
            cx, cy, rx, ry = rng.uniform(35, 125), rng.uniform(30, 90), rng.uniform(12, 28), rng.uniform(14, 26)
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            xs, ys = np.round(cx + rx * np.cos(t)).astype(int), np.round(cy + ry * np.sin(t)).astype(int)
            draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=tuple(int(c) for c in rng.integers(150, 256, 3)))
            regions.append({"shape_attributes": {"name": "polygon", "all_points_x": xs.tolist(),
                                                 "all_points_y": ys.tolist()}, "region_attributes": {}})
        name = f"b{i:03d}.jpg"
        img.save(root / name, quality=95)
        size = (root / name).stat().st_size
        project[f"{name}{size}"] = {"filename": name, "size": size, "regions": {str(k): r for k, r in enumerate(regions)},
                                    "file_attributes": {}}
    (root / "via_region_data.json").write_text(json.dumps(project))
    return root


def test_via_balloon_converts_trains_and_tests(tmp_path: Path) -> None:
    data = tmp_path / "data/balloon"
    for split, n, seed in (("train", 12, 0), ("val", 4, 1)):
        _balloon_split(data / split, n, seed)
        detcore("convert", "via", str(data / split / "via_region_data.json"), str(data / split / "coco.json"),
                "--class-name", "balloon")
    coco = json.loads((data / "train/coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["balloon"] and len(coco["images"]) == 12
    cfg = ROOT / "configs/balloon/mask_rcnn_tiny_balloon.yaml"
    paths = [f"data.{s}.{k}={data / d}/{f}" for s, d in (("train", "train"), ("val", "val"), ("test", "val"))
             for k, f in (("ann_file", "coco.json"), ("img_prefix", ""))]
    work = tmp_path / "work"
    detcore("train", str(cfg), "--work-dir", str(work), "--cfg-options", *paths, "runner.max_iters=6",
            "evaluation.interval=6", "checkpoint_config.interval=6", "data.samples_per_gpu=2", "auto_scale_lr.enable=false",
            "data.workers_per_gpu=0", "lr_config.warmup_iters=2")
    val = final_val(work)
    assert val["iter"] == 6 and "segm_AP" in val and "bbox_AP_balloon" in val
    assert torch.load(work / "iter_6.pth", weights_only=True)["meta"]["classes"] == ["balloon"]
    proc = detcore("test", str(cfg), str(work / "iter_6.pth"), "--cfg-options", *paths, "--eval", "bbox", "segm",
                   "--json")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"bbox", "segm"} and 0.0 <= metrics["segm"]["AP"] <= 1.0
