"""A node of a running 2-node Slurm job dies: the launcher must not report the job as running forever.

Node n2 of the local test cluster is ``slurmd -N n2`` on this machine, so its "death" is simulated by
SIGKILLing that slurmd and every process of the job that runs "on n2" (its slurmstepd and the task
whose environment says SLURMD_NODENAME=n2). slurmctld notices the silent node after SlurmdTimeout
(30 s in the test cluster's slurm.conf) and fails or requeues the job; the rank on n1 loses its gloo
peer meanwhile. Afterwards slurmd -N n2 is restarted the way start.sh starts it and the node resumed,
so the tests after this one still have two nodes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.integration.slurm_cluster import CLUSTER_DIR, SlurmCluster, slurm_cluster  # noqa: F401  (the fixture)
from tests.integration.test_slurm import (done, home, launcher, launcher_lines, record, submit,  # noqa: F401
                                          tiny, wait_for, wait_iters)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

NODE = "n2"
# SlurmdTimeout (30 s) + the ping interval + requeue/kill handling (KillWait 5 s), with margin
NOTICE_TIMEOUT = 100


def slurmd_pid(node: str) -> int | None:
    pid_file = CLUSTER_DIR / "run" / f"slurmd-{node}.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None


def processes_on(node: str, job_id: str) -> list[psutil.Process]:
    """The job's processes on ``node``: its tasks (by environment) and the slurmstepd above them."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["environ"]):
        env = proc.info["environ"] or {}
        if env.get("SLURMD_NODENAME") != node or env.get("SLURM_JOB_ID") != job_id:
            continue
        found[proc.pid] = proc
        try:
            for parent in proc.parents():
                if parent.name().startswith("slurmstepd"):
                    found[parent.pid] = parent
        except psutil.Error:
            pass
    return list(found.values())


def node_state(cluster: SlurmCluster, node: str) -> str:
    return cluster.run("sinfo", "-h", "-N", "-n", node, "-o", "%t", check=False).strip()


def restore_node(cluster: SlurmCluster, node: str) -> None:
    """Restart ``slurmd -N node`` as start.sh does, resume the node and wait until it is idle."""
    if slurmd_pid(node) is None:
        (CLUSTER_DIR / "run" / f"slurmd-{node}.pid").unlink(missing_ok=True)
        with open(CLUSTER_DIR / "log" / f"slurmd-{node}.out", "ab") as out:
            subprocess.run(["slurmd", "-N", node], env=cluster.env, stdin=subprocess.DEVNULL, stdout=out,
                           stderr=subprocess.STDOUT, check=True, timeout=60)
    deadline = time.monotonic() + 60
    resumed = False
    while (state := node_state(cluster, node)) not in ("idle", "mix", "alloc"):
        if not resumed and state.rstrip("*$~#") in ("down", "drain", "drng", "fail"):
            cluster.run("scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)
            resumed = True
        assert time.monotonic() < deadline, f"node {node} is {state!r}, not idle again after its slurmd restarted"
        time.sleep(0.5)


def test_running_job_loses_a_node(slurm_cluster, home, tmp_path):
    cluster = slurm_cluster
    work = tmp_path / "node failure"
    exp = submit(cluster, home, "--nodes", "2", "--tasks-per-node", "1", "--time", "15", "--work-dir", str(work),
                 *tiny(200))
    job = None
    try:
        rec = wait_for(cluster, home, exp, lambda r: r["state"] == "running", timeout=120, what="running")
        job = rec["backend_job_id"]
        wait_iters(work, 2)  # both ranks are up and training together
        assert " on n1: rank 0/2 " in launcher_lines(work, 0)[0]
        assert " on n2: rank 1/2 " in launcher_lines(work, 1)[0]
        victims = processes_on(NODE, job)
        assert any(p.name().startswith("slurmstepd") for p in victims), victims
        assert len(victims) >= 2, victims
        pid = slurmd_pid(NODE)
        assert pid is not None, f"no live slurmd -N {NODE} (pid file under {CLUSTER_DIR / 'run'})"

        # the node dies: its slurmd, then everything of the job that ran on it, all at once
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        for proc in sorted(victims, key=lambda p: not p.name().startswith("slurmstepd")):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)
        print(f"killed slurmd -N {NODE} (pid {pid}) and job processes {sorted(p.pid for p in victims)}")

        seen = []
        deadline = t0 + NOTICE_TIMEOUT
        while True:
            rec = record(cluster, home, exp)
            slurm = cluster.state(job)
            now = round(time.monotonic() - t0, 1)
            if not seen or seen[-1][1:] != (rec["state"], slurm, node_state(cluster, NODE)):
                seen.append((now, rec["state"], slurm, node_state(cluster, NODE)))
                print(f"t+{now:5.1f}s launcher={rec['state']} ({rec['reason']}) squeue={slurm or '-'} "
                      f"{NODE}={node_state(cluster, NODE)}")
            if rec["state"] != "running":
                break
            assert time.monotonic() < deadline, (
                f"{exp} still reported running {NOTICE_TIMEOUT} s after node {NODE} died: {seen}\n{rec['reason']}")
            time.sleep(1.0)
        print(cluster.run("sacct", "-n", "-P", "-D", "-j", job, "-o", "JobID,State,ExitCode,NodeList,Reason",
                          check=False).strip())
        assert rec["state"] in ("preempted", "pending", "failed"), (rec["state"], rec["reason"], seen)
        if rec["state"] == "failed":  # the rank on the lost node is named, not rank 0 whose collective lost it
            assert "rank 1 " in rec["reason"] and "rank 0" not in rec["reason"], rec
        else:  # requeued: it may wait for the dead node for as long as it likes; then it is cancelled
            if rec["state"] == "preempted":
                assert rec["restarts"] == 1 and "requeued after a node failure (rank 1 " in rec["reason"], rec
            assert launcher(cluster, home, "cancel", exp).stdout.strip() == f"{exp}: cancelled"
            rec = record(cluster, home, exp)
            print(f"after cancel: {rec['state']} ({rec['reason']}) restarts={rec['restarts']} "
                  f"last_iter={rec['last_iter']}")
            assert rec["state"] == "cancelled", rec
        assert record(cluster, home, exp)["state"] != "running"
    finally:
        if job is not None and cluster.state(job) not in ("",):
            cluster.run("scancel", job, check=False)
        restore_node(cluster, NODE)
    assert sorted(cluster.run("sinfo", "-h", "-N", "-o", "%N %t").split()) == sorted(["n1", "idle", "n2", "idle"])
