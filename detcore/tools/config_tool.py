"""``detcore config show CONFIG``: print the fully resolved config.
``detcore config import MMDET_CONFIG.py --out CONFIG.yaml``: bring an MMDetection config over."""
from __future__ import annotations

import argparse
import json

from detcore.config import dump_config, load_config
from detcore.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("action", choices=["show", "import"],
                   help="show: print the resolved config; import: write an MMDetection .py config as detcore YAML")
    p.add_argument("config", help="path to a YAML config (show) or an MMDetection .py config (show, import)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override keys, e.g. optimizer.lr=0.01 (prefix a new key with +)")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.add_argument("--out", help="import: the .yaml file to write")


def run(args: argparse.Namespace) -> int:
    if args.action == "import":
        return _import(args)
    from detcore.config_check import check_config

    cfg = load_config(args.config, args.cfg_options)
    # what a training run would refuse (checkpoints, metrics, data paths); a test run's for a test-only config
    check_config(cfg, registries=False, test=cfg.get("label_ids") == "coco")
    print(json.dumps(cfg, indent=2) if args.json else dump_config(cfg), end="" if not args.json else "\n")
    return 0


def _import(args: argparse.Namespace) -> int:
    from detcore.mmdet_import import import_config, write_yaml

    if not args.out:
        raise ConfigError("config import needs --out CONFIG.yaml (where to write the detcore config)")
    if args.cfg_options:
        raise ConfigError("config import takes no --cfg-options; edit the written YAML or pass them to train")
    if not str(args.config).endswith(".py"):
        raise ConfigError(f"{args.config}: config import reads MMDetection .py configs; YAML configs need no import")
    imported = import_config(args.config)
    out = write_yaml(imported, args.out)
    print(imported.summary_text())
    print(f"wrote {out}")
    return 0
