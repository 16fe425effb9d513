"""9. Mask R-CNN evaluation memory: peak RSS of a test over generated 800x1333 images, by image count.

A tiny Mask R-CNN (``configs/shapes/mask_rcnn_tiny_shapes.yaml``'s model, untrained, score
threshold 0 so every image gets 100 detections, input 800x1333) runs over N generated
800x1333 images (a rectangle each, one COCO annotation with a polygon), once per fresh process,
in two ways:

* ``per batch`` (detcore's ``evaluate_loader``): each batch's outputs become COCO results with
  RLE masks before the next batch;
* ``kept to the end`` (detcore before issue 19): every output, full-size float masks included
  (100 x 800 x 1333 x 4 bytes, about 400 MB per image), is kept until the loop ends, then
  converted.

The figure is the process's peak resident size (``ru_maxrss``) after the evaluation. Per batch
must stay flat in N; kept-to-the-end grows by about 400 MB per image. No goal: figures (the
unit test ``test_masks_are_encoded_per_batch_and_freed`` pins the behaviour).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import REPO_ROOT, Context, Result, Row, log

TITLE = "Mask R-CNN evaluation: peak RSS over generated 800x1333 images, per-batch RLE vs masks kept to the end"
H, W = 800, 1333

CHILD = r"""
import json, resource, sys
import torch
from detcore.config import load_config
from detcore.engine.dist import DistInfo
from detcore.engine.evaluator import evaluate_loader, gather_coco_results, run_inference
from detcore.engine.setup import build_split_loader
from detcore.evaluation import evaluate_coco
from detcore.models import build_detector

root, mode = sys.argv[1], sys.argv[2]
cfg = load_config(sys.argv[3], ["model.min_size=800", "model.max_size=1333", "model.num_classes=1",
                                "+model.roi_head.score_thresh=0.0", "model.roi_head.detections_per_img=100",
                                "model.rpn.post_nms_top_n_test=200"])
cfg["data"] = {"test_samples_per_gpu": 1, "workers_per_gpu": 0,
               "val": {"type": "CocoDataset", "ann_file": f"{root}/ann.json", "img_prefix": f"{root}/img/",
                       "with_mask": True, "pipeline": [], "test_mode": True}}
cfg["classes"] = ["box"]
torch.manual_seed(0)
model = build_detector(cfg["model"]).eval()
dist = DistInfo(0, 1, 0, torch.device("cpu"))
loader = build_split_loader(cfg, "val", dist, seed=0, train=False)
if mode == "per_batch":
    metrics, _ = evaluate_loader(model, loader, torch.device("cpu"), ["segm"], classes=["box"])
else:
    outputs, _ = run_inference(model, loader, torch.device("cpu"))
    results = gather_coco_results(outputs, loader.dataset)
    metrics = evaluate_coco(loader.dataset.coco, results, metrics=("segm",))
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(root: Path, images: int) -> Path:
    """``images`` PNGs of 800x1333 with one filled rectangle each, and their COCO json."""
    from PIL import Image, ImageDraw

    (root / "img").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "box"}]}
    for i in range(images):
        x0, y0, x1, y1 = 100 + 20 * i, 120, 700 + 20 * i, 560
        img = Image.new("RGB", (W, H), (40, 60, 80))
        ImageDraw.Draw(img).rectangle([x0, y0, x1, y1], fill=(220, 180, 40))
        img.save(root / "img" / f"{i}.png", compress_level=1)
        coco["images"].append({"id": i + 1, "file_name": f"{i}.png", "width": W, "height": H})
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    (root / "ann.json").write_text(json.dumps(coco))
    return root


def peak(root: Path, mode: str, env: dict) -> float:
    config = REPO_ROOT / "configs" / "shapes" / "mask_rcnn_tiny_shapes.yaml"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), mode, str(config)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} evaluation failed: {proc.stderr.strip()[-600:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"]


def run(ctx: Context) -> Result:
    counts = ctx.pick((2, 4), (2, 6))
    env = jobs.bench_env(threads=2)
    rows, details = [], {}
    for n in counts:
        root = generate(ctx.workdir(f"mask_eval_{n}"), n)
        for mode, label in (("per_batch", "per batch (RLE)"), ("kept", "kept to the end (before)")):
            log(f"mask eval memory: {n} images, {label}")
            value = peak(root, mode, env)
            details[f"{mode}_{n}"] = value
            rows.append(Row(f"Mask R-CNN test, {n} images 800x1333, 100 dets each: {label}", value, "MiB peak RSS"))
    first, last = counts[0], counts[-1]
    growth = (details[f"per_batch_{last}"] - details[f"per_batch_{first}"]) / (last - first)
    before = (details[f"kept_{last}"] - details[f"kept_{first}"]) / (last - first)
    rows.append(Row("  growth per extra image: per batch / kept to the end", growth, "MiB/image",
                    note=f"kept to the end: {before:.0f} MiB/image"))
    return Result(rows, {"images": list(counts), "size": [H, W], "detections_per_image": 100}, details)
