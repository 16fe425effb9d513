"""``detcore config show CONFIG``: print the fully resolved config."""
from __future__ import annotations

import argparse
import json

from detcore.config import dump_config, load_config


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("action", choices=["show"], help="show: print the resolved config")
    p.add_argument("config", help="path to a YAML config")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override keys, e.g. optimizer.lr=0.01 (prefix a new key with +)")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def run(args: argparse.Namespace) -> int:
    from detcore.config_check import check_config

    cfg = load_config(args.config, args.cfg_options)
    check_config(cfg, registries=False)  # what a training run would refuse: checkpoints, metrics, data paths
    print(json.dumps(cfg, indent=2) if args.json else dump_config(cfg), end="" if not args.json else "\n")
    return 0
