"""JobSpec/Resources validation and the JSON round trip the store relies on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcore.contract import WorkerArgs
from launcher.backends.local import LocalOptions
from launcher.jobs import request_from_spec
from launcher.runtime.command import worker_args
from launcher.errors import LauncherError
from launcher.scaling import scale_for_world
from launcher.spec import JobSpec, JobState, Mode, Resources, SlotPool, spec_from_dict, spec_to_dict


def make(**kw) -> JobSpec:
    base = dict(id="0123abcd", name="shapes", config="/c.yaml", work_dir="/w", cwd="/")
    base.update(kw)
    return JobSpec(**base)


def test_states_terminal():
    assert {s for s in JobState if s.is_terminal()} == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    with pytest.raises(LauncherError, match="choose one of queued, pending"):
        JobState.parse("done")


@pytest.mark.parametrize("kw,match", [
    (dict(nproc=0), "nproc"),
    (dict(gpus=-1), "gpus"),
    (dict(gpus=2, nproc=4), "each GPU runs one worker"),
    (dict(nodes=0), "nodes"),
    (dict(mem_gb=0), "mem_gb"),
    (dict(nproc=True), "nproc"),
])
def test_resources_reject(kw, match):
    with pytest.raises(LauncherError, match=match):
        Resources(**kw)


def test_world_size():
    assert Resources(nproc=2, nodes=3).world_size == 6
    assert Resources(nproc=4, gpus=4).world_size == 4


@pytest.mark.parametrize("kw,match", [
    (dict(id="XYZ"), "8 lowercase hex"),
    (dict(name="a b"), "may only hold"),
    (dict(name="x;rm -rf ~"), "may only hold"),
    (dict(name="-rf"), "may only hold"),
    (dict(mode=Mode.TEST), "needs a checkpoint"),
    (dict(eval_metrics=("bbox",)), "belong to test jobs"),
    (dict(max_restarts=-1), "max_restarts"),
    (dict(worker_module="x; y"), "not a Python module"),
    (dict(backend_options={"wait": False}), "options dataclass"),
])
def test_spec_rejects(kw, match):
    with pytest.raises(LauncherError, match=match):
        make(**kw)


def test_spec_round_trip():
    cfg = {"optimizer": {"lr": 0.02}, "runner": {"type": "IterBasedRunner", "max_iters": 10},
           "auto_scale_lr": {"enable": True, "base_batch_size": 4, "scale_schedule": True}}
    spec = make(overrides=("a.b=1",), resources=Resources(nproc=2), backend_options=LocalOptions(wait=False),
                scaling=scale_for_world(cfg, 2, 4), slots=SlotPool("feedbeef", 2),
                worker=WorkerArgs(seed=3, resume="/ck.pth"))
    assert spec_from_dict(spec_to_dict(spec), LocalOptions) == spec
    test = make(mode=Mode.TEST, checkpoint="/c.pth", eval_metrics=("bbox", "segm"))
    assert spec_from_dict(spec_to_dict(test), LocalOptions) == test


RECORDED = Path(__file__).parent / "recorded" / "spec_json_flat_worker_flags.json"


def test_a_spec_json_with_flat_worker_flags_still_reads_and_runs_the_same_worker():
    """``recorded/spec_json_flat_worker_flags.json``: a train and a test ``spec.json`` as the launcher wrote them
    while the worker flags were the spec's own fields (``resume``, ``seed``, ``amp``, ...), and the worker argv
    that launcher ran for each."""
    recorded = json.loads(RECORDED.read_text())
    train = spec_from_dict(recorded["train"], LocalOptions)
    assert train.worker == WorkerArgs(config=train.config, work_dir=train.work_dir, resume=None, seed=7, amp=True,
                                      deterministic=True, load_from="/home/u/latest.pth", validate=False,
                                      cfg_options=("optimizer.lr=0.01", "runner.max_iters=40"))
    test = spec_from_dict(recorded["test"], LocalOptions)
    assert test.mode is Mode.TEST and test.worker.eval == ("bbox",) and test.worker.checkpoint == "/home/u/latest.pth"
    for name, spec in (("train", train), ("test", test)):
        assert list(worker_args(spec)) == recorded["argv"][name]
        assert spec_from_dict(spec_to_dict(spec), LocalOptions) == spec  # and it is written back in the new shape
        assert "seed" not in spec_to_dict(spec) and spec_to_dict(spec)["worker"]["config"] == spec.config
    assert request_from_spec(train).resume == "never" and request_from_spec(train).worker.seed == 7
