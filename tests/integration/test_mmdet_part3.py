"""The MMDetection guide's third part, end to end on generated Cityscapes-format data: `detcore convert
cityscapes`, the guide-shaped AugFPN neck (`examples/augfpn_neck.py`: `@NECKS.register_module()`, MMDetection's
arguments, a tuple in and out) through `custom_imports`, the guide's config
(`configs/cityscapes/cascade_mask_rcnn_r50_augfpn_autoaug_10e_cityscapes.yaml`: AutoAugment with Rotate and
Translate in the train pipeline), `detcore train`, `detcore test --eval bbox segm`, and the same through
`launcher submit --nproc 2` (local backend).

The guide trains a Cascade Mask R-CNN, and so does the test (MODEL_BASE is the guide's own model base). The config's data
paths are the ones it ships with (data/cityscapes/... under the working directory); only the network and the
schedule are shrunk to seconds with --cfg-options.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.integration.helpers import ROOT, env
from tests.integration.launcher_cli import done, launcher, train_iters, wait_until

GUIDE = ROOT / "configs/cityscapes/cascade_mask_rcnn_r50_augfpn_autoaug_10e_cityscapes.yaml"
CASCADE_BASE = "../_base_/models/cascade_mask_rcnn_r50_fpn.yaml"
MODEL_BASE = CASCADE_BASE  # the one line: the guide's Cascade Mask R-CNN (mask_rcnn_r50_fpn.yaml would run Mask R-CNN)
SMALL = ["model.backbone.depth=18", "model.backbone.weights=null", "+model.backbone.allow_random_frozen_bn=true",
         "model.neck.in_channels=[64,128,256,512]",
         "model.min_size=[96,128]", "model.max_size=256", "model.rpn.pre_nms_top_n_train=200",
         "model.rpn.post_nms_top_n_train=100", "model.rpn.pre_nms_top_n_test=100", "model.rpn.post_nms_top_n_test=50",
         "data.workers_per_gpu=0", "runner={_delete_: true, type: IterBasedRunner, max_iters: 3}",
         "checkpoint_config.interval=3", "evaluation.interval=1000", "lr_config.warmup_iters=1",
         "log_config.interval=1"]
# (label id, colour) of the instances drawn: car, person, bicycle, bus
CLASSES = [(26, (200, 40, 40)), (24, (40, 200, 40)), (33, (40, 40, 200)), (28, (200, 200, 40))]
W, H = 256, 128


def cityscapes_tree(root: Path, split: str, n: int, seed: int) -> None:
    """``n`` images in Cityscapes' layout: leftImg8bit png, gtFine instanceIds png (label * 1000 + k) and
    polygons json, each image with 2..4 rectangles of the classes above on a road (label 7)."""
    rng = np.random.default_rng(seed)
    city = {"train": "aachen", "val": "frankfurt"}[split]
    for i in range(n):
        stem = f"{city}_{i:06d}_000019"
        ids = np.full((H, W), 7, dtype=np.uint16)
        image = np.full((H, W, 3), 90, dtype=np.uint8) + rng.integers(0, 20, (H, W, 3), dtype=np.uint8)
        for k in range(int(rng.integers(2, 5))):
            label, colour = CLASSES[int(rng.integers(len(CLASSES)))]
            w, h = int(rng.integers(24, 80)), int(rng.integers(20, 60))
            x, y = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
            ids[y:y + h, x:x + w] = label * 1000 + k
            image[y:y + h, x:x + w] = colour
        for sub, name, write in (("gtFine", f"{stem}_gtFine_instanceIds.png", lambda p: Image.fromarray(ids).save(p)),
                                 ("leftImg8bit", f"{stem}_leftImg8bit.png", lambda p: Image.fromarray(image).save(p))):
            folder = root / sub / split / city
            folder.mkdir(parents=True, exist_ok=True)
            write(folder / name)
        (root / "gtFine" / split / city / f"{stem}_gtFine_polygons.json").write_text(
            json.dumps({"imgHeight": H, "imgWidth": W, "objects": []}))


def guide_config(folder: Path) -> Path:
    """The shipped guide config with its model base set to MODEL_BASE and its bases made absolute."""
    text = GUIDE.read_text()
    assert CASCADE_BASE in text
    text = text.replace(CASCADE_BASE, MODEL_BASE).replace("../_base_/", f"{ROOT}/configs/_base_/")
    path = folder / GUIDE.name
    path.write_text(text)
    return path


def detcore(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"detcore {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def test_the_guides_part3_converts_trains_tests_and_submits(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "data" / "cityscapes"
    for split, n, seed in (("train", 6, 0), ("val", 2, 1)):
        cityscapes_tree(data, split, n, seed)
        out = detcore(tmp_path, "convert", "cityscapes", "data/cityscapes",
                      f"data/cityscapes/annotations/instancesonly_filtered_gtFine_{split}.json", "--split", split,
                      "--no-progress")
        assert json.loads(out.stdout.strip().splitlines()[-1])["images"] == n
    config = guide_config(tmp_path)

    # --no-validate here and in the submit below: `detcore test` and `launcher submit --test` evaluate
    proc = detcore(tmp_path, "train", config.name, "--work-dir", "work", "--no-validate", "--cfg-options", *SMALL)
    ckpt = torch.load(tmp_path / "work/iter_3.pth", weights_only=True)
    state = ckpt["state_dict"]
    assert "backbone.fpn.rfa_convs.0.weight" in state  # the user's AugFPN, built from the guide's arguments
    assert ckpt["meta"]["classes"] == ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    saved = (tmp_path / "work/config.yaml").read_text()
    assert "AutoAugment" in saved and "Translate" in saved and "examples.augfpn_neck" in saved
    assert sorted(train_iters(str(tmp_path / "work"))) == [1, 2, 3]
    assert "nan" not in proc.stderr.lower()

    proc = detcore(tmp_path, "test", config.name, "work/iter_3.pth", "--eval", "bbox", "segm", "--json",
                   "--cfg-options", *SMALL)
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "nan" not in proc.stderr.lower()
    assert set(metrics) == {"bbox", "segm"}
    assert 0.0 <= metrics["bbox"]["AP"] <= 1.0 and 0.0 <= metrics["segm"]["AP"] <= 1.0

    sub = launcher(home, "submit", config.name, "--nproc", "2", "--work-dir", str(tmp_path / "submitted"),
                   "--name", "part3", "--no-validate", "--cfg-options", *SMALL, cwd=tmp_path)
    exp_id = sub.stdout.splitlines()[0].strip()
    rec = wait_until(home, exp_id, done)
    assert rec["state"] == "succeeded", rec
    assert train_iters(rec["work_dir"]) == [1, 2, 3]
    assert "backbone.fpn.rfa_convs.0.weight" in torch.load(Path(rec["work_dir"]) / "iter_3.pth",
                                                           weights_only=True)["state_dict"]
    test_id = launcher(home, "submit", config.name, "--test", str(Path(rec["work_dir"]) / "iter_3.pth"), "--eval",
                       "bbox", "segm", "--nproc", "2", "--name", "part3-test", "--detach", "--cfg-options", *SMALL,
                       cwd=tmp_path).stdout.strip()
    rec = wait_until(home, test_id, done)
    assert rec["state"] == "succeeded", rec
    assert {"bbox_AP", "segm_AP"} <= set(rec["last_metrics"])
