"""Heartbeats for the hang watchdog: rate-limited writes, and liveness through a tiny CPU run and its evaluation."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from detcore.config import load_config
from detcore.contract import read_heartbeat
import detcore.evaluation.coco_eval
from detcore.engine.heartbeat import Heartbeat, beating
from detcore.engine.hooks import HookBase
from detcore.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
SPLITS = ("train", "val", "test")
TINY = ["data.samples_per_gpu=2", "auto_scale_lr.enable=false", "data.workers_per_gpu=0", "log_config.interval=1",
        *(f"data.{s}.num_train=40" for s in SPLITS), *(f"data.{s}.num_val=4" for s in SPLITS)]


def test_writes_are_rate_limited_unless_forced(tmp_path: Path) -> None:
    now = [100.0]
    hb = Heartbeat(tmp_path / "hb", rank=3, clock=lambda: now[0])
    assert hb.beat(1) and read_heartbeat(tmp_path / "hb", 3)[0] == 1
    now[0] += 0.1
    assert not hb.beat(2) and read_heartbeat(tmp_path / "hb", 3)[0] == 1  # too soon: skipped
    assert hb.beat(2, force=True) and read_heartbeat(tmp_path / "hb", 3)[0] == 2
    now[0] += Heartbeat.min_interval
    assert hb.beat(5) and read_heartbeat(tmp_path / "hb", 3)[0] == 5  # slow iterations write every time


def test_a_heartbeat_says_what_the_rank_is_doing(tmp_path: Path) -> None:
    hb = Heartbeat(tmp_path / "hb", rank=0)
    hb.beat(7)
    assert read_heartbeat(tmp_path / "hb", 0)[::2] == (7, "training")
    hb.enter("evaluating", 8)
    beat = read_heartbeat(tmp_path / "hb", 0)
    assert (beat.iteration, beat.phase) == (8, "evaluating") and beat.time > 0
    (tmp_path / "hb" / "rank1").write_text("3 1700000000.5\n")  # the two-field form an older worker writes
    assert read_heartbeat(tmp_path / "hb", 1) == (3, 1700000000.5, "training")


def test_unwritable_directory_never_raises(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    Heartbeat(tmp_path / "file" / "hb", rank=0).beat(1)  # a full or broken disk must not stop training


class Probe(HookBase):
    """Reads the heartbeat file after each iteration, as the watchdog would."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.seen = directory, []

    def after_step(self) -> None:
        self.seen.append(read_heartbeat(self.directory, 0)[0])


def test_heartbeat_advances_every_iteration_and_during_coco_eval(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    hb = tmp_path / "hb"
    monkeypatch.setattr(Heartbeat, "min_interval", 0.0)  # see every iteration (the real limit is 0.5 s)
    real_eval = detcore.evaluation.coco_eval.evaluate_coco
    refreshed, phases = [], []

    def slow_coco_eval(*args, **kwargs):
        """A COCOeval long enough that a watchdog would look: the file must still be rewritten meanwhile."""
        before = read_heartbeat(hb, 0)
        deadline = time.monotonic() + 30
        while read_heartbeat(hb, 0) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        refreshed.append(read_heartbeat(hb, 0) != before)
        phases.append(read_heartbeat(hb, 0).phase)
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(detcore.evaluation.coco_eval, "evaluate_coco", slow_coco_eval)
    cfg = load_config(SHAPES, ["runner.max_iters=4", "checkpoint_config.interval=4", "evaluation.interval=4",
                               "checkpoint_config.save_best=null", *TINY])
    trainer = Trainer(cfg, tmp_path / "work", validate=True, heartbeat_dir=hb)
    probe = Probe(hb)
    trainer.hooks.insert(0, probe)
    trainer.train()
    assert probe.seen == [1, 2, 3, 4]
    assert refreshed == [True]
    assert phases == ["evaluating"]  # what a monitor shows as the job's stage meanwhile
    assert read_heartbeat(hb, 0).iteration == 4 and read_heartbeat(hb, 0).phase == "training"
    assert (tmp_path / "work/iter_4.pth").is_file()


def test_no_heartbeat_directory_means_no_files(tmp_path: Path) -> None:
    cfg = load_config(SHAPES, ["runner.max_iters=1", *TINY])
    Trainer(cfg, tmp_path / "work", validate=False).train()
    assert not list(tmp_path.rglob("rank0"))


def test_beating_calls_until_the_block_ends() -> None:
    calls = []
    with beating(lambda: calls.append(1), every=0.01):
        deadline = time.monotonic() + 30
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    n = len(calls)
    assert n >= 3
    time.sleep(0.05)
    assert len(calls) == n  # the helper thread has stopped
    with beating(None):
        pass
