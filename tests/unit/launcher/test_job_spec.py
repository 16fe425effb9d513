"""JobSpec/Resources validation and the JSON round trip the store relies on."""
from __future__ import annotations

import pytest

from launcher.backends.local import LocalOptions
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
                scaling=scale_for_world(cfg, 2, 4), slots=SlotPool("feedbeef", 2), seed=3, resume="/ck.pth")
    assert spec_from_dict(spec_to_dict(spec), LocalOptions) == spec
    test = make(mode=Mode.TEST, checkpoint="/c.pth", eval_metrics=("bbox", "segm"))
    assert spec_from_dict(spec_to_dict(test), LocalOptions) == test
