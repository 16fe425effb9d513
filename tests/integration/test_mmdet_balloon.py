"""The MMDetection user guides' balloon flow (2.x and 3.x), end to end on generated VIA data:
`detcore convert via`, `detcore config import` of the guide's .py config, `detcore train` with
its `load_from`, `detcore test --eval bbox segm`. Shrunk to seconds with --cfg-options
(ResNet-18, 128-pixel images, 3 iterations); the configs themselves are the guides', unchanged."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from tests.integration.helpers import ROOT, env
from tests.integration.test_balloon_via import _balloon_split

GUIDE = ROOT / "tests/data/mmdet_configs/mask_rcnn_r50_caffe_fpn_mstrain-poly_1x_balloon.py"
GUIDE3 = ROOT / "tests/data/mmdet_configs/v3/balloon/mask-rcnn_r50-caffe_fpn_ms-poly-1x_balloon.py"
SMALL = ["model.backbone.depth=18", "model.min_size=128", "model.max_size=128",
         "data.train.pipeline=[{type: Resize, scale: [128, 128]}, {type: RandomFlip, prob: 0.5}]",
         "data.samples_per_gpu=2", "data.workers_per_gpu=0", "runner={type: IterBasedRunner, max_iters: 3}",
         "lr_config.warmup_iters=1", "optimizer.lr=1e-9", "checkpoint_config.interval=3",
         "model.rpn.pre_nms_top_n_train=200", "model.rpn.post_nms_top_n_train=100",
         "model.roi_head.batch_size_per_image=64"]
MARKER = 0.123


def run(cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, f"detcore {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def balloon_data(root: Path) -> None:
    """The guide's balloon dataset, generated: root/{train,val}/ images and annotation_coco.json."""
    for split, n, seed in (("train", 6, 0), ("val", 2, 1)):
        _balloon_split(root / split, n, seed)
        run(root.parent, "convert", "via", str(root / split / "via_region_data.json"),
            str(root / split / "annotation_coco.json"), "--class-name", "balloon")


def marked_checkpoint(cfg: dict, path: Path) -> None:
    """A checkpoint of the (shrunk) network the config builds, with one weight made recognisable."""
    from detcore.models import build_detector

    state = build_detector(cfg["model"]).state_dict()
    state["roi_heads.box_predictor.cls_score.bias"].fill_(MARKER)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def test_guide_balloon_config_imports_trains_from_load_from_and_tests(tmp_path: Path) -> None:
    balloon_data(tmp_path / "balloon")
    config = shutil.copy(GUIDE, tmp_path / GUIDE.name)
    shutil.copytree(GUIDE.parent / "mask_rcnn", tmp_path / "mask_rcnn")
    shutil.copytree(GUIDE.parent / "_base_", tmp_path / "_base_")
    proc = run(tmp_path, "config", "import", GUIDE.name, "--out", "balloon.yaml")
    assert 'dataset_type: "COCODataset"  (a plain variable' in proc.stdout
    assert (tmp_path / "balloon.yaml").read_text().startswith("# Imported from the MMDetection config")

    # The guide's load_from: a checkpoint of the same (shrunk) network, with one weight made recognisable.
    from detcore.config import load_config

    cfg = load_config(tmp_path / "balloon.yaml", SMALL)
    marked_checkpoint(cfg, tmp_path / cfg["load_from"])

    # Train straight from the .py (imported on the fly): the imported YAML lands in the work dir.
    proc = run(tmp_path, "train", config.name, "--work-dir", "work", "--no-validate", "--cfg-options", *SMALL)
    assert "did not carry over exactly" in proc.stderr
    assert (tmp_path / "work" / f"imported_{config.stem}.yaml").read_text() == \
        (tmp_path / "balloon.yaml").read_text()
    ckpt = torch.load(tmp_path / "work/iter_3.pth", weights_only=True)
    assert ckpt["meta"]["classes"] == ["balloon"]
    bias = ckpt["state_dict"]["roi_heads.box_predictor.cls_score.bias"]
    assert torch.allclose(bias, torch.full_like(bias, MARKER), atol=1e-4)  # started from load_from, lr ~0

    proc = run(tmp_path, "test", "balloon.yaml", "work/iter_3.pth", "--eval", "bbox", "segm", "--json",
               "--cfg-options", *SMALL)
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"bbox", "segm"} and 0.0 <= metrics["segm"]["AP"] <= 1.0


def test_3x_guide_balloon_config_imports_trains_from_a_downloaded_load_from_and_tests(tmp_path: Path) -> None:
    """MMDetection 3.x's guide: data under data/balloon/, load_from an https URL of MMDetection's model
    zoo. Training refuses the URL in one line; with the file downloaded (--cfg-options load_from=FILE,
    as a user on an offline cluster does) it trains from it and tests."""
    balloon_data(tmp_path / "data/balloon")
    configs = tmp_path / "configs"
    shutil.copytree(GUIDE3.parents[1], configs)
    config = configs / "balloon" / GUIDE3.name
    proc = run(tmp_path, "config", "import", str(config), "--out", "balloon.yaml")
    assert 'load_from: "https://download.openmmlab.com/' in proc.stdout and "a URL of an MMDetection checkpoint" \
        in proc.stdout

    refused = run(tmp_path, "train", str(config), "--work-dir", "work", "--cfg-options", *SMALL, code=2)
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]  # after the import's summary
    assert len(errors) == 1 and "load_from" in errors[0] and "https://download.openmmlab.com/" in errors[0]
    assert not (tmp_path / "work").exists()

    from detcore.config import load_config

    downloaded = "checkpoints/mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco.pth"
    cfg = load_config(tmp_path / "balloon.yaml", [*SMALL, f"load_from={downloaded}"])
    assert cfg["classes"] == ["balloon"] and cfg["model"]["num_classes"] == 1
    marked_checkpoint(cfg, tmp_path / downloaded)
    run(tmp_path, "train", str(config), "--work-dir", "work", "--no-validate", "--cfg-options", *SMALL,
        f"load_from={downloaded}")
    ckpt = torch.load(tmp_path / "work/iter_3.pth", weights_only=True)
    assert ckpt["meta"]["classes"] == ["balloon"]
    bias = ckpt["state_dict"]["roi_heads.box_predictor.cls_score.bias"]
    assert torch.allclose(bias, torch.full_like(bias, MARKER), atol=1e-4)  # started from load_from, lr ~0

    proc = run(tmp_path, "test", str(config), "work/iter_3.pth", "--eval", "bbox", "segm", "--json",
               "--cfg-options", *SMALL)
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"bbox", "segm"} and 0.0 <= metrics["segm"]["AP"] <= 1.0
