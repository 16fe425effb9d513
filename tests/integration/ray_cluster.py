"""A real local Ray head for the Ray integration tests: ``cluster/ray/start.sh``, stopped at the end.

The head listens on 127.0.0.1 only (``start.sh`` sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``)
on its own GCS port, Ray Client port, worker-port range and temp dir, so it can run beside a
developer's head on the default 6379. If it cannot start, the tests fail with start.sh's
reason; they never skip.

Stopping: ``cluster/ray/stop.sh --port P --temp-dir D`` stops only the head the fixture
started: the processes naming its temp dir or GCS address on their command line (GCS, raylet,
monitors, client server) and everything under them (the raylet's workers). A head that was
already answering on the port when the tests started is reused and left running.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "cluster" / "ray" / "start.sh"
STOP = ROOT / "cluster" / "ray" / "stop.sh"
PORT = int(os.environ.get("DETLAUNCH_TEST_RAY_PORT", "6391"))
TEMP_DIR = os.environ.get("DETLAUNCH_TEST_RAY_TEMP_DIR", "/tmp/detl-ray-test")  # short: Ray's socket paths
HEAD_ENV = {"DETLAUNCH_RAY_CLIENT_PORT": os.environ.get("DETLAUNCH_TEST_RAY_CLIENT_PORT", "10093"),
            "DETLAUNCH_RAY_MIN_WORKER_PORT": "14000", "DETLAUNCH_RAY_MAX_WORKER_PORT": "15999"}  # launcher/resources/ports.py
JOBS_PORT, JOBS_TEMP_DIR = 6393, "/tmp/detl-ray-jobs"  # the head with a dashboard (ray_jobs_head)
JOBS_ENV = {"DETLAUNCH_RAY_CLIENT_PORT": "10095", "DETLAUNCH_RAY_DASHBOARD_PORT": "8266",
            "DETLAUNCH_RAY_MIN_WORKER_PORT": "12500", "DETLAUNCH_RAY_MAX_WORKER_PORT": "13499"}
START_TIMEOUT_S = 240


@dataclass(frozen=True)
class RayHead:
    address: str
    temp_dir: str
    started_here: bool
    seconds_to_start: float
    job_api: str | None = None  # the dashboard's job-submission API, for a head started with it


def start_head(num_cpus: int = 4, port: int = PORT, temp_dir: str = TEMP_DIR,
               head_env: dict[str, str] | None = None, dashboard: bool = False) -> RayHead:
    """Start (or find) a head, with its dashboard (the job API) if asked; pytest.fail with start.sh's output
    when it cannot."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(START), "--port", str(port), "--temp-dir", temp_dir, "--num-cpus",
                               str(num_cpus), "--timeout", "120", *(["--dashboard"] if dashboard else [])],
                              env={**os.environ, **(head_env or HEAD_ENV)},
                              capture_output=True, text=True, timeout=START_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        stop_head(RayHead(f"127.0.0.1:{port}", temp_dir, True, 0.0))
        pytest.fail(f"cluster/ray/start.sh did not finish within {START_TIMEOUT_S} s:\n{(exc.stderr or '')[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"cannot start the local Ray head (cluster/ray/start.sh exited {proc.returncode}):\n"
                    f"{proc.stderr[-4000:]}")
    address = proc.stdout.strip().splitlines()[-1]
    job_api = f"http://127.0.0.1:{(head_env or HEAD_ENV).get('DETLAUNCH_RAY_DASHBOARD_PORT', '8265')}" \
        if dashboard else None
    return RayHead(address, temp_dir, "already running" not in proc.stderr, time.monotonic() - t0, job_api)


def head_processes(head: RayHead) -> list[psutil.Process]:
    """The head's own processes (by temp dir or GCS address on the command line) and all their descendants."""
    mine = re.compile(re.escape(head.temp_dir) + r"(/|\s|$)|--(gcs-)?address=" + re.escape(head.address) + r"(\s|$)")
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if mine.search(" ".join(proc.info["cmdline"] or [])):
            roots.append(proc)
    found = {p.pid: p for p in roots}
    for proc in roots:
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def train_workers(head: RayHead) -> list[str]:
    """``ray::RayTrainWorker`` (and Ray Train controller) processes of this head still alive, as text."""
    out = []
    for proc in head_processes(head):
        try:
            title = " ".join(proc.cmdline()).strip()
            status = proc.status()
            if status != psutil.STATUS_ZOMBIE and ("RayTrainWorker" in title or "TrainController" in title):
                job = proc.environ().get("DETLAUNCH_EXPERIMENT_ID")
                out.append(f"{proc.pid} {title} ({status}, experiment {job}, parent {proc.ppid()})")
        except psutil.Error:
            continue
    return out


def stop_head(head: RayHead) -> subprocess.CompletedProcess | None:
    """Stop only this head, with ``cluster/ray/stop.sh`` (see the module docstring)."""
    if not head.started_here:
        return None
    port = head.address.rsplit(":", 1)[1]
    return subprocess.run(["bash", str(STOP), "--port", port, "--temp-dir", head.temp_dir], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    head = start_head()
    try:
        yield head
    finally:
        stopped = stop_head(head)
        assert stopped is None or stopped.returncode == 0, f"cluster/ray/stop.sh failed:\n{stopped.stderr[-2000:]}"


@pytest.fixture(scope="module")
def ray_jobs_head() -> Iterator[RayHead]:
    """A head with its dashboard on 127.0.0.1:8266 (``head.job_api``), for jobs submitted through Ray's job API;
    its own GCS port, temp dir and worker ports, so it never meets :func:`ray_head`."""
    head = start_head(port=JOBS_PORT, temp_dir=JOBS_TEMP_DIR, head_env=JOBS_ENV, dashboard=True)
    try:
        yield head
    finally:
        stopped = stop_head(head)
        assert stopped is None or stopped.returncode == 0, f"cluster/ray/stop.sh failed:\n{stopped.stderr[-2000:]}"
