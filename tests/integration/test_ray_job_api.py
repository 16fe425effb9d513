"""Jobs submitted through Ray's job API (``--address http://127.0.0.1:8266``, the dashboard of the head in
``tests/integration/ray_cluster.py``'s ``ray_jobs_head``), through the real CLI.

The run monitor is then a Ray job on the head: the submitting ``launcher`` exits at once (``--detach``), the
job runs to its end and ``launcher status`` (from another process) reads it as succeeded, with Ray's own
``ray job status`` agreeing. A driver killed on the head makes the Ray job fail; ``launcher status`` says
"monitor lost" and ``launcher resume`` (a new Ray job) finishes the run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.integration.launcher_cli import DATA, SHAPES, done, launcher, record, train_iters, wait_until
from tests.integration.ray_cluster import ray_jobs_head  # noqa: F401  (a fixture)
from tests.integration.test_ray import assert_nothing_left, committed_pointer, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def job_args(head, iters: int) -> list[str]:
    return ["--backend", "ray", "--address", head.job_api, "--workers", "2", "--detach", "--cfg-options", *DATA,
            f"runner.max_iters={iters}", f"evaluation.interval={iters}", "checkpoint_config.interval=5"]


def ray_job_status(head, submission: str) -> str:
    """``ray job status`` (Ray's own CLI) on the job's submission id."""
    proc = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "job", "status", "--address", head.job_api,
                           submission], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    return proc.stdout + proc.stderr


def drivers(exp_id: str) -> list[psutil.Process]:
    """The experiment's driver process(es) on this machine, found by their command line."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "launcher.backends.ray_train.driver" in cmd and exp_id in cmd:
            found.append(proc)
    return found


def test_a_ray_job_outlives_its_submitter_and_finishes(home, ray_jobs_head):
    proc = launcher(home, "submit", SHAPES, *job_args(ray_jobs_head, 10), "--name", "rayjob", timeout=300)
    exp_id = proc.stdout.strip().splitlines()[0]  # the submitting process has exited
    rec = record(home, exp_id)
    submission = rec["backend_job_id"]
    assert submission.startswith(f"detlaunch-{exp_id}-"), rec
    rec = wait_until(home, exp_id, done, timeout=600, poll=2.0)
    assert rec["state"] == "succeeded" and rec["exit_code"] == 0, rec["reason"]
    assert rec["last_iter"] == 10 and train_iters(rec["work_dir"]) == list(range(1, 11))
    # Ray's own view agrees once the driver's process has exited (it records the ending first)
    wait_for(lambda: f"Job '{submission}' succeeded" in ray_job_status(ray_jobs_head, submission),
             "`ray job status` to say succeeded", timeout=60, poll=2)
    assert "saved checkpoint" in launcher(home, "logs", exp_id).stdout
    assert_nothing_left(ray_jobs_head, exp_id)


def test_a_driver_killed_on_the_head_is_monitor_lost_and_resume_finishes_it(home, ray_jobs_head):
    exp_id = launcher(home, "submit", SHAPES, *job_args(ray_jobs_head, 40), timeout=300).stdout.strip()
    rec = record(home, exp_id)
    work = rec["work_dir"]
    wait_for(lambda: committed_pointer(work, exp_id), "a checkpoint committed by Ray Train", timeout=400, poll=0.2)
    procs = drivers(exp_id)
    assert len(procs) == 1, [p.info["cmdline"] for p in procs]
    procs[0].send_signal(signal.SIGKILL)  # the driver on the head, as the OOM killer would
    rec = wait_until(home, exp_id, done, timeout=180)
    assert rec["state"] == "failed" and rec["reason"].startswith("monitor lost: the Ray driver (Ray job "), rec
    assert f"Job '{rec['backend_job_id']}' failed" in ray_job_status(ray_jobs_head, rec["backend_job_id"])
    first = rec["backend_job_id"]
    launcher(home, "resume", exp_id, timeout=600)
    rec = wait_until(home, exp_id, done, timeout=600, poll=2.0)
    assert rec["state"] == "succeeded" and set(train_iters(work)) == set(range(1, 41)), rec["reason"]
    assert rec["backend_job_id"] != first and rec["backend_job_id"].startswith(f"detlaunch-{exp_id}-")
    assert [h["reason"][:12] for h in rec["history"]] == ["monitor lost"]
    assert_nothing_left(ray_jobs_head, exp_id)
