"""``detcore shapes OUT_DIR``: write the synthetic shapes dataset in COCO format."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to create (must not exist or be empty)")
    p.add_argument("--train", type=int, default=200, metavar="N", help="training images (default 200)")
    p.add_argument("--val", type=int, default=50, metavar="N", help="validation images (default 50)")
    p.add_argument("--size", type=int, default=128, metavar="PX", help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from detcore.data.shapes import generate_shapes

    root = generate_shapes(args.out_dir, num_train=args.train, num_val=args.val, size=args.size, seed=args.seed,
                           progress=True)
    print(f"{root}: annotations/instances_train.json ({args.train} images), "
          f"annotations/instances_val.json ({args.val} images), images/{{train,val}}/")
    return 0
