"""The ``detcore`` command: one subcommand per module in ``detcore.tools``.

Each tool module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. Only the chosen
subcommand's module is imported, and tool modules import torch inside ``run``, so ``detcore
--help`` and every ``detcore COMMAND --help`` start without torch (a unit test checks).
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from detcore.contract import EXIT_USER_ERROR
from detcore.errors import DetcoreError
from detcore.tools.log_format import configure_console

# subcommand -> (module, one-line help)
COMMANDS = {
    "config": ("detcore.tools.config_tool", "print the fully resolved config"),
    "train": ("detcore.tools.train", "train a detector (single process or under torchrun)"),
    "test": ("detcore.tools.test", "run a checkpoint over the test split and evaluate"),
    "infer": ("detcore.tools.infer", "run a checkpoint over image files or a folder"),
    "eval": ("detcore.tools.eval_tool", "evaluate a COCO results file (COCOeval: faster-coco-eval or pycocotools)"),
    "shapes": ("detcore.tools.shapes", "write the embedded synthetic shapes dataset"),
    "convert": ("detcore.tools.convert", "convert VOC, Cityscapes or VIA annotations to COCO json"),
    "demo": ("detcore.tools.demo", "annotate a video file or a webcam stream"),
    "analyze": ("detcore.tools.analyze", "analysis plots of a checkpoint (confusion matrix)"),
    "browse": ("detcore.tools.browse", "draw the ground truth on a split's images after the pipeline"),
    "model": ("detcore.tools.model", "list the pretrained models usable by name, or download them ahead"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detcore", description="detcore: object detection library tools",
                                     allow_abbrev=False)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    argv = sys.argv[1:]
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).add_parser(sub, name, help_text)
        else:  # only its line in ``detcore --help``: its module is not imported
            sub.add_parser(name, help=help_text)
    for p in sub.choices.values():  # --show must never be read as --show-dir, nor --resume-from as --resume
        p.allow_abbrev = False
    return parser


class VersionAction(argparse.Action):
    """``--version``: looks the version up only when asked (package metadata is read from disk)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print detlaunch's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    """``detcore (detlaunch) X.Y.Z``, from the installed package's metadata.

    torch's version is left out on purpose: finding it costs importing torch (seconds), and
    ``--version`` should answer as fast as ``--help``; ``detcore config show`` or ``pip show
    torch`` tell it.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"detcore (detlaunch) {version('detlaunch')}"
    except PackageNotFoundError:
        return "detcore (detlaunch, not installed: running from a source tree)"


def one_line(exc: BaseException) -> str:
    """The message of a user error as one line (a DataLoader worker wraps it in a traceback)."""
    text = str(exc).strip()
    if "Traceback" in text:
        text = re.sub(r"^[\w.]*Error: ", "", text.splitlines()[-1])
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    os.umask(os.umask(0) | 0o022)  # nothing detcore writes is group- or world-writable, even under umask 000
    parser = build_parser()
    args = parser.parse_args()
    configure_console(args.log_level)
    module = importlib.import_module(COMMANDS[args.command][0])
    failed = True  # until run returns 0: a failing rank aborts its NCCL group (its peers may be gone)
    try:
        code = int(module.run(args) or 0)
        failed = code != 0
        return code
    except DetcoreError as exc:
        for line in getattr(exc, "problems", None) or [one_line(exc)]:
            print(f"detcore {args.command}: error: {one_line(line)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"detcore {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if "detcore.engine.dist" in sys.modules:  # only commands that run torch load it (eval stays torch-free)
            sys.modules["detcore.engine.dist"].shutdown_distributed(failed=failed)


def console(argv: list[str] | None = None) -> int:
    """The ``detcore`` program (its console script and ``python -m detcore.tools.cli``): :func:`main`, then the
    process exits without the interpreter's final cycle collection (:mod:`detcore.shutdown`). :func:`main` itself
    leaves the process as it was, for callers that go on (a Ray worker, tests)."""
    code = main(argv)
    from detcore.shutdown import skip_exit_collection

    skip_exit_collection()
    return code


if __name__ == "__main__":
    sys.exit(console())
