"""Small helpers for integration tests that run the real command-line tools."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"


@contextlib.contextmanager
def tmpfs(mount: Path, size: str, mode: str, what: str):
    """A tmpfs of ``size`` mounted at ``mount`` for the ``with`` block (needs root; fails the test with why)."""
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for {what} (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for MASTER_PORT of hand-started ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


def detcore(*args: str, timeout: float = 600, check: bool = True, **env_extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", *args], cwd=ROOT, env=env(**env_extra),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"detcore {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def read_metrics(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def train_losses(work_dir: Path) -> dict[int, dict]:
    """Last logged training record per iteration (a resumed run logs some iterations twice)."""
    return {r["iter"]: r for r in read_metrics(work_dir) if r["mode"] == "train"}


def final_val(work_dir: Path) -> dict:
    return [r for r in read_metrics(work_dir) if r["mode"] == "val"][-1]
