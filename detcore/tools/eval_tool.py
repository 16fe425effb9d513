"""``detcore eval --ann GT.json --results DT.json``: COCO metrics of a results file."""
from __future__ import annotations

import argparse
import json

from detcore.evaluation.coco_eval import BACKENDS, IOU_TYPES, evaluate_coco, format_table


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--ann", required=True, metavar="GT.json", help="COCO ground-truth annotation file")
    p.add_argument("--results", required=True, metavar="DT.json", help="COCO results file (a json list)")
    p.add_argument("--metric", nargs="+", choices=IOU_TYPES, default=["bbox"], help="IoU types (default: bbox)")
    p.add_argument("--json", action="store_true", help="print {metric: {AP, AP50, ...}} as json")
    p.add_argument("--classwise", action="store_true", help="also print per-class AP (table output)")
    p.add_argument("--backend", choices=BACKENDS, default="pycocotools",
                   help="COCOeval implementation: pycocotools (default) or faster-coco-eval (same numbers, "
                        "about 5x faster; pip install 'detlaunch[fast-eval]')")


def run(args: argparse.Namespace) -> int:
    metrics = list(dict.fromkeys(args.metric))
    result = evaluate_coco(args.ann, args.results, metrics=metrics, classwise=args.classwise and not args.json,
                           backend=args.backend)
    if args.json:
        print(json.dumps({m: result[m] for m in metrics}, indent=2))
    else:
        print(format_table(result))
    return 0
