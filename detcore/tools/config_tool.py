"""``detcore config show CONFIG``: print the fully resolved config (files a run would need but this
machine lacks are warnings on stderr, so a config can be read before its data is downloaded).
``detcore config import MMDET_CONFIG.py --out CONFIG.yaml``: bring an MMDetection config over."""
from __future__ import annotations

import argparse
import json
import sys

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
    from detcore.config_check import check_config, missing_file_problems, with_file

    cfg = load_config(args.config, args.cfg_options)
    # syntax, values and metrics (what no machine can fix); a test run's checks for a test-only config
    test = cfg.get("label_ids") == "coco"
    check_config(cfg, registries=False, files=False, test=test)
    print(json.dumps(cfg, indent=2) if args.json else dump_config(cfg), end="" if not args.json else "\n")
    sys.stdout.flush()
    for line in with_file(cfg, missing_file_problems(cfg, test=test)):  # data not downloaded yet: shown, not refused
        print(f"detcore config: warning: {line} (a training run here would refuse this)", file=sys.stderr)
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
