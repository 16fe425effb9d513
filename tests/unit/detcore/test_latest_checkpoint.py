"""``latest.pth`` in every work dir, accepted wherever a checkpoint is; ``model.show_result`` as in MMDetection."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detcore.apis import inference_detector, init_detector
from detcore.checkpoint import point_latest
from detcore.config import load_config
from detcore.engine.trainer import Trainer
from detcore.errors import DataError

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
TINY = ["data.samples_per_gpu=2", "auto_scale_lr.enable=false", "data.workers_per_gpu=0", "log_config.interval=1",
        "checkpoint_config.interval=1", "checkpoint_config.max_keep=1", "data.train.num_train=8",
        "data.train.num_val=4"]


def test_latest_survives_the_clean_up_resumes_and_loads_for_inference(tmp_path: Path) -> None:
    Trainer(load_config(SHAPES, ["runner.max_iters=2", *TINY]), tmp_path, validate=False, device="cpu").train()
    latest = tmp_path / "latest.pth"
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["iter_2.pth", "latest.pth"]  # max_keep 1 kept it
    assert latest.resolve() == (tmp_path / "iter_2.pth").resolve()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    resumed = Trainer(load_config(SHAPES, ["runner.max_iters=3", *TINY]), tmp_path / "more", validate=False,
                      device="cpu", resume=str(latest))
    assert resumed.iter == 2
    resumed.train()
    assert torch.load(tmp_path / "more" / "latest.pth", weights_only=True)["meta"]["iter"] == 3

    model = init_detector(None, latest)  # the config comes from the checkpoint's meta
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    out = tmp_path / "shown.png"
    drawn = model.show_result(img, inference_detector(model, img), score_thr=0.0, out_file=out, thickness=2)
    assert drawn.shape == (512, 512, 3) and Image.open(out).size == (512, 512)  # small images drawn readable
    same_size = model.show_result(img, inference_detector(model, img), score_thr=0.0, min_side=0)
    assert same_size.shape == (64, 64, 3)  # MMDetection's size, when asked for
    with pytest.raises(DataError, match="no display here"):
        model.show_result(img, inference_detector(model, img), show=True)


def test_point_latest_replaces_and_falls_back_to_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "iter_1.pth").write_bytes(b"one")
    (tmp_path / "iter_2.pth").write_bytes(b"two")
    point_latest(tmp_path, "iter_1.pth")
    point_latest(tmp_path, "iter_2.pth")
    assert (tmp_path / "latest.pth").read_bytes() == b"two" and os.readlink(tmp_path / "latest.pth") == "iter_2.pth"

    def refuse(*args, **kwargs):
        raise OSError("not supported on this file system")

    monkeypatch.setattr(os, "symlink", refuse)
    monkeypatch.setattr(os, "link", refuse)
    point_latest(tmp_path, "iter_1.pth")
    assert not (tmp_path / "latest.pth").is_symlink() and (tmp_path / "latest.pth").read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_1.pth", "iter_2.pth", "latest.pth"]
