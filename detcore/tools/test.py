"""``detcore test CONFIG CHECKPOINT``: batch inference over the test split, a COCO results file, metrics."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from detcore.atomic import write_text_atomic
from detcore.config import load_config
from detcore.contract import TEST, WorkDir, WorkerArgs
from detcore.tools.old_flags import TEST_HINTS, add_hints
from detcore.tools.train import check_work_dir, setup_logging

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    WorkerArgs.add_arguments(p, TEST)
    p.add_argument("--voc-method", choices=("area", "11points"), default=None,
                   help="for mAP: area (VOC2010+) or 11points (VOC2007) (default: evaluation.voc_method, else area)")
    p.add_argument("--show-dir", help="draw predictions of every image into this folder")
    p.add_argument("--score-thr", type=float, default=0.3, help="score threshold for --show-dir (default 0.3)")
    p.add_argument("--split", default="test", help="data split to run on (default test)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_hints(p, TEST_HINTS)


def run(args: argparse.Namespace) -> int:
    from detcore.apis.visualize import draw_result
    from detcore.checkpoint import load_checkpoint, load_weights
    from detcore.engine.dist import init_distributed
    from detcore.engine.evaluator import coco_converter, flatten_metrics, gather_coco_results, run_inference
    from detcore.engine.setup import build_split_loader
    from detcore.evaluation.label_ids import check_checkpoint_labels, check_coco_categories, label_ids_of, label_names
    from detcore.evaluation.coco_eval import DEFAULT_BACKEND
    from detcore.evaluation.metrics import check_metrics, evaluate_detections
    from detcore.tools.eval_tool import render
    from detcore.models import build_detector

    from detcore.config_check import check_config

    cfg = load_config(args.config, args.cfg_options)
    evaluation = cfg.get("evaluation") or {}
    metrics = check_metrics(args.eval if args.eval is not None else evaluation.get("metric", ["bbox"]),
                            WorkerArgs.option("eval") if args.eval is not None else "evaluation.metric")
    voc_method = args.voc_method or evaluation.get("voc_method", "area")
    label_ids = label_ids_of(cfg)
    ckpt = load_checkpoint(args.checkpoint)
    check_checkpoint_labels(label_ids, ckpt["meta"], args.checkpoint)
    for record in ckpt["meta"].get("weights") or []:
        logger.info("checkpoint %s: %s, file %s, sha256 %s", args.checkpoint, record.get("weights"), record.get("file"),
                    record.get("sha256"))
    work_dir = check_work_dir(Path(args.work_dir)) if args.work_dir else None
    dist = init_distributed(args.device, (cfg.get("dist_params") or {}).get("timeout_min"))
    model = build_detector(cfg["model"], backbone_weights=False).to(dist.device)  # the checkpoint holds them all
    load_weights(model, ckpt)
    check_config(cfg, test=True, eval_metrics=args.eval)  # before the data is read or a work dir exists
    loader = build_split_loader(cfg, args.split, dist, seed=0, train=False)
    if work_dir is not None:
        setup_logging(work_dir, "test.log")
    dataset = loader.dataset
    if label_ids == "coco":  # detections are matched to the dataset's categories by COCO category id
        check_coco_categories(dataset.coco.cats, str(getattr(dataset, "ann_file", args.split)))
    to_coco = coco_converter(dataset, label_ids)
    draw = None
    if args.show_dir:
        Path(args.show_dir).mkdir(parents=True, exist_ok=True)
        draw = _drawer(dataset, Path(args.show_dir), args.score_thr, draw_result,
                       label_names(label_ids, dataset.CLASSES))

    def convert(image_id: int, output: dict) -> list[dict]:  # per batch: no full-size masks are kept
        if draw is not None:
            draw(image_id, output)
        return to_coco(image_id, output)

    outputs, _ = run_inference(model, loader, dist.device, progress=True, convert=convert)
    results = gather_coco_results(outputs, dataset, converted=True)
    if dist.rank != 0:
        return 0
    out = Path(args.out) if args.out else (work_dir / "results.json" if work_dir else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(results))
        logger.info("wrote %d detections to %s", len(results), out)
    if metrics:
        names = list(dataset.CLASSES if label_ids == "coco" else ckpt["meta"].get("classes") or dataset.CLASSES)
        evaluated = evaluate_detections(dataset.coco, results, metrics=tuple(metrics), classwise=True,
                                        class_names=names, backend=evaluation.get("backend", DEFAULT_BACKEND),
                                        voc_method=voc_method)
        flat = flatten_metrics(evaluated)
        if work_dir is not None:
            WorkDir(work_dir).test_metrics.write_text(json.dumps(flat, indent=2))
        if args.json:
            print(json.dumps({m: evaluated[m] for m in metrics}))
        else:
            print(render(evaluated, voc_method))
            published = _published(ckpt["meta"])
            if published:
                print(published)
    return 0


def _published(meta: dict) -> str | None:
    """``published (torchvision, COCO val2017): box AP 37.0`` for a torchvision detector by name."""
    if not meta.get("torchvision"):
        return None
    from detcore.pretrained.catalog import published_metrics

    found = published_metrics(meta["torchvision"])
    text = ", ".join(f"{k} {v}" for k, v in found.items())
    return f"published by torchvision for {meta['torchvision']} on COCO val2017 (AP x 100): {text}" if text else None


def _drawer(dataset, show_dir: Path, score_thr: float, draw_result, names):
    """``draw(image_id, output)``: write the prediction drawn on the dataset's image to ``show_dir``."""
    from torchvision.io import write_png

    position = {int(image_id): i for i, image_id in enumerate(dataset.img_ids)}

    def draw(image_id: int, output: dict) -> None:
        image, _ = dataset[position[image_id]]
        write_png(draw_result(image, output, names, score_thr), str(show_dir / f"{image_id}.png"))

    return draw
