"""``detcore analyze confusion CONFIG CHECKPOINT --out F.png``: a checkpoint's confusion matrix.

Counted as MMDetection's ``tools/analysis_tools/confusion_matrix.py`` counts it (see
:mod:`detcore.evaluation.confusion`), over a split (default test) at an IoU and a score threshold.
"""
from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    kinds = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    kinds.required = True
    c = kinds.add_parser("confusion", help="confusion matrix with a background row and column (PNG)",
                         description="Run CHECKPOINT over a split and draw the confusion matrix: rows are ground-truth "
                                     "classes, columns predictions, the last row and column the background.")
    c.add_argument("config", help="path to a YAML config")
    c.add_argument("checkpoint", help="checkpoint file (.pth) or a torchvision detector by name "
                                      "(torchvision://fasterrcnn_resnet50_fpn)")
    c.add_argument("--out", required=True, metavar="F.png", help="the PNG to write")
    c.add_argument("--split", default="test", help="data split (default test)")
    c.add_argument("--iou-thr", type=float, default=0.5, help="IoU at which a detection matches a box (default 0.5)")
    c.add_argument("--score-thr", type=float, default=0.3, help="detections scoring less are ignored (default 0.3)")
    c.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    c.add_argument("--json", action="store_true", help="also print the matrix and class names as JSON")
    c.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from detcore.checkpoint import load_checkpoint, load_weights
    from detcore.config import load_config
    from detcore.engine.dist import init_distributed
    from detcore.engine.evaluator import coco_converter, run_inference
    from detcore.engine.setup import build_split_loader
    from detcore.errors import ConfigError
    from detcore.evaluation.label_ids import check_checkpoint_labels, label_ids_of
    from detcore.evaluation.confusion import count_image, plot_confusion
    from detcore.models import build_detector

    for key in ("iou_thr", "score_thr"):
        if not 0.0 <= getattr(args, key) <= 1.0:
            raise ConfigError(f"--{key.replace('_', '-')} {getattr(args, key)} is outside 0..1; pass e.g. 0.5")
    cfg = load_config(args.config, args.cfg_options)
    label_ids = label_ids_of(cfg)
    ckpt = load_checkpoint(args.checkpoint)
    check_checkpoint_labels(label_ids, ckpt["meta"], args.checkpoint)
    dist = init_distributed(args.device, None)
    model = build_detector(cfg["model"], backbone_weights=False).to(dist.device)  # the checkpoint holds them
    load_weights(model, ckpt)
    loader = build_split_loader(cfg, args.split, dist, seed=0, train=False)
    dataset = loader.dataset
    names = list(dataset.CLASSES)
    matrix = np.zeros((len(names) + 1, len(names) + 1), dtype=np.int64)

    to_coco = coco_converter(dataset, label_ids)  # boxes mapped back to the annotation's pixels, as evaluation does
    label_of = {cat_id: k for k, cat_id in enumerate(dataset.cat_ids)}

    def count(image_id: int, output: dict) -> None:
        dets = to_coco(image_id, output)
        boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]).reshape(-1, 4)
        gt_boxes, gt_labels = dataset.ground_truth(image_id)
        count_image(matrix, gt_boxes, gt_labels - 1, boxes, [label_of[d["category_id"]] for d in dets],
                    [d["score"] for d in dets], iou_thr=args.iou_thr, score_thr=args.score_thr)

    run_inference(model, loader, dist.device, progress=True, convert=count)
    out = plot_confusion(matrix, names, args.out,
                         title=f"{args.split}: IoU >= {args.iou_thr:g}, score >= {args.score_thr:g}")
    print(f"wrote {out} ({len(dataset)} images, {int(matrix.sum())} counts)")
    if args.json:
        print(json.dumps({"classes": [*names, "background"], "matrix": matrix.tolist()}))
    return 0
