"""slurmctld down: ``launcher list`` and ``status`` answer at once, a job that ended is shown as it ended (slurmdbd's
accounting still knows), a running one as ``running?`` with one line saying why; nothing is written wrong.

Stops the test cluster's slurmctld and starts it again (its state is saved, the jobs keep running on
the nodes). Run it under the cluster lock: ``flock /work/locks/cluster.lock python -m pytest ...``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.errors import LauncherError
from tests.integration.slurm_cluster import CLUSTER_DIR, SlurmCluster, slurm_cluster  # noqa: F401  (the fixture)
from tests.integration.test_slurm import done, launcher, record, submit, tiny, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_slurmctld() -> None:
    pid = _pid(CLUSTER_DIR / "run" / "slurmctld.pid")
    if not _alive(pid):
        raise LauncherError("slurmctld is not running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(pid):
        assert time.monotonic() < deadline, "slurmctld did not stop within 60 s"
        time.sleep(0.2)


def start_slurmctld(cluster: SlurmCluster) -> None:
    """As start.sh starts it (``-i``: carry on past unreadable state), then wait until it answers."""
    with open(CLUSTER_DIR / "log" / "slurmctld.out", "ab") as out:
        subprocess.run(["slurmctld", "-i"], env=cluster.env, stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, check=True, timeout=60)
    deadline = time.monotonic() + 60
    while "is UP" not in cluster.run("scontrol", "ping", check=False):
        assert time.monotonic() < deadline, "slurmctld did not come back within 60 s"
        time.sleep(0.5)


def test_with_slurmctld_down_list_and_status_answer_and_mark_what_is_stale(slurm_cluster, home):
    ended = submit(slurm_cluster, home, "--nproc", "1", *tiny(2))
    running = submit(slurm_cluster, home, "--nproc", "1", *tiny(5000))
    wait_for(slurm_cluster, home, running, lambda r: r["state"] == "running", what="running")
    job = record(slurm_cluster, home, ended)["backend_job_id"]
    deadline = time.monotonic() + 300  # let the short job end without the launcher looking at it
    while slurm_cluster.state(job) not in ("", "COMPLETED"):
        assert time.monotonic() < deadline, f"job {job} did not end"
        time.sleep(1.0)
    stop_slurmctld()
    try:
        listed = launcher(slurm_cluster, home, "list")
        states = {line.split()[0]: line.split()[2] for line in listed.stdout.splitlines()[1:]}
        assert states == {ended: "succeeded", running: "running?"}, listed.stdout
        said = listed.stderr.strip().splitlines()
        assert len(said) == 1 and said[0].startswith("launcher: warning: 1 experiment(s) show their last known "
                                                     "state, marked '?': slurmctld unreachable"), listed.stderr
        status = launcher(slurm_cluster, home, "status", running).stdout
        assert "state: running? (the last known state: slurmctld unreachable" in status
        assert record(slurm_cluster, home, ended)["state"] == "succeeded"
        cancel = launcher(slurm_cluster, home, "cancel", running, check=False)
        lines = cancel.stderr.strip().splitlines()
        assert cancel.returncode == 2 and len(lines) == 1 and "slurmctld unreachable" in lines[0], cancel.stderr
    finally:
        start_slurmctld(slurm_cluster)
    assert record(slurm_cluster, home, running)["state"] == "running"
    launcher(slurm_cluster, home, "cancel", running)
    assert done(record(slurm_cluster, home, running))
