"""One scaling rule, applied by the worker: plain torchrun and ``launcher submit`` train with the same LR and
the same number of iterations, and a resume at another world size rescales once from the original values.

The config: 2 images per worker against a base batch of 2, an iteration schedule scaled with the batch. At
2 workers (total batch 4) the rule doubles the LR (0.02 -> 0.04) and halves max_iters (8 -> 4); at 1 worker
both stay as configured. A launcher that pre-scaled the config on top of the worker would run at 0.08.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from tests.integration.helpers import ROOT, SHAPES, env, train_losses
from tests.integration.launcher_cli import launcher, record

OPTS = ["runner.max_iters=8", "auto_scale_lr.base_batch_size=2", "lr_config.warmup=null", "lr_config.step=[100]",
        "checkpoint_config.interval=100", "evaluation.interval=1000", "data.samples_per_gpu=2",
        "data.workers_per_gpu=0", "data.train.num_train=16", "data.train.num_val=4", "log_config.interval=1"]


def logged(work: Path) -> tuple[list[int], set[float]]:
    """Iterations and LRs in ``metrics.jsonl``."""
    rec = train_losses(work)
    return sorted(rec), {round(r["lr"], 8) for r in rec.values()}


def test_torchrun_and_launcher_submit_train_alike_and_resume_rescales_once(tmp_path: Path, home: Path) -> None:
    by_hand = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "detcore.tools.cli", "train", str(SHAPES), "--work-dir", str(by_hand), "--no-validate",
           "--cfg-options", *OPTS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("world size 2 x 2 per worker = total batch 4 (base 2, x2); lr 0.02 -> 0.04; runner.max_iters 8 -> 4"
            in (by_hand / "train.log").read_text())

    sub = launcher(home, "submit", SHAPES, "--nproc", "2", "--no-validate", "--work-dir", str(tmp_path / "submit"),
                   "--cfg-options", *OPTS)
    exp_id = sub.stdout.splitlines()[0].strip()
    assert logged(by_hand) == logged(tmp_path / "submit") == ([1, 2, 3, 4], {0.04})
    row = record(home, exp_id)  # written from the worker's scaling fact
    assert (row["lr"], row["total_batch"], row["scaling"]["base_lr"], row["scaling"]["world_size"]) == (0.04, 4, 0.02, 2)
    meta = torch.load(by_hand / "iter_4.pth", weights_only=True)["meta"]
    assert meta["scaling"]["lr"] == 0.04 and meta["scaling"]["base_lr"] == 0.02

    # a resume on one process, asked for 16 iterations (a longer run): the LR goes back to the original 0.02, not
    # 0.04 kept from the checkpoint nor 0.04 halved; iteration 4 of 4 per epoch continues as 8 of 8 (same epochs)
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", "train", str(by_hand / "config.yaml"),
                           "--work-dir", str(by_hand), "--resume", "--no-validate", "--cfg-options",
                           "runner.max_iters=16"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lr 0.02 -> 0.02" in proc.stderr and "base lr 0.04 (world size 2 in iter_4.pth) -> 0.02" in proc.stderr
    after = {i: round(r["lr"], 8) for i, r in train_losses(by_hand).items() if i > 4}
    assert after == {i: 0.02 for i in range(9, 17)}
    meta = torch.load(by_hand / "iter_16.pth", weights_only=True)["meta"]
    assert (meta["world_size"], meta["scaling"]["lr"], meta["scaling"]["base_lr"]) == (1, 0.02, 0.02)
