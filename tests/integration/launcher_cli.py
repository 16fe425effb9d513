"""Helpers for tests that drive the real `launcher` CLI (local backend) and watch its processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
SHAPES = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")
MARKER = "DETLAUNCH_EXPERIMENT_ID"
# `launcher submit ... --worker-module PROBE`: the cheap worker (tests/integration/probe_worker.py) for tests
# whose point is the launcher (ports, leases, slots, bursts, recording), not training
PROBE = "tests.integration.probe_worker"
# Tiny runs: 2 images per worker, so 2 workers make the config's base batch of 4 (no schedule scaling).
DATA = ["data.samples_per_gpu=2", "data.workers_per_gpu=0", "data.train.num_train=40", "data.train.num_val=8",
        "data.val.num_train=40", "data.val.num_val=8", "log_config.interval=1", "evaluation.interval=1000"]


def tiny(iters: int, ckpt_every: int = 2) -> list[str]:
    return ["--cfg-options", f"runner.max_iters={iters}", f"checkpoint_config.interval={ckpt_every}", *DATA]


def user_error_neck(folder: Path, broken: bool = True) -> list[str]:
    """Write ``detl_user_neck.py`` into ``folder`` (the jobs' working directory) and return the overrides
    that build it. Broken, its constructor raises a ConfigError: a user error only the worker can find
    (``launcher submit`` checks registry names, paths and metrics, not what a module does when built)."""
    body = 'raise ConfigError("model.neck: DetlNeck got a setting it cannot use (the user\'s mistake)")' if broken \
        else "super().__init__(*args, **kwargs)"
    (folder / "detl_user_neck.py").write_text(
        "from detcore.errors import ConfigError\nfrom detcore.models.necks import FPN\n"
        "from detcore.registry import NECKS\n\n\n@NECKS.register()\nclass DetlNeck(FPN):\n"
        f"    def __init__(self, *args, **kwargs):\n        {body}\n")
    return ["+custom_imports={imports: [detl_user_neck], allow_failed_imports: false}", "model.neck.type=DetlNeck"]


def job_tmp(home: Path) -> Path:
    """The ``TMPDIR`` that jobs of this ``home`` run with, when it exists (the ``home`` fixture makes it
    for local-backend tests)."""
    return home.parent / "job-tmp"


def env_for(home: Path, **extra: str) -> dict[str, str]:
    # COLUMNS: `launcher list` fits it; a test that wants a width passes it
    env = {k: v for k, v in os.environ.items() if k not in ("LAUNCHER_FAKE_GPUS", "COLUMNS")}
    if job_tmp(home).is_dir():
        env["TMPDIR"] = str(job_tmp(home))  # what jobs leave there fails the test (tests.integration.leaks)
    env.update(LAUNCHER_HOME=str(home), PYTHONPATH=str(ROOT), **extra)
    return env


def launcher(home: Path, *args: str, cwd: Path | None = None, timeout: float = 600, check: bool = True,
             **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd or home.parent, env=env_for(home, **extra),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"launcher {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def record(home: Path, exp_id: str) -> dict:
    return json.loads(launcher(home, "status", exp_id, "--json").stdout)


def wait_until(home: Path, exp_id: str, predicate, timeout: float = 400, poll: float = 1.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rec = record(home, exp_id)
        if predicate(rec):
            return rec
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {exp_id}: {rec}")
        time.sleep(poll)


def done(rec: dict) -> bool:
    return rec["state"] in ("succeeded", "failed", "cancelled")


def checkpointed(rec: dict) -> bool:
    """The job has saved a checkpoint. ``last_checkpoint`` stays once written; a given ``iter_N.pth``
    is deleted again a few iterations later (``max_keep``), between two polls on a fast machine."""
    return (Path(rec["work_dir"]) / "last_checkpoint").exists()


def job_processes(exp_ids) -> list[psutil.Process]:
    """Every live process that belongs to one of these experiments (supervisor, torchrun, workers)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(MARKER) in exp_ids and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def train_iters(work_dir: str) -> list[int]:
    lines = (Path(work_dir) / "metrics.jsonl").read_text().splitlines()
    return sorted({json.loads(x)["iter"] for x in lines if x.strip() and json.loads(x)["mode"] == "train"})


def attempts(home: Path, exp_id: str) -> list[dict]:
    """The start facts of the experiment's current launch (one per rank and attempt), from its run directory."""
    from detcore.contract import run_dir
    from detcore.facts import read_facts

    rec = record(home, exp_id)
    return [e for e in [f.to_json() for f in read_facts(run_dir(rec["work_dir"], rec["run_id"]))] if e.get("event") == "start"]
