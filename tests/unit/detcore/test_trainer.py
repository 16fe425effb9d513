"""Trainer pieces on a tiny CPU job: one-step training with a user module, LR schedules, failure modes."""
from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch

from detcore.config import load_config
from detcore.engine.optim import lr_factor_fn
from detcore.engine.trainer import Trainer, latest_checkpoint
from detcore.errors import CheckpointError, ConfigError, TrainingError
from detcore.tools.cli import main as detcore_main

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
FAST = ["data.samples_per_gpu=2", "auto_scale_lr.enable=false", "data.workers_per_gpu=0", "log_config.interval=1"]


def test_custom_imports_example_trains_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # user modules are importable from the working directory
    code = detcore_main(["train", "configs/examples/faster_rcnn_tiny_augfpn_shapes.yaml", "--work-dir", str(tmp_path),
                         "--no-validate", "--cfg-options", "runner.max_iters=1", *FAST])
    assert code == 0
    ckpt = torch.load(tmp_path / "iter_1.pth", weights_only=True)
    assert "backbone.fpn.rfa_convs.0.weight" in ckpt["state_dict"]  # the user's AugFPN was built


def test_step_schedule_with_linear_warmup_table() -> None:
    f = lr_factor_fn({"policy": "step", "step": [8, 11], "gamma": 0.1, "warmup": "linear", "warmup_iters": 500,
                      "warmup_ratio": 0.001}, iters_per_epoch=100, by_epoch=True, max_units=12)
    assert f(0) == pytest.approx(0.001)
    assert f(250) == pytest.approx(0.001 + 0.999 * 0.5)
    assert f(500) == 1.0 and f(799) == 1.0
    assert f(800) == pytest.approx(0.1) and f(1100) == pytest.approx(0.01)
    cos = lr_factor_fn({"policy": "cosine", "min_lr_ratio": 0.1}, iters_per_epoch=10, by_epoch=False, max_units=100)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.55) and cos(100) == pytest.approx(0.1)


def test_non_finite_loss_stops_with_iteration_and_terms(tmp_path: Path) -> None:
    cfg = load_config(SHAPES, ["runner.max_iters=4", "checkpoint_config.interval=2", *FAST])
    trainer = Trainer(cfg, tmp_path, validate=False)
    real_forward = trainer.model.forward
    calls = {"n": 0}

    def forward(images, targets=None):
        losses = real_forward(images, targets)
        calls["n"] += 1
        if calls["n"] == 3:
            losses["loss_classifier"] = losses["loss_classifier"] * float("nan")
        return losses

    trainer.model.forward = forward
    with pytest.raises(TrainingError, match=r"non-finite loss at iteration 3: .*loss_classifier=nan"):
        trainer.train()
    assert latest_checkpoint(tmp_path) == tmp_path / "iter_2.pth"


def test_resume_picks_newest_good_checkpoint_and_refuses_weights_only(tmp_path: Path) -> None:
    cfg = load_config(SHAPES, ["runner.max_iters=2", "checkpoint_config.interval=1", *FAST])
    Trainer(cfg, tmp_path, validate=False).train()
    assert latest_checkpoint(tmp_path) == tmp_path / "iter_2.pth"
    (tmp_path / "iter_2.pth").write_bytes(b"torn")  # e.g. a disk error after the pointer was written
    assert latest_checkpoint(tmp_path) == tmp_path / "iter_1.pth"
    weights_only = tmp_path / "weights.pth"
    data = torch.load(tmp_path / "iter_1.pth", weights_only=True)
    torch.save({"meta": data["meta"], "state_dict": data["state_dict"]}, weights_only)
    with pytest.raises(CheckpointError, match="holds weights only.*--load-from"):
        Trainer(cfg, tmp_path / "other", validate=False, resume=str(weights_only))


def test_num_classes_must_match_dataset(tmp_path: Path) -> None:
    cfg = load_config(SHAPES, ["model.num_classes=5", *FAST])
    with pytest.raises(Exception, match=r"model.num_classes is 5 but the dataset has 3 classes"):
        Trainer(cfg, tmp_path, validate=False)


def test_training_evaluates_voc_map_and_keeps_its_work_dir(tmp_path: Path) -> None:
    """``evaluation.metric: [bbox, mAP]`` evaluates both during training (it used to fail at the end and delete
    the work dir)."""
    code = detcore_main(["train", str(SHAPES), "--work-dir", str(tmp_path), "--cfg-options", "runner.max_iters=2",
                         "evaluation.metric=[bbox, mAP]", "+evaluation.voc_method=11points",
                         "checkpoint_config.save_best=mAP", "data.train.num_train=8", "data.train.num_val=4",
                         "data.val.num_train=8", "data.val.num_val=4",
                         "evaluation.interval=2", *FAST])
    assert code == 0
    val = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"val"' in x][-1]
    assert 0.0 <= val["mAP"] <= 1.0 and "bbox_AP" in val and any(k.startswith("mAP_AP_") for k in val)
    assert (tmp_path / "iter_2.pth").is_file() and (tmp_path / "best_mAP.pth").is_file()
    # what the launcher estimates later runs and shows a running job's ETA from
    train = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert train[0]["eta_s"] is None and train[-1]["eta_s"] == 0.0  # estimating after one iteration; done
    assert isinstance(val["eval_time"], float) and val["eval_time"] > 0


def test_amp_from_the_config_is_read_like_the_flag(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``amp: true`` (what MMDetection's AmpOptimWrapper and fp16 import to) asks for mixed precision as
    --amp does; on a CPU it says so and trains in full precision."""
    import logging

    with caplog.at_level(logging.WARNING):
        trainer = Trainer(load_config(SHAPES, [*FAST, "amp=true"]), tmp_path, validate=False)
    on_gpu = trainer.dist.device.type == "cuda"
    assert trainer.amp is on_gpu and trainer.scaler.is_enabled() is on_gpu
    assert on_gpu or "mixed precision (--amp, amp: true) needs a CUDA device" in caplog.text
    with pytest.raises(ConfigError, match="amp must be true or false"):
        load_config(SHAPES, ["amp=yes please"])


def test_scalars_leave_out_coordinates_flags_and_pycocotools_unmeasured() -> None:
    from detcore.engine.metrics_log import scalar_values

    val = {"mode": "val", "epoch": 1, "iter": 20, "bbox_AP": 0.5, "bbox_APl": -1.0, "bbox_ARl": -1, "ok": True,
           "name": "x"}
    assert scalar_values(val, "val") == {"val/bbox_AP": 0.5}
    train = {"mode": "train", "iter": 20, "loss": -1.0, "lr": 0.02}  # -1 is only a sentinel in evaluations
    assert scalar_values(train, "train") == {"train/loss": -1.0, "train/lr": 0.02}
    assert scalar_values({**train, "eta_s": 12.5}, "train") == {"train/loss": -1.0, "train/lr": 0.02}
