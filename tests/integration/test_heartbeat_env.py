"""`detcore train` under a hang watchdog: heartbeats per rank, and Python stacks on SIGUSR1 without stopping."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from detcore.contract import HEARTBEAT_DIR_ENV, read_heartbeat
from tests.integration.helpers import ROOT, SHAPES, env

TINY = ["data.samples_per_gpu=2", "auto_scale_lr.enable=false", "data.workers_per_gpu=0", "data.train.num_train=40", "data.train.num_val=4"]


def test_heartbeat_dir_env_gives_heartbeats_and_sigusr1_prints_stacks(tmp_path: Path) -> None:
    hb, err = tmp_path / "hb", tmp_path / "stderr.log"
    cmd = [sys.executable, "-m", "detcore.tools.cli", "train", str(SHAPES), "--work-dir", str(tmp_path / "work"),
           "--no-validate", "--cfg-options", "runner.max_iters=40", "checkpoint_config.interval=20", *TINY]
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(**{HEARTBEAT_DIR_ENV: str(hb)}), stdout=subprocess.DEVNULL,
                                stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while read_heartbeat(hb, 0) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert read_heartbeat(hb, 0) is not None, err.read_text()[-3000:]
        first = read_heartbeat(hb, 0)
        assert proc.poll() is None, "finished before the signal could be sent; raise runner.max_iters"
        os.kill(proc.pid, signal.SIGUSR1)  # the watchdog asking where a rank is
        assert proc.wait(timeout=600) == 0, err.read_text()[-3000:]
    finally:
        proc.kill()
    text = err.read_text()
    assert "(most recent call first)" in text and "detcore/engine/trainer.py" in text, text[-3000:]
    last = read_heartbeat(hb, 0)
    assert last[0] == 40 and last[1] >= first[1] and first[0] < 40
