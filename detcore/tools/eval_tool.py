"""``detcore eval --ann GT.json --results DT.json``: COCO metrics (and VOC mAP) of a results file."""
from __future__ import annotations

import argparse
import json

from detcore.evaluation.coco_eval import BACKENDS, DEFAULT_BACKEND, format_table
from detcore.evaluation.metrics import METRICS, VOC_METHODS, evaluate_detections, format_voc


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
    p.add_argument("--ann", required=True, metavar="GT.json", help="COCO ground-truth annotation file")
    p.add_argument("--results", required=True, metavar="DT.json", help="COCO results file (a json list)")
    p.add_argument("--metric", nargs="+", choices=METRICS, default=["bbox"],
                   help="bbox and/or segm (COCO), mAP (Pascal VOC at IoU 0.5; difficult boxes ignored) "
                        "(default: bbox)")
    p.add_argument("--voc-method", choices=VOC_METHODS, default="area",
                   help="for mAP: area under the precision envelope (VOC2010+, default) or 11points (VOC2007)")
    p.add_argument("--json", action="store_true", help="print {metric: {AP, AP50, ...}} as json")
    p.add_argument("--classwise", action="store_true", help="also print per-class AP (table output)")
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help=f"COCOeval implementation: faster-coco-eval (pycocotools' rules in C++, the same numbers, "
                        f"about 7x faster) or pycocotools (the reference) (default: {DEFAULT_BACKEND})")


def run(args: argparse.Namespace) -> int:
    metrics = list(dict.fromkeys(args.metric))
    result = evaluate_detections(args.ann, args.results, metrics=metrics, classwise=args.classwise and not args.json,
                                 backend=args.backend, voc_method=args.voc_method)
    if args.json:
        print(json.dumps({m: result[m] for m in metrics}, indent=2))
    else:
        print(render(result, args.voc_method))
    return 0


def render(result: dict, voc_method: str = "area") -> str:
    """The COCO table and the VOC lines of an evaluation, whichever it holds."""
    parts = [format_table(result)] if any(m in result for m in ("bbox", "segm")) else []
    if "mAP" in result:
        parts.append(format_voc(result, voc_method))
    return "\n\n".join(parts)
