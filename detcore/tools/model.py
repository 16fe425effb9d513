"""``detcore model list``: the pretrained models usable by name. ``detcore model download NAME ...``: fill
the weights cache ahead (e.g. on a login node, for compute nodes without internet)."""
from __future__ import annotations

import argparse
import json

from detcore.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("action", choices=["list", "download"],
                   help="list: the models usable by name; download: fetch NAMEs into torch hub's cache")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="download: torchvision://fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn, "
                        "ResNet50_Weights.IMAGENET1K_V2, ... (any name `detcore model list` shows)")
    p.add_argument("--json", action="store_true", help="list: print a JSON list")


def _parse(name: str):
    from detcore.pretrained.names import PREFIX, TORCHVISION, parse_weights

    if name in TORCHVISION:  # a bare builder name, as torchvision's get_model_weights takes
        name = PREFIX + name
    weights = parse_weights(name, "detcore model download")
    if weights is None:
        raise ConfigError(f"detcore model download: {name!r} is not a weights name; give names `detcore model list` "
                          f"shows, e.g. torchvision://resnet50 or FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
    return weights


def run(args: argparse.Namespace) -> int:
    from detcore.pretrained.hub import checkpoints_dir

    if args.action == "list":
        if args.names:
            raise ConfigError(f"detcore model list takes no names (got {' '.join(args.names)}); "
                              f"`detcore model download NAME` fetches one")
        from detcore.pretrained.catalog import catalog, format_catalog

        entries = catalog()
        print(json.dumps([e.to_dict() for e in entries], indent=2) if args.json
              else format_catalog(entries, str(checkpoints_dir())))
        return 0
    if not args.names:
        raise ConfigError("detcore model download needs at least one NAME (see `detcore model list`)")
    from detcore.pretrained.hub import fetch, sha256_of

    for weights in [_parse(n) for n in args.names]:  # every name is checked before anything is fetched
        cached = (checkpoints_dir() / weights.file).is_file()
        path = fetch(weights, progress=True)
        digest = sha256_of(path)
        state = "already cached" if cached else "downloaded"
        note = "" if digest.startswith(weights.sha256_prefix) else \
            f" (WARNING: sha256 does not start with {weights.sha256_prefix}: not torchvision's file; delete it)"
        print(f"{weights.name}: {state} {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {digest[:16]}...){note}",
              flush=True)
    return 0
