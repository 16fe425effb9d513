"""``detcore browse CONFIG --out-dir D``: a split's images after its pipeline, ground truth drawn.

As MMDetection's ``tools/analysis_tools/browse_dataset.py``: what the model is fed (flips,
resizes and crops applied) with the boxes, masks and class names the loss will see, each class
in its colour; small images are drawn scaled up (``--draw-min-side``).
"""
from __future__ import annotations

import argparse

from detcore.atomic import replacing


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("config", help="path to a YAML config")
    p.add_argument("--out-dir", required=True, help="folder for the drawn images (<image id>.png)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="data split (default train)")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="draw the first N images (default 20; 0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random transforms (default 0)")
    p.add_argument("--draw-min-side", type=int, default=512, metavar="PX",
                   help="draw images whose short side is smaller scaled up to PX pixels (default 512; 0: as fed)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from torchvision.io import write_png

    from detcore.apis.visualize import draw_ground_truth
    from detcore.config import load_config
    from detcore.data import build_dataset
    from detcore.engine.setup import split_config
    from detcore.errors import ConfigError

    if args.limit < 0:
        raise ConfigError(f"--limit {args.limit} is negative; pass N >= 1, or 0 for every image")
    if args.draw_min_side < 0:
        raise ConfigError(f"--draw-min-side {args.draw_min_side} is negative; give a size in pixels, or 0 for the "
                          f"size the model is fed")
    cfg = load_config(args.config, args.cfg_options)
    split_cfg = split_config(cfg, args.split)
    if args.split != "train":
        split_cfg.setdefault("test_mode", True)
    dataset = build_dataset(split_cfg)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    count = len(dataset) if args.limit == 0 else min(args.limit, len(dataset))
    for i in range(count):
        image, target = dataset[i]
        drawn = draw_ground_truth(image, target, dataset.CLASSES, min_side=args.draw_min_side)
        path = out_dir / f"{target['image_id']}.png"
        with replacing(path) as tmp:
            write_png(drawn, str(tmp))
    print(f"wrote {count} images of the {args.split} split to {out_dir}")
    return 0
