"""Every flag of MMDetection 2.28's tools/train.py and tools/test.py either works in detcore or says what to use."""
from __future__ import annotations

import sys

import pytest

from detcore.tools import cli
from launcher import cli as launcher_cli

# argparse flags of mmdet 2.28.2's .mim/tools/train.py and .mim/tools/test.py (the wheel's own files)
MMDET_TRAIN = ["--work-dir", "--resume-from", "--auto-resume", "--no-validate", "--gpus", "--gpu-ids", "--gpu-id",
               "--seed", "--diff-seed", "--deterministic", "--options", "--cfg-options", "--launcher", "--local_rank",
               "--auto-scale-lr"]
MMDET_TEST = ["--work-dir", "--out", "--fuse-conv-bn", "--gpu-ids", "--gpu-id", "--format-only", "--eval", "--show",
              "--show-dir", "--show-score-thr", "--gpu-collect", "--tmpdir", "--cfg-options", "--options",
              "--eval-options", "--launcher", "--local_rank"]
SAME = {"--work-dir", "--no-validate", "--seed", "--deterministic", "--cfg-options", "--out", "--eval", "--show-dir"}


def parse(argv: list[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "argv", ["detcore", *argv])
    return cli.build_parser().parse_args(argv)


@pytest.mark.parametrize("command,flag", [("train", f) for f in MMDET_TRAIN] + [("test", f) for f in MMDET_TEST])
def test_each_mmdetection_flag_works_or_names_its_replacement(command, flag, monkeypatch, capsys):
    head = ["train", "c.yaml"] if command == "train" else ["test", "c.yaml", "c.pth"]
    if flag in SAME:
        value = {"--seed": ["1"], "--cfg-options": ["a=1"], "--eval": ["bbox"]}.get(flag, ["x"])
        value = [] if flag in ("--no-validate", "--deterministic") else value
        parse([*head, flag, *value], monkeypatch)
        return
    with pytest.raises(SystemExit) as exit_:
        parse([*head, flag, "2"], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"detcore {command}: error: {flag} is an option of MMDetection's")
    assert "; use " in err[0] or "drop" in err[0] or "start detcore with" in err[0] or "runs on" in err[0] \
        or "trains on" in err[0] or "always" in err[0], err[0]


def test_show_is_not_an_abbreviation_of_show_dir(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parse(["test", "c.yaml", "c.pth", "--show"], monkeypatch)
    assert "use --show-dir DIR" in capsys.readouterr().err
    assert parse(["test", "c.yaml", "c.pth", "--show-dir", "out"], monkeypatch).show_dir == "out"
    with pytest.raises(SystemExit):
        parse(["train", "c.yaml", "--load"], monkeypatch)  # no prefix of --load-from is taken either


@pytest.mark.parametrize("argv,hint", [
    (["submit", "c.yaml", "--nproc-per-node", "2"], "use --nproc N"),
    (["submit", "c.yaml", "--resume-from", "a.pth"], "use --resume PATH"),
    (["sweep", "c.yaml", "--grid", "a=1,2", "--options", "a=1"], "use --cfg-options"),
    (["resume", "0123abcd", "--gpu-ids", "0", "1"], "use --gpus N"),
])
def test_launcher_answers_mmdetection_and_torchrun_habits(argv, hint, capsys):
    with pytest.raises(SystemExit) as exit_:
        launcher_cli.build_parser(argv[0]).parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and hint in err[0], err
