"""Flags from MMDetection's ``tools/train.py``/``tools/test.py`` (2.x) and torchrun habits, answered with a hint.

Each such flag is accepted by the parser only to say, in one line and with exit status 2, what
to type instead (``--resume-from`` -> ``--resume PATH``). Flags with the same name and meaning
(``--work-dir``, ``--cfg-options``, ``--no-validate``, ``--seed``, ``--deterministic``,
``--eval``, ``--show-dir``, ``--out``) are real options and are not listed here. The hints are
hidden from ``--help``; docs/mmdetection.md's flag table lists them.
"""
from __future__ import annotations

import argparse
from typing import Mapping

_GPUS = ("detcore trains on the processes it is started as: run torchrun --nproc-per-node N -m detcore.tools.cli "
         "train CONFIG (one GPU each) or launcher submit CONFIG --gpus N; --device cuda:N picks one GPU")
_LAUNCHER = ("start detcore with torchrun --nproc-per-node N -m detcore.tools.cli train CONFIG, or let the launcher "
             "start it: launcher submit CONFIG --backend local|slurm|ray --gpus N (or --nproc N on CPUs)")
_LOCAL_RANK = ("detcore reads LOCAL_RANK from the environment: start it with torchrun (not torch.distributed.launch) "
               "and drop --local_rank")
_OPTIONS = "use --cfg-options KEY=VALUE ... (the same syntax)"

TRAIN_HINTS: dict[str, str] = {
    "--resume-from": "use --resume PATH (or --resume alone for the newest checkpoint in the work dir)",
    "--auto-resume": "use --resume with no value: it continues from the newest checkpoint in the work dir",
    "--gpus": _GPUS, "--gpu-ids": _GPUS, "--gpu-id": _GPUS,
    "--launcher": _LAUNCHER, "--local_rank": _LOCAL_RANK, "--local-rank": _LOCAL_RANK,
    "--options": _OPTIONS,
    "--diff-seed": "each rank already draws its own seed from --seed (rank-dependent); drop --diff-seed",
    "--auto-scale-lr": ("detcore always applies auto_scale_lr when the config enables it, at the world size it runs "
                        "at; turn it on with --cfg-options auto_scale_lr.enable=true auto_scale_lr.base_batch_size=N"),
}

TEST_HINTS: dict[str, str] = {
    "--show": "there is no display here; use --show-dir DIR to write every image with its predictions drawn",
    "--show-score-thr": "use --score-thr (the threshold for --show-dir, default 0.3)",
    "--eval-options": ("detcore test takes --voc-method area|11points for mAP and always prints per-class AP; "
                       "other evaluation settings go in --cfg-options evaluation.KEY=VALUE"),
    "--format-only": "use --out results.json --eval with no metric: the COCO results file is written, nothing "
                     "is evaluated",
    "--fuse-conv-bn": "detcore's models have no conv-BN pair to fuse (their BN is frozen or GroupNorm); drop it",
    "--gpu-collect": "results are gathered over torch.distributed without a temporary folder; drop --gpu-collect",
    "--tmpdir": "results are gathered over torch.distributed without a temporary folder; drop --tmpdir",
    "--gpu-ids": _GPUS.replace(" train ", " test "), "--gpu-id": _GPUS.replace(" train ", " test "),
    "--launcher": _LAUNCHER.replace(" train ", " test "), "--local_rank": _LOCAL_RANK, "--local-rank": _LOCAL_RANK,
    "--options": _OPTIONS,
}


class _Hint(argparse.Action):
    """An option that exists only to say what to use instead (one line, exit status 2)."""

    def __init__(self, option_strings, dest, hint: str = "", origin: str = "", **kwargs) -> None:
        self.hint, self.origin = hint, origin
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs="*", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.exit(2, f"{parser.prog}: error: {option_string} is an option of {self.origin}, not of "
                       f"{parser.prog}; {self.hint}\n")


def add_hints(parser: argparse.ArgumentParser, hints: Mapping[str, str],
              origin: str = "MMDetection's tools/train.py and tools/test.py") -> None:
    """Add each flag of ``hints`` that ``parser`` does not already have, answering with its hint."""
    for flag, hint in hints.items():
        if flag not in parser._option_string_actions:
            parser.add_argument(flag, action=_Hint, hint=hint, origin=origin)
