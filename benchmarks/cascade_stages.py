"""Cascade R-CNN on the shapes data: bbox AP beside Faster R-CNN's, and how much each stage tightens the boxes.

Trains the tiny Faster R-CNN (``configs/shapes/faster_rcnn_tiny_shapes.yaml``) and the tiny Cascade
R-CNN (``configs/shapes/cascade_rcnn_tiny_shapes.yaml``: the same backbone, FPN, RPN and box-head
width, plus two more stages) with ``detcore train`` on the same CPU schedule (the configs'
own: 300 iterations of 4 images, or ``--iters``), one after the other, and reads each one's final
val bbox AP. Then, on the 100 val images, it follows the trained cascade's test-time boxes: every
RPN proposal whose IoU with a ground-truth box is at least ``--fg-iou`` (0.5) keeps that box as its
target, and the table gives the mean IoU of the proposals and of each stage's boxes regressed from
them with that target (and the share at IoU >= 0.7 and 0.8):

    python -m benchmarks.cascade_stages [--iters 300] [--out benchmarks/results/cascade_stages.json]

Prints two Markdown tables; the figures go to the JSON file with the machine's description.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import REPO_ROOT, log, machine_description

CONFIGS = {"Faster R-CNN": "configs/shapes/faster_rcnn_tiny_shapes.yaml",
           "Cascade R-CNN": "configs/shapes/cascade_rcnn_tiny_shapes.yaml"}


def train(config: str, work_dir: Path, iters: int | None, threads: int) -> dict:
    """``detcore train`` on ``config``; its last val record from ``metrics.jsonl``."""
    options = [] if iters is None else [f"runner.max_iters={iters}", f"evaluation.interval={iters}",
                                        f"lr_config.step=[{int(iters * 0.8)},{int(iters * 0.93)}]"]
    cmd = [sys.executable, "-m", "detcore.tools.cli", "train", config, "--work-dir", str(work_dir), "--seed", "0",
           *(["--cfg-options", *options] if options else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    log(f"cascade_stages: {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"detcore train {config} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    records = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [r for r in records if r["mode"] == "val"][-1]
    train_records = [r for r in records if r["mode"] == "train"]
    return {"config": config, "iters": val["iter"], "bbox_AP": val["bbox_AP"], "bbox_AP50": val["bbox_AP50"],
            "bbox_AP75": val["bbox_AP75"], "seconds_per_iter": sum(r["iter_time"] for r in train_records)
            / len(train_records)}


def stage_ious(checkpoint: Path, fg_iou: float) -> list[dict]:
    """Per step (proposals, stage 1, 2, 3): mean IoU of the tracked boxes with their targets, and shares."""
    import torch
    from pycocotools.coco import COCO
    from torchvision.io import ImageReadMode, read_image
    from torchvision.ops import box_iou

    from detcore.apis import init_detector
    from detcore.data import ensure_shapes

    model = init_detector(None, checkpoint)
    root = ensure_shapes(None, num_train=400, num_val=100, size=128, seed=0)
    with contextlib.redirect_stdout(sys.stderr):  # pycocotools prints while loading; stdout is the table
        coco = COCO(str(root / "annotations/instances_val.json"))
    per_step: list[list[torch.Tensor]] = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        gt = torch.tensor([a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))], dtype=torch.float32)
        if not len(gt):
            continue
        gt[:, 2:] += gt[:, :2]  # xywh -> xyxy
        image = read_image(str(root / "images/val" / info["file_name"]), ImageReadMode.RGB).float() / 255
        steps = [step[0] for step in model.refinements([image])]
        best, target = box_iou(steps[0], gt).max(1)
        keep = best >= fg_iou
        per_step.append([box_iou(boxes[keep], gt).gather(1, target[keep, None])[:, 0] for boxes in steps])
    names = ["RPN proposals"] + [f"stage {k + 1}" for k in range(len(per_step[0]) - 1)]
    rows = []
    for k, name in enumerate(names):
        iou = torch.cat([p[k] for p in per_step])
        rows.append({"step": name, "boxes": len(iou), "mean_iou": float(iou.mean()),
                     "share_iou_0.7": float((iou >= 0.7).float().mean()),
                     "share_iou_0.8": float((iou >= 0.8).float().mean())})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cascade_stages", description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=None, help="training iterations (default: the configs' 300)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP_NUM_THREADS of each run")
    ap.add_argument("--fg-iou", type=float, default=0.5, help="proposals at least this close to a box are followed")
    ap.add_argument("--work-dir", help="keep the two runs here (default: a temporary folder, removed)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cascade_stages.json"))
    ap.add_argument("--note", default="", help="a remark kept with the results, e.g. 'shared machine, load 10'")
    args = ap.parse_args(argv)
    machine = machine_description()
    with tempfile.TemporaryDirectory(prefix="cascade_stages-") as tmp:
        work = Path(args.work_dir or tmp)
        runs = {name: train(config, work / Path(config).stem, args.iters, args.threads)
                for name, config in CONFIGS.items()}
        stages = stage_ious(work / "cascade_rcnn_tiny_shapes" / "latest.pth", args.fg_iou)
    print("| model | iterations | bbox AP | AP50 | AP75 | s/iter |\n|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['iters']} | {r['bbox_AP']:.3f} | {r['bbox_AP50']:.3f} | {r['bbox_AP75']:.3f} "
              f"| {r['seconds_per_iter']:.2f} |")
    print(f"\n| Cascade R-CNN, val proposals with IoU >= {args.fg_iou} | boxes | mean IoU with their box | "
          f"IoU >= 0.7 | IoU >= 0.8 |\n|---|---|---|---|---|")
    for r in stages:
        print(f"| {r['step']} | {r['boxes']} | {r['mean_iou']:.3f} | {r['share_iou_0.7']:.1%} | "
              f"{r['share_iou_0.8']:.1%} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "settings": vars(args), "runs": runs,
                                          "stages": stages}, indent=2) + "\n")
    log(f"cascade_stages: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
