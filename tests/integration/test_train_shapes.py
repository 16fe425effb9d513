"""The main job end to end: training learns, resumes exactly, logs to TensorBoard, tests and fine-tunes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detcore.apis.visualize import GAP_PX
from tests.integration.helpers import ROOT, SHAPES, detcore, env, final_val, train_losses

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's main job: the tiny Faster R-CNN on shapes, default schedule, on the CPU."""
    work = tmp_path_factory.mktemp("main-job")
    detcore("train", str(SHAPES), "--work-dir", str(work), timeout=900, OMP_NUM_THREADS="2")
    return work


def test_main_job_clears_its_ap_bound(trained: Path) -> None:
    val = final_val(trained)
    assert val["iter"] == 300
    assert val["bbox_AP"] >= 0.5, val
    assert (trained / "last_checkpoint").read_text().strip() == "iter_300.pth"
    assert (trained / "best_bbox_AP.pth").is_file() and (trained / "config.yaml").is_file()
    ckpt = torch.load(trained / "iter_300.pth", weights_only=True)
    assert ckpt["meta"]["classes"] == ["rectangle", "ellipse", "triangle"] and ckpt["meta"]["iter"] == 300


def test_tensorboard_has_scalars_images_and_config(trained: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for name in ("loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "lr",
                 "data_time", "iter_time", "throughput", "memory_mb"):
        assert f"train/{name}" in scalars, name
    for name in ("bbox_AP", "bbox_AP50", "bbox_AR100", "bbox_AP_rectangle", "bbox_AP_ellipse", "bbox_AP_triangle"):
        assert f"val/{name}" in scalars, name
    assert acc.Scalars("train/loss")[-1].step == 300
    assert acc.Scalars("train/loss")[-1].value < acc.Scalars("train/loss")[0].value
    assert len(acc.Tags()["images"]) >= 1
    assert acc.Images(acc.Tags()["images"][0])[-1].width == 2 * 512 + GAP_PX  # 128x128 images drawn at 512x512
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "FasterRCNN" in text and "ShapesDataset" in text


def test_detcore_test_results_evaluate_to_the_same_numbers(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    shown = tmp_path / "show"
    proc = detcore("test", str(SHAPES), str(trained / "iter_300.pth"), "--out", str(out), "--eval", "bbox",
                   "--json", "--show-dir", str(shown))
    tested = json.loads(proc.stdout.strip().splitlines()[-1])
    from detcore.data import ensure_shapes

    gt = ensure_shapes(None, num_train=400, num_val=100, size=128, seed=0) / "annotations/instances_val.json"
    evaluated = json.loads(detcore("eval", "--ann", str(gt), "--results", str(out), "--metric", "bbox",
                                   "--json").stdout)
    assert tested["bbox"] == evaluated["bbox"]
    assert abs(tested["bbox"]["AP"] - final_val(trained)["bbox_AP"]) < 1e-9
    assert len(list(shown.glob("*.png"))) == 100


def test_finetune_from_checkpoint_with_other_classes(trained: Path, tmp_path: Path) -> None:
    cfg = ROOT / "configs/shapes/faster_rcnn_tiny_shapes_finetune_rectangle.yaml"
    proc = detcore("train", str(cfg), "--work-dir", str(tmp_path), "--load-from", str(trained / "iter_300.pth"),
                   "--cfg-options", "runner.max_iters=20", "evaluation.interval=20", "lr_config.step=[15]")
    assert "skipped 4 tensor(s): roi_heads.box_predictor.cls_score.weight" in proc.stderr
    val = final_val(tmp_path)
    assert val["bbox_AP"] > 0.3, val  # starts from a detector that already knows rectangles
    meta = torch.load(tmp_path / "iter_20.pth", weights_only=True)["meta"]
    assert meta["classes"] == ["rectangle"]


RESUME_OPTS = ["--deterministic", "--no-validate", "--cfg-options", "runner.max_iters=12", "checkpoint_config.interval=6",
               "checkpoint_config.max_keep=5", "log_config.interval=1", "data.samples_per_gpu=2", "auto_scale_lr.enable=false",
               "data.workers_per_gpu=1", "lr_config.warmup_iters=4"]


def test_sigkill_then_resume_gives_identical_losses_and_weights(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    detcore("train", str(SHAPES), "--work-dir", str(straight), *RESUME_OPTS)
    proc = subprocess.Popen([sys.executable, "-m", "detcore.tools.cli", "train", str(SHAPES), "--work-dir",
                             str(killed), *RESUME_OPTS], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "iter_6.pth").exists() or not (killed / "last_checkpoint").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "iter_12.pth").exists()
    detcore("train", str(SHAPES), "--work-dir", str(killed), "--resume", "auto", *RESUME_OPTS)
    a, b = train_losses(straight), train_losses(killed)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for it in a:
        assert a[it]["loss"] == b[it]["loss"], f"iteration {it}: {a[it]['loss']} != {b[it]['loss']}"
        assert a[it]["lr"] == b[it]["lr"]
    wa = torch.load(straight / "iter_12.pth", weights_only=True)["state_dict"]
    wb = torch.load(killed / "iter_12.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_two_gloo_processes_under_torchrun_reach_comparable_ap(trained: Path, tmp_path: Path) -> None:
    """Total batch kept at 4: 2 processes x 2 images."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", "127.0.0.1:0", "-m", "detcore.tools.cli", "train", str(SHAPES), "--work-dir",
           str(tmp_path), "--cfg-options", "data.samples_per_gpu=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    val = final_val(tmp_path)
    single = final_val(trained)
    assert val["iter"] == 300
    assert val["bbox_AP"] >= 0.4 and abs(val["bbox_AP"] - single["bbox_AP"]) < 0.15, (val, single)
