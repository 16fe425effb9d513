"""A preemption signal makes the worker checkpoint the current iteration and exit with code 3."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import torch

from tests.integration.helpers import ROOT, SHAPES, detcore, env, train_losses



def opts(max_iters: int) -> list[str]:
    return ["--no-validate", "--cfg-options", f"runner.max_iters={max_iters}", "checkpoint_config.interval=1000",
            "log_config.interval=1", "data.samples_per_gpu=2", "auto_scale_lr.enable=false", "data.workers_per_gpu=0"]


def test_usr2_checkpoints_and_stops_then_resume_finishes(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "detcore.tools.cli", "train", str(SHAPES), "--work-dir",
                             str(tmp_path), *opts(200)], cwd=ROOT, env=env(DETCORE_STOP_SIGNALS="USR2,TERM"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "metrics.jsonl").exists() or len(train_losses(tmp_path)) < 3:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert "stopped on request at iteration" in err
    saved = (tmp_path / "last_checkpoint").read_text().strip()
    stopped_at = torch.load(tmp_path / saved, weights_only=True)["meta"]["iter"]
    assert 3 <= stopped_at < 200 and saved == f"iter_{stopped_at}.pth"
    detcore("train", str(SHAPES), "--work-dir", str(tmp_path), "--resume", "auto", *opts(stopped_at + 2))
    assert max(train_losses(tmp_path)) == stopped_at + 2
