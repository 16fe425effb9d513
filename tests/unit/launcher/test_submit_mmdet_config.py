"""`launcher submit X.py`: an MMDetection config goes through detcore's loader (imported, never run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RETINANET = ROOT / "tests/data/mmdet_configs/retinanet/retinanet_r50_fpn_1x_coco.py"
RETINANET3 = ROOT / "tests/data/mmdet_configs/v3/retinanet/retinanet_r50_fpn_1x_coco.py"


@pytest.mark.parametrize("config, listed", [
    (RETINANET, "opencv_num_threads: 0  (not mapped)"),
    (RETINANET3, "tta_model: {"),
], ids=["2.x", "3.x"])
def test_submit_dry_run_of_an_mmdetection_config(tmp_path: Path, config: Path, listed: str) -> None:
    env = {**os.environ, "LAUNCHER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    annotations = tmp_path / "data/coco/annotations"  # submit checks the config's data paths before anything starts
    annotations.mkdir(parents=True)
    for split in ("train", "val"):
        (annotations / f"instances_{split}2017.json").write_text('{"images": [], "annotations": [], "categories": []}')
    proc = subprocess.run([sys.executable, "-m", "launcher", "submit", str(config), "--dry-run", "--json",
                           "--nproc", "2", "--cfg-options", "data.train.samples_per_gpu=4", "auto_scale_lr.enable=true"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    dry = json.loads(proc.stdout)
    command = dry["commands"][0]
    assert command[command.index("train") + 1] == str(config)  # the worker imports it on the fly
    assert "did not carry over exactly" in proc.stderr and listed in proc.stderr
    # MMDetection's per-split batch key, without '+': 2 workers x 4 = 8 of the base 16, lr 0.01 -> 0.005
    scaling = dry["scaling"]
    assert (scaling["samples_per_gpu"], scaling["total_batch"], scaling["base_batch_size"]) == (4, 8, 16)
    assert scaling["base_lr"] == 0.01 and dry["lr"] == 0.005
    evil = tmp_path / "evil.py"
    evil.write_text(f"import os\nos.system('touch {tmp_path / 'pwned'}')\n")
    proc = subprocess.run([sys.executable, "-m", "launcher", "submit", str(evil), "--dry-run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "is code" in proc.stderr
    assert not (tmp_path / "pwned").exists()
