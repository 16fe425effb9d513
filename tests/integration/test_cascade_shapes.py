"""Cascade Mask R-CNN end to end on the shapes data: `detcore train`, then `detcore test --eval bbox segm`."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.integration.helpers import ROOT, detcore, final_val, train_losses

CONFIG = ROOT / "configs/shapes/cascade_mask_rcnn_tiny_shapes.yaml"


def test_cascade_mask_rcnn_trains_checkpoints_and_tests_with_bbox_and_segm(tmp_path: Path) -> None:
    work = tmp_path / "work"
    detcore("train", str(CONFIG), "--work-dir", str(work), "--cfg-options", "runner.max_iters=6",
            "evaluation.interval=6", "checkpoint_config.interval=6", "log_config.interval=3",
            "lr_config.warmup_iters=2", timeout=600, OMP_NUM_THREADS="2")
    losses = train_losses(work)
    assert sorted(losses) == [3, 6]
    for k in range(3):  # every stage's weighted losses are logged, and the mask loss of the last stage
        assert losses[6][f"s{k}.loss_classifier"] > 0 and losses[6][f"s{k}.loss_box_reg"] >= 0
    assert losses[6]["loss_mask"] > 0
    val = final_val(work)
    assert val["iter"] == 6 and "bbox_AP" in val and "segm_AP" in val
    meta = torch.load(work / "iter_6.pth", weights_only=True)["meta"]
    assert meta["arch"] == "CascadeRCNN" and meta["classes"] == ["rectangle", "ellipse", "triangle"]

    out = tmp_path / "results.json"
    proc = detcore("test", str(CONFIG), str(work / "iter_6.pth"), "--eval", "bbox", "segm", "--json",
                   "--out", str(out), timeout=600, OMP_NUM_THREADS="2")
    tested = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(tested) >= {"bbox", "segm"}
    assert abs(tested["bbox"]["AP"] - val["bbox_AP"]) < 1e-9 and abs(tested["segm"]["AP"] - val["segm_AP"]) < 1e-9
    results = json.loads(out.read_text())
    assert results and {"bbox", "score", "category_id", "segmentation"} <= set(results[0])
