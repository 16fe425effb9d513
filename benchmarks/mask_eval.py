"""10. Mask R-CNN evaluation: detcore against a plain pycocotools / torchvision evaluation (goal: ratio
<= 1.05 in time and peak memory, identical numbers).

Two parts, every run a fresh process, the two sides interleaved (the order rotates per repeat):

* **A results file** (:func:`benchmarks.evaluation.generate` with masks): a synthetic COCO
  ground truth with octagon polygons and a Mask R-CNN-like results file (100 detections per
  image, each with a box and an RLE mask), evaluated bbox + segm by
  ``detcore eval --metric bbox segm --json`` with ``--backend pycocotools`` and with its default
  backend (faster-coco-eval), against ``python -m benchmarks.evaluation pycocotools GT DT bbox
  segm``: ``COCO``, one ``loadRes``, ``COCOeval`` per IoU type, evaluate/accumulate/summarize,
  as a user writes it by hand. The 24 numbers must be equal to the last bit.
* **End to end** on generated 800x1333 images (:func:`benchmarks.mask_eval_memory.generate`):
  the tiny Mask R-CNN of ``configs/shapes/mask_rcnn_tiny_shapes.yaml`` (untrained, seed 0,
  score threshold 0: 100 detections with masks per image), saved once as a state dict.
  ``detcore test CONFIG CKPT --eval bbox segm --json`` against :func:`plain_main`, the loop of
  torchvision's ``references/detection`` ``evaluate``: the same model object (detcore's
  ``build_detector`` is torchvision's ``MaskRCNN``) with the weights loaded, images read with
  PIL and converted to float, ``model.eval()``, ``torch.no_grad()``, outputs to COCO results
  (masks > 0.5, ``pycocotools.mask.encode``; segm results without a box, as its
  ``CocoEvaluator`` makes them), then ``COCOeval`` bbox and segm.

The figures are each process's wall time, spawn to exit, and its peak RSS (``ru_maxrss`` of that
process, from ``wait4``).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

from benchmarks import jobs
from benchmarks.evaluation import (FASTER_TOLERANCE, GOAL, METRIC_KEYS, ProcessRun, _identical_row, cocoeval_stats, faster_available,
                                   generate, run_detcore, run_pycocotools, timed_process)
from benchmarks.harness import REPO_ROOT, Context, Result, Row, compared, log, measured, not_available
from benchmarks.mask_eval_memory import generate as generate_images

TITLE = "Mask R-CNN evaluation: detcore eval/test (bbox + segm) vs plain pycocotools and torchvision, time and memory"
METRICS = ("bbox", "segm")
CONFIG = REPO_ROOT / "configs" / "shapes" / "mask_rcnn_tiny_shapes.yaml"
# 100 detections with masks per image from an untrained model; 200 proposals keep the CPU run short
MODEL_OPTIONS = {"min_size": 800, "max_size": 1333, "num_classes": 1,
                 "roi_head": {"score_thresh": 0.0, "detections_per_img": 100}, "rpn": {"post_nms_top_n_test": 200}}


def mismatches(stats: dict, reference: dict, metrics: Sequence[str] = METRICS) -> dict:
    """``{"segm/APm": (ours, reference), ...}`` for every number of ``metrics`` that is not equal."""
    return {f"{m}/{k}": (stats[m][k], reference[m][k]) for m in metrics for k in METRIC_KEYS
            if stats[m][k] != reference[m][k]}


def interleaved(sides: dict, repeats: int, what: str) -> dict[str, list[ProcessRun]]:
    """``{side: [ProcessRun per repeat]}``, calling each side's function once per repeat, the order
    rotated by one each repeat (so no side always runs first on a drifting machine)."""
    names = list(sides)
    runs: dict[str, list[ProcessRun]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            log(f"{what}: {name} run {r + 1}/{repeats}")
            runs[name].append(sides[name]())
    return runs


def _rows(label: str, runs: list[ProcessRun], base: list[ProcessRun], base_name: str, reference: dict,
          tolerance: float = 0.0) -> list[Row]:
    """Time and peak RSS against the baseline, and whether every number is the baseline's."""
    diffs = [d for d in (mismatches(run.stats, base[0].stats) for run in runs) if d]
    return [
        compared(label, [r.seconds for r in runs], [b.seconds for b in base], "s", GOAL,
                 note=f"fresh process, spawn to exit; ratio vs {base_name}"),
        compared("  its peak RSS", [r.peak_mib for r in runs], [b.peak_mib for b in base], "MiB", GOAL,
                 note=f"ru_maxrss of the process; ratio vs {base_name}"),
        _identical_row("  its 12 segm + 12 bbox numbers identical", diffs, reference, tolerance),
    ]


def results_file_part(ctx: Context) -> tuple[list[Row], dict, dict]:
    images, dets = ctx.pick((100, 100), (500, 100))
    repeats = ctx.pick(2, 3)
    log(f"mask eval: generating {images} images x {dets} detections with RLE masks")
    gt, dt = generate(ctx.workdir("mask_eval_results"), images, dets, masks=True)
    timeout = 1200.0
    sides = {"pycocotools": lambda: run_pycocotools(gt, dt, timeout, METRICS),
             "detcore": lambda: run_detcore(gt, dt, timeout, "pycocotools", METRICS)}
    no_faster = faster_available()
    if not no_faster:
        sides["faster"] = lambda: run_detcore(gt, dt, timeout, "faster-coco-eval", METRICS)
    runs = interleaved(sides, repeats, "mask eval (results file)")
    base = runs["pycocotools"]
    reference = base[0].stats["segm"]
    label = f"{images:,} images x {dets} dets with masks"
    rows = [*_rows(f"detcore eval --backend pycocotools, bbox+segm, {label}", runs["detcore"], base,
                   "plain pycocotools", reference),
            measured("plain pycocotools: loadRes, COCOeval bbox + segm", [b.seconds for b in base], "s",
                     note=f"peak RSS {sorted(b.peak_mib for b in base)[len(base) // 2]:.0f} MiB; segm AP, AR100 "
                          f"{reference['AP']:.4f}, {reference['AR100']:.4f}")]
    if no_faster:
        rows.append(not_available("detcore eval (default backend faster-coco-eval)", no_faster))
    else:
        rows += _rows("detcore eval (default backend faster-coco-eval), bbox+segm", runs["faster"], base,
                      "plain pycocotools", reference, FASTER_TOLERANCE)
    settings = {"images": images, "detections_per_image": dets, "repeats": repeats, "results_bytes": dt.stat().st_size}
    details = {side: [vars(r) for r in rs] for side, rs in runs.items()}
    return rows, settings, details


def write_case(root: Path, images: int) -> tuple[Path, Path]:
    """The generated 800x1333 set under ``root``, a detcore config for it and the model's weights."""
    import torch
    import yaml

    from detcore.config import load_config
    from detcore.models import build_detector

    generate_images(root, images)
    config = root / "mask_rcnn_800.yaml"
    config.write_text(yaml.safe_dump({
        "_base_": str(CONFIG), "model": MODEL_OPTIONS, "classes": ["box"],
        "data": {"_delete_": True, "test_samples_per_gpu": 1, "workers_per_gpu": 0,
                 "test": {"type": "CocoDataset", "ann_file": str(root / "ann.json"), "img_prefix": f"{root}/img/",
                          "with_mask": True, "pipeline": [], "test_mode": True}}}))
    torch.manual_seed(0)
    checkpoint = root / "mask_rcnn_800.pth"
    torch.save(build_detector(load_config(str(config))["model"]).state_dict(), checkpoint)
    return config, checkpoint


def end_to_end_part(ctx: Context) -> tuple[list[Row], dict, dict]:
    images, repeats = ctx.pick((1, 1), (4, 2))
    root = ctx.workdir("mask_eval_e2e")
    log(f"mask eval: {images} generated 800x1333 images, tiny Mask R-CNN, 100 detections each")
    config, checkpoint = write_case(root, images)
    env = jobs.bench_env(threads=len(os.sched_getaffinity(0)))
    timeout = 1200.0
    detcore_cmd = [sys.executable, "-m", "detcore.tools.cli", "--log-level", "WARNING", "test", str(config),
                   str(checkpoint), "--eval", *METRICS, "--json", "--device", "cpu"]
    plain_cmd = [sys.executable, "-m", "benchmarks.mask_eval", "plain", str(config), str(checkpoint)]
    sides = {"plain": lambda: timed_process(plain_cmd, timeout, "plain torchvision evaluation", json.loads, env),
             "detcore": lambda: timed_process(detcore_cmd, timeout, "detcore test", json.loads, env)}
    runs = interleaved(sides, repeats, "mask eval (end to end)")
    plain, ours = runs["plain"], runs["detcore"]
    diffs = mismatches(ours[0].stats, plain[0].stats)
    label = f"detcore test, {images} images 800x1333, 100 dets with masks"
    rows = [compared(label, [r.seconds for r in ours], [p.seconds for p in plain], "s", GOAL,
                     note="inference + masks + RLE + COCOeval bbox/segm, fresh process; ratio vs the plain loop"),
            compared("  its peak RSS", [r.peak_mib for r in ours], [p.peak_mib for p in plain], "MiB", GOAL,
                     note="ru_maxrss of the process; ratio vs the plain loop"),
            measured("plain torchvision loop (references/detection evaluate)", [p.seconds for p in plain], "s",
                     note=f"peak RSS {plain[0].peak_mib:.0f} MiB; segm AP {plain[0].stats['segm']['AP']:.4f} "
                          f"(untrained), numbers " + ("identical to detcore's" if not diffs
                                                      else f"differ from detcore's: {diffs}"))]
    settings = {"images": images, "size": [800, 1333], "detections_per_image": 100, "repeats": repeats,
                "model": MODEL_OPTIONS}
    return rows, settings, {side: [vars(r) for r in rs] for side, rs in runs.items()}


def run(ctx: Context) -> Result:
    rows, settings, details = results_file_part(ctx)
    e2e_rows, e2e_settings, e2e_details = end_to_end_part(ctx)
    return Result(rows + e2e_rows, {"results_file": settings, "end_to_end": e2e_settings},
                  {"results_file": details, "end_to_end": e2e_details})


def plain_main(config: str, checkpoint: str) -> int:
    """The baseline of the end-to-end part: torchvision's ``references/detection`` evaluation loop
    over the config's test split (the model built from the config, the weights from ``checkpoint``);
    prints ``{bbox: {12 stats}, segm: {12 stats}}`` as JSON."""
    import contextlib
    import io

    import numpy as np
    import torch
    from PIL import Image
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from torchvision.transforms.v2 import functional as F

    from detcore.config import load_config
    from detcore.models import build_detector

    cfg = load_config(config)
    split = cfg["data"]["test"]
    model = build_detector(cfg["model"])
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(split["ann_file"])
    results: dict[str, list[dict]] = {"bbox": [], "segm": []}
    with torch.no_grad():
        for image_id in coco.getImgIds():
            image = Image.open(os.path.join(split["img_prefix"], coco.imgs[image_id]["file_name"])).convert("RGB")
            output = model([F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)])[0]
            boxes = output["boxes"].clone()
            boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
            scores, labels = output["scores"].tolist(), output["labels"].tolist()
            masks = output["masks"] > 0.5
            rles = [mask_util.encode(np.array(m[0, :, :, np.newaxis], dtype=np.uint8, order="F"))[0] for m in masks]
            for box, score, label, rle in zip(boxes.tolist(), scores, labels, rles):
                rle["counts"] = rle["counts"].decode("utf-8")
                results["bbox"].append({"image_id": image_id, "category_id": label, "bbox": box, "score": score})
                results["segm"].append({"image_id": image_id, "category_id": label, "segmentation": rle,
                                        "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        out = {metric: cocoeval_stats(coco, coco.loadRes(results[metric]), metric) for metric in METRICS}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "plain":
        print("usage: python -m benchmarks.mask_eval plain CONFIG CHECKPOINT", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(plain_main(sys.argv[2], sys.argv[3]))
