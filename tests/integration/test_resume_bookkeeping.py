"""What a resume leaves behind: TensorBoard shows each step once, and max_keep holds across resumes and crashes."""
from __future__ import annotations

import os
import time
from pathlib import Path

from detcore.checkpoint import checkpoint_temp_file
from detcore.config import load_config
from detcore.engine.trainer import Trainer
from tests.integration.helpers import SHAPES

TINY = ["data.samples_per_gpu=2", "auto_scale_lr.enable=false", "data.workers_per_gpu=0", "log_config.interval=1",
        "data.train.num_train=40", "data.train.num_val=4"]


def train(work: Path, max_iters: int, *, resume: str | None = None, extra: tuple[str, ...] = ()) -> None:
    cfg = load_config(SHAPES, [f"runner.max_iters={max_iters}", "checkpoint_config.interval=2", *TINY, *extra])
    Trainer(cfg, work, validate=False, resume=resume).train()


def test_resumed_run_shows_each_tensorboard_step_once(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tmp_path, 6)  # logs steps 1-6, checkpoints at 2, 4, 6
    resumed_at = time.time()
    train(tmp_path, 8, resume=str(tmp_path / "iter_4.pth"))  # as if killed after logging 6 but before saving it
    train(tmp_path, 10, resume="auto")  # from iter_8, the step it logged last
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and len(list((tmp_path / "tb").glob("events.*"))) == 3
    for tag in acc.Tags()["scalars"]:
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, 11)), tag
    loss = {e.step: e.wall_time for e in acc.Scalars("train/loss")}
    assert all(loss[s] < resumed_at for s in (1, 2, 3, 4)) and all(loss[s] >= resumed_at for s in (5, 6))
    config_steps = [e.step for e in acc.Tensors("config/text_summary")]
    assert config_steps == [0, 5, 9]  # each run's config, at the first step it logged


def test_max_keep_holds_across_resumes_and_saves_killed_mid_write(tmp_path: Path) -> None:
    keep = ("checkpoint_config.interval=1", "checkpoint_config.max_keep=3", "checkpoint_config.save_best=null")
    (tmp_path / "best_bbox_AP.pth").write_bytes(b"kept")
    (tmp_path / "notes.tmp").write_text("not ours")
    (tmp_path / ".iter_3.pth.partial").write_text("not ours either")
    train(tmp_path, 2, extra=keep)
    for n in range(3, 9):  # six resumes; each time a save of the previous run was killed mid-write
        fd, _ = checkpoint_temp_file(tmp_path / f"iter_{n + 5}.pth")
        os.write(fd, b"PK\x03\x04 half a checkpoint")
        os.close(fd)
        (tmp_path / f".last_checkpoint.{40000 + n}.tmp").write_text(f"iter_{n + 5}.pth\n")
        train(tmp_path, n, resume="auto", extra=keep)
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert [n for n in names if n.startswith("iter_")] == ["iter_6.pth", "iter_7.pth", "iter_8.pth"]
    assert not [n for n in names if n.endswith(".tmp") and n.startswith(".")], names
    assert {"best_bbox_AP.pth", "notes.tmp", ".iter_3.pth.partial"} <= set(names)
    assert (tmp_path / "last_checkpoint").read_text().strip() == "iter_8.pth"
