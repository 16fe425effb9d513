"""The run's one metrics writer: metrics.jsonl, TensorBoard scalars read back with TensorBoard's
reader, the experiment loggers' sinks, and the newest evaluation for save_best."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pytest

from detcore.contract import WorkDir
from detcore.engine.hooks import HookBase
from detcore.engine.metrics_log import MetricsLog
from detcore.registry import HOOKS

SHAPES = Path(__file__).resolve().parents[3] / "configs/shapes/faster_rcnn_tiny_shapes.yaml"


def lines(work: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in WorkDir(work).metrics.read_text().splitlines()]


def scalars(work: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(work / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_records_go_to_the_metrics_file_tensorboard_and_each_sink_once(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, writes=True)
    log.open_tensorboard(0, "model: {}")
    sent: list[tuple[dict, str, int]] = []
    log.add_sink(lambda record, prefix, step: sent.append((dict(record), prefix, step)))
    log.log_training({"loss": 0.75, "lr": 0.02, "eta_s": 12.5}, epoch=0, step=10)
    log.log_validation({"bbox_AP": 0.5, "bbox_APl": -1.0}, epoch=0, step=10, extra={"eval_time": 3.0})
    log.write({"custom": 2.0}, "mine", 12)
    log.close({"optimizer.lr": 0.02}, 12)
    assert lines(tmp_path) == [
        {"mode": "train", "epoch": 0, "iter": 10, "loss": 0.75, "lr": 0.02, "eta_s": 12.5},
        {"mode": "val", "epoch": 0, "iter": 10, "bbox_AP": 0.5, "bbox_APl": -1.0, "eval_time": 3.0},
        {"custom": 2.0},
    ]
    assert sent == [(record, prefix, step) for record, prefix, step in
                    zip(lines(tmp_path), ["train", "val", "mine"], [10, 10, 12])]
    # the ETA and pycocotools' -1 ("nothing to measure") are in the file, not plotted
    assert scalars(tmp_path) == {"train/loss": [(10, 0.75)], "train/lr": [(10, 0.02)], "val/bbox_AP": [(10, 0.5)],
                                 "val/eval_time": [(10, 3.0)], "mine/custom": [(12, 2.0)]}


def test_the_newest_evaluation_is_kept_without_its_wall_time(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, writes=True)
    assert log.latest_validation == {} and log.latest("bbox_AP") is None
    log.log_validation({"bbox_AP": 0.5, "bbox_AP50": 0.7}, epoch=1, step=10, extra={"eval_time": 3.0})
    log.log_validation({"bbox_AP": 0.4, "bbox_AP50": 0.8}, epoch=2, step=20, extra={"eval_time": 2.0})
    log.log_training({"loss": 0.5}, epoch=2, step=21)  # a training record does not replace it
    assert log.latest_validation == {"bbox_AP": 0.4, "bbox_AP50": 0.8}
    assert log.latest("bbox_AP") == 0.4 and log.latest("segm_AP") is None


def test_a_sink_that_raises_stops_the_record_there_after_the_metrics_file(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, writes=True)
    later: list[Mapping[str, Any]] = []

    def broken(record: Mapping[str, Any], prefix: str, step: int) -> None:
        raise RuntimeError("dashboard down")

    log.add_sink(broken)
    log.add_sink(lambda record, prefix, step: later.append(record))
    with pytest.raises(RuntimeError, match="dashboard down"):
        log.log_training({"loss": 0.5}, epoch=0, step=1)
    assert lines(tmp_path) == [{"mode": "train", "epoch": 0, "iter": 1, "loss": 0.5}] and later == []


def test_ranks_that_do_not_write_write_nothing(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, writes=False)
    calls: list[Any] = []
    log.add_sink(lambda *args: calls.append(args))
    log.open_tensorboard(0, "")
    log.log_training({"loss": 0.5}, epoch=0, step=1)
    log.log_validation({"bbox_AP": 0.5}, epoch=0, step=1)
    log.add_images("val/prediction", [], 1)
    log.close({}, 1)
    assert not log.shows_images and log.latest_validation == {} and calls == []
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_run_hides_the_steps_it_logs_again(tmp_path: Path) -> None:
    first = MetricsLog(tmp_path, writes=True)
    first.open_tensorboard(0, "")
    for step in (1, 2, 3):
        first.log_training({"loss": float(step)}, epoch=0, step=step)
    first.close(None, 3)
    resumed = MetricsLog(tmp_path, writes=True)
    resumed.open_tensorboard(3, "")  # resumed from a checkpoint at step 2
    resumed.log_training({"loss": 30.0}, epoch=0, step=3)
    resumed.close(None, 3)
    assert scalars(tmp_path)["train/loss"] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert [r["loss"] for r in lines(tmp_path)] == [1.0, 2.0, 3.0, 30.0]  # the file keeps every record


@HOOKS.register()
class WeightNormHook(HookBase):
    """docs/training.md's example of a user's hook that logs a value."""

    def after_step(self) -> None:
        t = self.trainer
        if t.iter % 2 == 0:
            norm = sum(float(p.detach().norm()) ** 2 for p in t.model.parameters()) ** 0.5
            t.metrics.write({"mode": "weights", "iter": t.iter, "norm": norm}, "weights", t.iter)


def test_a_users_hook_logs_through_the_metrics_log_of_a_real_run(tmp_path: Path) -> None:
    from detcore.config import load_config
    from detcore.engine.trainer import Trainer

    cfg = load_config(SHAPES, ["runner.max_iters=4", "data.samples_per_gpu=2", "auto_scale_lr.enable=false",
                               "data.workers_per_gpu=0", "log_config.interval=2", "data.train.num_train=8",
                               "custom_hooks=[{type: WeightNormHook}]"])
    Trainer(cfg, tmp_path, validate=False).train()
    records = lines(tmp_path)
    assert [(r["mode"], r["iter"]) for r in records] == [("train", 2), ("weights", 2), ("train", 4), ("weights", 4)]
    assert all(r["norm"] > 0 for r in records if r["mode"] == "weights")
    plotted = scalars(tmp_path)
    assert [step for step, _ in plotted["weights/norm"]] == [2, 4] and [s for s, _ in plotted["train/loss"]] == [2, 4]
