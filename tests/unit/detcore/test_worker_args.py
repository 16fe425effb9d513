"""``detcore.contract.WorkerArgs``: the worker's arguments as one value. What the launcher writes (``to_argv``) is
what detcore's own ``train``/``test`` parsers read back (``from_namespace``), field for field, and every field
has its flag, so a new one reaches both sides from its one line in the table."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from detcore import contract
from detcore.contract import TEST, TRAIN, WorkerArgs
from detcore.tools import test as test_tool
from detcore.tools import train as train_tool

TRAIN_FULL = WorkerArgs(config="/c.yaml", work_dir="/w", device="cuda:1", resume="/w/iter_8.pth", seed=7, amp=True,
                        deterministic=True, load_from="torchvision://fasterrcnn_resnet50_fpn", validate=False,
                        cfg_options=("optimizer.lr=0.01", "data.samples_per_gpu=4"))
TEST_FULL = WorkerArgs(mode=TEST, config="/c.yaml", checkpoint="/w/latest.pth", work_dir="/w", out="/w/results.json",
                       device="cpu", eval=("bbox", "segm"), cfg_options=("data.workers_per_gpu=0",))


def parse(argv: tuple[str, ...]) -> WorkerArgs:
    """``argv`` through detcore's own ``train``/``test`` parsers (the ones ``detcore`` builds)."""
    parser = argparse.ArgumentParser(prog="detcore")
    sub = parser.add_subparsers(dest="command")
    train_tool.add_parser(sub, TRAIN, "train")
    test_tool.add_parser(sub, TEST, "test")
    return WorkerArgs.from_namespace(parser.parse_args(list(argv)))


def _varied(mode: str) -> list[WorkerArgs]:
    """One value per field of ``mode``: every other field at its default, this one set."""
    base = WorkerArgs(mode=mode, config="/c.yaml", checkpoint="/k.pth" if mode == TEST else None)
    values = {"work_dir": "/w", "out": "/o.json", "device": "cpu", "resume": "auto", "seed": 0, "amp": True,
              "deterministic": True, "load_from": "/l.pth", "validate": False, "eval": (), "cfg_options": ("a=1",)}
    return [dataclasses.replace(base, **{name: values[name]}) for name, flag in WorkerArgs.flags(mode)
            if flag["option"]]


@pytest.mark.parametrize("args", [TRAIN_FULL, TEST_FULL, WorkerArgs(config="c.yaml"),
                                  WorkerArgs(config="c.yaml", resume="auto"), WorkerArgs(mode=TEST, config="c",
                                                                                        checkpoint="k", eval=("bbox",)),
                                  *_varied(TRAIN), *_varied(TEST)])
def test_argv_reads_back_through_detcores_parser_as_the_same_value(args):
    assert parse(args.to_argv()) == args


def test_cfg_options_come_last_and_values_that_look_like_flags_survive():
    argv = TRAIN_FULL.to_argv()
    assert argv[:2] == ("train", "/c.yaml") and argv[-3:] == ("--cfg-options", *TRAIN_FULL.cfg_options)
    odd = WorkerArgs(config="c.yaml", work_dir="/w w/x", cfg_options=("model.note=--amp",))
    assert parse(odd.to_argv()) == odd
    test = TEST_FULL.to_argv()
    assert test[:3] == ("test", "/c.yaml", "/w/latest.pth") and test[-2:] == ("--cfg-options", "data.workers_per_gpu=0")


def test_a_field_of_the_other_mode_is_left_out():
    assert "--amp" not in dataclasses.replace(TEST_FULL, amp=True).to_argv()
    assert "--eval" not in dataclasses.replace(TRAIN_FULL, eval=("bbox",)).to_argv()


def test_every_field_has_a_flag_and_each_flag_reaches_argv_and_both_parsers():
    names = {f.name for f in dataclasses.fields(WorkerArgs)} - {"mode"}
    assert names == {name for name, _ in WorkerArgs.flags()}, "a WorkerArgs field without its _flag() metadata"
    parsers = {}
    for mode in (TRAIN, TEST):
        parser = argparse.ArgumentParser()
        WorkerArgs.add_arguments(parser, mode)
        parsers[mode] = {a.dest for a in parser._actions}
    for mode in (TRAIN, TEST):
        for args in _varied(mode):
            changed = next(n for n in names if getattr(args, n) != getattr(WorkerArgs(mode=mode), n)
                           and n not in ("config", "checkpoint"))
            option = dict(WorkerArgs.flags())[changed]["option"]
            assert option in args.to_argv(), (mode, changed)
            assert changed in parsers[mode], (mode, changed)


def test_the_parsers_keep_their_help_and_defaults():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    train_tool.add_parser(sub, TRAIN, "train")
    text = sub.choices[TRAIN].format_help()
    for option in ("--resume [auto|PATH]", "--load-from", "--no-validate", "--amp", "--seed", "--deterministic",
                   "--device", "--work-dir", "--cfg-options KEY=VALUE [KEY=VALUE ...]"):
        assert option in text
    assert "mixed precision (CUDA only)" in text and f"0..{contract.SEED_MAX} (default 0)" in text
    bare = parse(("train", "c.yaml"))
    assert bare == WorkerArgs(config="c.yaml") and parse(("train", "c.yaml", "--resume")).resume == "auto"
    with pytest.raises(SystemExit):
        parse(("train", "c.yaml", "--seed", "-1"))


def test_json_round_trip_and_unknown_keys_of_a_newer_writer():
    for args in (TRAIN_FULL, TEST_FULL):
        assert WorkerArgs.from_dict(json.loads(json.dumps(args.to_dict()))) == args
    assert WorkerArgs.from_dict({"config": "c.yaml", "some_future_flag": True}) == WorkerArgs(config="c.yaml")
    with pytest.raises(ValueError, match="mode"):
        WorkerArgs(mode="eval")


def test_a_new_field_in_the_table_reaches_argv_both_parsers_and_the_records():
    """What adding a worker flag takes: one field with its ``_flag`` (a subclass stands in for the edit)."""
    extra = dataclasses.make_dataclass("WithSplit", [("split", "str | None", dataclasses.field(
        default=None, metadata=contract._flag("--split", "the split", submit={})))], bases=(WorkerArgs,), frozen=True)
    args = extra(config="c.yaml", split="val", cfg_options=("a=1",))
    assert args.to_argv() == ("train", "c.yaml", "--split", "val", "--cfg-options", "a=1")
    parser = argparse.ArgumentParser()
    extra.add_arguments(parser, TRAIN)
    assert extra.from_namespace(parser.parse_args(list(args.to_argv()[1:])), TRAIN) == args
    submit = argparse.ArgumentParser()
    extra.add_submit_arguments(submit)
    assert "split" in extra.submit_fields() and submit.parse_args(["--split", "val"]).split == "val"
    assert extra.from_dict(json.loads(json.dumps(args.to_dict()))) == args and extra.option("split") == "--split"
