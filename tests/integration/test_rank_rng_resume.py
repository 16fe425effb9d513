"""Exact resume on several ranks: each rank saves and restores its own random state (issue 19, item 7).

Two real gloo ranks (torchrun) train 4 iterations with a checkpoint at 2; a second run resumes
from that checkpoint in another work dir. The ranks draw different RPN/ROI sampling permutations
(they are seeded by rank), so restoring rank 0's state on every rank, as before, changed the
losses after the resume. The same path runs on GPUs with one CUDA generator state per rank.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch

from tests.integration.helpers import ROOT, SHAPES, env, train_losses

ARGS = ["--device", "cpu", "--seed", "3", "--no-validate", "--cfg-options", "runner.type=IterBasedRunner",
        "+runner.max_iters=4", "checkpoint_config.interval=2", "data.samples_per_gpu=2", "data.workers_per_gpu=0",
        "log_config.interval=1", "data.train.num_train=16"]


def torchrun_train(work_dir: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "detcore.tools.cli", "train", str(SHAPES), "--work-dir", str(work_dir), *extra, *ARGS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_two_rank_resume_restores_each_ranks_random_state(tmp_path: Path) -> None:
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    torchrun_train(full)
    ckpt = torch.load(full / "iter_2.pth", weights_only=True)
    states = ckpt["rng_per_rank"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    resumed.mkdir()
    shutil.copy(full / "iter_2.pth", resumed / "iter_2.pth")
    torchrun_train(resumed, "--resume", str(resumed / "iter_2.pth"))
    want, got = train_losses(full), train_losses(resumed)
    assert sorted(got) == [3, 4]
    for it in (3, 4):
        assert got[it]["loss"] == want[it]["loss"], (it, got[it]["loss"], want[it]["loss"])
