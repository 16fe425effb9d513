"""User mistakes: one line on stderr, exit 2, and no experiment row, work dir or job folder left behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SHAPES = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")

CASES = [
    (["submit", SHAPES, "--backend", "kubernetes"], "unknown backend 'kubernetes'; choose one of local, slurm, ray"),
    (["submit", SHAPES, "--backend", "locl"], "did you mean 'local'"),
    (["submit", "nope.yaml"], "config 'nope.yaml' not found"),
    (["submit", SHAPES, "--cfg-options", "optimizer.lrr=0.1"], "closest existing key is 'optimizer.lr'"),
    (["submit", SHAPES, "--gpus", "2"], "asked for 2 GPUs but this node has 0"),
    (["submit", SHAPES, "--nproc", "0"], "nproc (workers per node) must be an integer >= 1"),
    (["submit", SHAPES, "--resume", "gone.pth"], "expected auto, never or an existing checkpoint"),
    (["submit", SHAPES, "--test", "gone.pth"], "checkpoint 'gone.pth' not found"),
    (["submit", SHAPES, "--name", "x;rm -rf ~"], "may only hold"),
    (["submit", SHAPES, "--eval", "bbox"], "belong to test jobs"),
    (["submit", SHAPES, "--max-restarts", "-1"], "max_restarts must be an integer >= 0"),
    (["submit", SHAPES, "--seed", "-1"], "--seed: expected a whole number from 0 to 4294967295, got -1"),
    (["submit", SHAPES, "--seed", "4294967296"], "--seed: expected a whole number from 0 to 4294967295"),
    (["sweep", SHAPES, "--grid", "optimizer.lr"], "must look like key.sub=v1,v2"),
    (["sweep", SHAPES, "--grid", "optimizer.lr=0.1,0.2", "--grid", "nope.key=1,2"], "override 'nope.key'"),
    (["status", "deadbeef"], "no experiment 'deadbeef'"),
    (["cancel", "deadbeef"], "no experiment 'deadbeef'"),
    (["logs", "deadbeef"], "no experiment 'deadbeef'"),
    (["resume", "deadbeef"], "no experiment 'deadbeef'"),
    (["list", "--state", "done"], "unknown state 'done'"),
]


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(a[:1] + a[2:])[:60] for a, _ in CASES])
def test_user_error_is_one_line_and_leaves_nothing(tmp_path, argv, message):
    home = tmp_path / "home"
    env = {**os.environ, "LAUNCHER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("LAUNCHER_FAKE_GPUS", None)
    proc = subprocess.run([sys.executable, "-m", "launcher", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert lines[0].startswith(f"launcher {argv[0]}: error: ")
    assert not (tmp_path / "work_dirs").exists()
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())
    if (home / "experiments.db").exists():
        import sqlite3

        assert sqlite3.connect(home / "experiments.db").execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 0
