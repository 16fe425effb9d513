"""The Ray backend on a real local Ray head (``tests/integration/ray_cluster.py``), through the real CLI.

One head serves every test of the module (a head takes ~20-40 s to start here, a Ray Train
worker group ~30-40 s). Each job is a 2-worker (gloo) Ray Train run of the shapes config: 20
iterations, a checkpoint every 5, 40 training and 8 validation images.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.runtime.detached import marked_processes as job_processes
from tests.integration.launcher_cli import DATA, SHAPES, done, env_for, launcher, record, train_iters, wait_until
from tests.integration.ray_cluster import head_processes, start_head, stop_head, train_workers
from tests.integration.ray_cluster import ray_head  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ITERS = 20
# The cancel test stops this run after its first checkpoint and the resumed run finishes it. Ray Train's
# graceful abort takes 10-15 s here, so the run must last longer than that (50 iterations did not).
LONG = 300
OTHER_PORT, OTHER_TEMP_DIR = 6397, "/tmp/detl-ray-other"  # a second head beside the fixture's
OTHER_ENV = {"DETLAUNCH_RAY_CLIENT_PORT": "10097", "DETLAUNCH_RAY_MIN_WORKER_PORT": "12000",
             "DETLAUNCH_RAY_MAX_WORKER_PORT": "12499"}


def job(iters: int = ITERS) -> list[str]:
    return ["--cfg-options", *DATA, f"runner.max_iters={iters}", f"evaluation.interval={iters}",
            "checkpoint_config.interval=5"]


def ray_args(head, *extra: str) -> list[str]:
    return ["--backend", "ray", "--address", head.address, "--workers", "2", *extra]


def attempts(work_dir: str) -> list[dict]:
    """Every fact of every launch in the work dir, oldest launch first."""
    from detcore.facts import read_facts

    return [{**e, "run": run.name} for run in sorted((Path(work_dir) / "runs").glob("*")) for e in [f.to_json() for f in read_facts(run)]]


def starts(work_dir: str) -> list[dict]:
    return [a for a in attempts(work_dir) if a["event"] == "start"]


def committed_pointer(work_dir: str, exp_id: str) -> dict | None:
    """The newest detcore checkpoint pointer Ray Train has committed (all ranks reported it): Ray's
    checkpoint manager snapshot names its directory in Ray's storage, which holds the pointer."""
    run = Path(work_dir) / "ray" / f"detlaunch-{exp_id}"
    try:
        latest = json.loads((run / "checkpoint_manager_snapshot.json").read_text()).get("latest_checkpoint_result")
        return json.loads((run / latest["checkpoint_dir_name"] / "detcore_checkpoint.json").read_text()) \
            if latest else None
    except (FileNotFoundError, ValueError):  # not written yet, or replaced while we read
        return None


def wait_for(predicate, what: str, timeout: float = 300, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def assert_nothing_left(head, exp_id: str, grace_s: float = 20) -> None:
    """No process of the job on this node (the driver, its Ray actors) and no Ray Train worker on the head,
    at the latest ``grace_s`` from now (Ray tears a finished run's actors down asynchronously)."""
    deadline = time.monotonic() + grace_s
    while (job_processes(exp_id) or train_workers(head)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not job_processes(exp_id), [p.cmdline() for p in job_processes(exp_id)]
    assert not train_workers(head)


def test_unreachable_address_fails_fast_with_one_line(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    t0 = time.monotonic()
    proc = launcher(home, "submit", SHAPES, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--workers", "2",
                    *job(), check=False, timeout=60)
    assert proc.returncode == 2 and time.monotonic() - t0 < 30
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (f"launcher submit: error: cannot reach a Ray head (GCS) at 127.0.0.1:{port}: Connection "
                         f"refused (checked for 5 s); start one with cluster/ray/start.sh or pass --address")
    assert json.loads(launcher(home, "list", "--json").stdout) == []


def test_two_worker_job_runs_to_the_end_and_is_managed_after_its_submitter_exits(home, ray_head):
    sub = subprocess.Popen([sys.executable, "-m", "launcher", "submit", SHAPES, *ray_args(ray_head), "--name", "e2e",
                            *job()], cwd=home.parent, env=env_for(home), stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    exp_id = sub.stdout.readline().strip()  # the id first, then rank 0's log while the submitter follows it
    wait_until(home, exp_id, lambda r: r["state"] == "running" or done(r), poll=1.0)
    os.killpg(sub.pid, signal.SIGKILL)  # the submitting command (and its session) is gone
    sub.wait()
    rec = wait_until(home, exp_id, done, timeout=600, poll=2.0)
    assert rec["state"] == "succeeded" and rec["exit_code"] == 0 and rec["restarts"] == 0, rec["reason"]
    assert rec["backend"] == "ray" and rec["world_size"] == 2 and rec["last_iter"] == ITERS
    assert rec["last_ap"] is not None and rec["last_loss"] > 0
    # rank 0 recorded its scaling decision as a fact of the launch (as under the shim): the row knows the schedule
    assert rec["max_iter"] == ITERS and rec["scaling"]["world_size"] == 2, (rec["max_iter"], rec["scaling"])
    work = rec["work_dir"]
    assert train_iters(work) == list(range(1, ITERS + 1))
    assert (Path(work) / "last_checkpoint").read_text().strip() == f"iter_{ITERS}.pth"
    # Ray Train set up the group on loopback: both ranks rendezvoused on 127.0.0.1, on one port
    ranks = starts(work)
    assert sorted(a["rank"] for a in ranks) == [0, 1] and {a["world_size"] for a in ranks} == {2}
    assert {a["master_addr"] for a in ranks} == {"127.0.0.1"}
    assert len({a["master_port"] for a in ranks}) == 1 and rec["ports"] == [ranks[0]["master_port"]]
    # detcore's checkpoints were reported to Ray as pointers, the last one to the final checkpoint
    pointer = committed_pointer(work, exp_id)
    assert pointer == {"checkpoint": f"iter_{ITERS}.pth", "iter": ITERS, "path": f"{work}/iter_{ITERS}.pth",
                       "work_dir": work}
    # managed from other processes: status (above), logs, list
    logs = launcher(home, "logs", exp_id).stdout
    assert "saved checkpoint" in logs and f"iter {ITERS}/{ITERS}" in logs
    assert (Path(work) / "logs" / "rank1.log").is_file()
    listed = json.loads(launcher(home, "list", "--backend", "ray", "--json").stdout)
    assert [(e["id"], e["state"]) for e in listed] == [(exp_id, "succeeded")]
    assert_nothing_left(ray_head, exp_id)


def test_killed_worker_restarts_the_group_from_the_newest_checkpoint(home, ray_head):
    iters = 3 * ITERS  # still training for seconds after the first committed checkpoint, when rank 1 is killed
    exp_id = launcher(home, "submit", SHAPES, *ray_args(ray_head, "--max-failures", "1"), "--detach",
                      *job(iters)).stdout.strip()
    work = record(home, exp_id)["work_dir"]
    wait_for(lambda: committed_pointer(work, exp_id), "a checkpoint committed by Ray Train")
    rec = record(home, exp_id)  # the reason follows the job's stage (the workers' heartbeats)
    assert rec["state"] == "running" and rec["reason"].startswith(("training at iteration ", "evaluating at ")), rec
    victim = [a for a in starts(work) if a["rank"] == 1][-1]
    os.kill(victim["pid"], signal.SIGKILL)
    assert not [a for a in attempts(work) if a["event"] == "end"], "the run ended before rank 1 was killed"
    rec = wait_until(home, exp_id, done, timeout=600, poll=2.0)
    assert rec["state"] == "succeeded", rec["reason"]
    assert rec["restarts"] == 1 and rec["last_iter"] == iters
    # the killed rank is named: Ray Train reported rank 1, and rank 0 (torn down afterwards) is not blamed
    assert f"last failure: rank 1: its worker (pid {victim['pid']} on " in rec["reason"], rec["reason"]
    assert "rank 0" not in rec["reason"]
    assert set(train_iters(work)) == set(range(1, iters + 1))
    assert (Path(work) / "last_checkpoint").read_text().strip() == f"iter_{iters}.pth"
    second = [a for a in starts(work) if a["attempt"] == 1]
    assert sorted(a["rank"] for a in second) == [0, 1]
    assert all(a["restored"]["checkpoint"].startswith("iter_") for a in second)  # Ray handed the pointer back
    assert {a["master_addr"] for a in starts(work)} == {"127.0.0.1"}
    log = (Path(work) / "logs" / "rank0.log").read_text()
    assert "Ray Train restored checkpoint iter_" in log and "resumed from" in log
    assert_nothing_left(ray_head, exp_id)


def test_cancel_stops_every_ray_worker_and_resume_finishes_the_run(home, ray_head):
    exp_id = launcher(home, "submit", SHAPES, *ray_args(ray_head), "--detach", *job(LONG)).stdout.strip()
    work = record(home, exp_id)["work_dir"]
    wait_for(lambda: committed_pointer(work, exp_id), "a checkpoint committed by Ray Train", poll=0.2)
    assert train_workers(ray_head) and job_processes(exp_id)
    t0 = time.monotonic()
    out = launcher(home, "cancel", exp_id).stdout
    assert f"{exp_id}: cancelled" in out and time.monotonic() - t0 < 60
    assert_nothing_left(ray_head, exp_id, grace_s=5)  # no RayTrainWorker left (Ray reaps exiting ones async)
    rec = record(home, exp_id)
    assert rec["state"] == "cancelled" and rec["ended"] is not None and rec["last_iter"] < LONG
    assert f"{exp_id}: already cancelled" in launcher(home, "cancel", exp_id).stdout

    resumed = launcher(home, "resume", exp_id, timeout=600)
    assert f"resuming {exp_id}" in resumed.stderr
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded" and rec["last_iter"] == LONG, rec["reason"]
    assert set(train_iters(work)) == set(range(1, LONG + 1))
    runs = {a["run"] for a in starts(work)}
    assert len(runs) == 2  # the first run and the resumed one
    last_run = [a for a in starts(work) if a["run"] == starts(work)[-1]["run"]]
    assert all(a["restored"] and a["restored"]["checkpoint"].startswith("iter_") for a in last_run)
    assert "resumed from" in (Path(work) / "logs" / "rank0.log").read_text()
    assert_nothing_left(ray_head, exp_id)


def test_stop_script_stops_its_own_head_and_leaves_the_other(ray_head):
    """cluster/ray/stop.sh --port P stops that head (workers included) while another head on the machine runs on."""
    other = start_head(num_cpus=1, port=OTHER_PORT, temp_dir=OTHER_TEMP_DIR, head_env=OTHER_ENV)
    try:
        assert other.started_here and head_processes(other)
        proc = stop_head(other)
        assert proc.returncode == 0 and "stopped the Ray head at 127.0.0.1:" in proc.stderr, proc.stderr
        assert not head_processes(other)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", OTHER_PORT), timeout=2).close()
        again = stop_head(other)  # idempotent
        assert again.returncode == 0 and "no Ray head at" in again.stderr, again.stderr
        # the fixture's head still serves: a client connects and sees its 4 CPUs
        check = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r); "
                                "print(int(ray.cluster_resources()['CPU']))" % ray_head.address],
                               env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, capture_output=True,
                               text=True, timeout=120)
        assert check.stdout.strip().splitlines()[-1] == "4", check.stderr[-2000:]
    finally:
        stop_head(other)


def test_a_local_experiment_resumed_on_ray_finishes_there(home, ray_head):
    """`launcher resume ID --backend ray`: the same experiment continues under Ray Train from its newest checkpoint."""
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "1", "--detach", *job(60)).stdout.strip()
    work = record(home, exp_id)["work_dir"]
    wait_for(lambda: (Path(work) / "last_checkpoint").exists(), "a local checkpoint", poll=0.2)
    assert f"{exp_id}: cancelled" in launcher(home, "cancel", exp_id).stdout
    saved = (Path(work) / "last_checkpoint").read_text().strip()
    resumed = launcher(home, "resume", exp_id, "--backend", "ray", "--address", ray_head.address, "--workers", "2",
                       timeout=900)
    assert "on the ray backend (was local)" in resumed.stderr
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded" and rec["backend"] == "ray" and rec["world_size"] == 2, rec["reason"]
    assert [(h["backend"], h["state"]) for h in rec["history"]] == [("local", "cancelled")]
    assert f"resumed from {work}/{saved}" in (Path(work) / "logs" / "rank0.log").read_text()
    assert sorted(a["rank"] for a in starts(work) if a["run"] == rec["run_id"]) == [0, 1]
    assert_nothing_left(ray_head, exp_id)


def add_node(head, min_worker_port: int, max_worker_port: int) -> str:
    """Join a second Ray node (2 CPUs) to the head with cluster/ray/add_node.py; its node id."""
    added = subprocess.run([sys.executable, str(ROOT / "cluster" / "ray" / "add_node.py"), "--address", head.address,
                            "--num-cpus", "2", "--min-worker-port", str(min_worker_port), "--max-worker-port",
                            str(max_worker_port)], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                           text=True, timeout=240)
    assert added.returncode == 0, f"cannot add a second Ray node:\n{added.stderr[-3000:]}"
    return added.stdout.strip().splitlines()[-1]


def test_a_job_across_two_ray_nodes(home, ray_head):
    """A second Ray node joins the head (cluster/ray/add_node.py, on 127.0.0.1); `--nodes 2` places one
    worker on each node and the job trains to the end across them."""
    node2 = add_node(ray_head, 12500, 13999)
    rec = json.loads(launcher(home, "submit", SHAPES, "--backend", "ray", "--address", ray_head.address, "--nodes",
                              "2", "--workers", "1", "--json", *job(), timeout=900).stdout)
    assert rec["state"] == "succeeded" and rec["world_size"] == 2 and rec["last_iter"] == ITERS, rec["reason"]
    ranks = [a for a in starts(rec["work_dir"]) if a["run"] == rec["run_id"]]
    assert sorted(a["rank"] for a in ranks) == [0, 1]
    assert len({a["node_id"] for a in ranks}) == 2 and node2 in {a["node_id"] for a in ranks}
    assert {a["master_addr"] for a in ranks} == {"127.0.0.1"}
    assert_nothing_left(ray_head, rec["id"])


def raylet_of(head, node_id: str) -> tuple[psutil.Process, bool] | None:
    """The raylet of one node of this head (its command line names the node id), and whether it is the head's."""
    for proc in head_processes(head):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if cmd and cmd[0].endswith("raylet") and any(node_id in arg for arg in cmd):
            return proc, "--head" in cmd
    return None


def test_a_lost_second_node_is_named_with_its_rank(home, ray_head):
    """The raylet of the node running one rank is SIGKILLed (its worker dies with it) and Ray Train does not
    retry (--max-failures 0): the reason names that rank and its lost node, from Ray's report and Ray's own
    verdict on the node, not rank 0, which Ray tore down afterwards."""
    add_node(ray_head, 11000, 11999)  # worker ports of its own: another test's node may still run
    exp_id = launcher(home, "submit", SHAPES, "--backend", "ray", "--address", ray_head.address, "--nodes", "2",
                      "--workers", "1", "--max-failures", "0", "--detach", *job(LONG)).stdout.strip()
    work = record(home, exp_id)["work_dir"]
    ranks = wait_for(lambda: len(starts(work)) == 2 and starts(work), "both ranks started")
    raylets = {a["rank"]: raylet_of(ray_head, a["node_id"]) for a in ranks}
    assert all(raylets.values()), f"a rank's node has no raylet among the head's processes: {raylets}"
    victim = next(rank for rank, (_, is_head) in raylets.items() if not is_head)  # SPREAD: one rank off the head
    node = next(a["node_id"] for a in ranks if a["rank"] == victim)
    wait_for(lambda: (Path(work) / "metrics.jsonl").exists(), "a trained iteration")
    raylets[victim][0].kill()  # the node is gone: its worker dies with its raylet
    rec = wait_until(home, exp_id, done, timeout=300, poll=2.0)
    assert rec["state"] == "failed", rec
    assert rec["reason"].startswith(f"rank {victim} lost with its node {node[:12]} (127.0.0.1) (Ray: "), rec
    assert_nothing_left(ray_head, exp_id)


def test_driver_sigkilled_is_monitor_lost_and_resume_finishes_the_run(home, ray_head):
    exp_id = launcher(home, "submit", SHAPES, *ray_args(ray_head), "--detach", *job(60)).stdout.strip()
    rec = record(home, exp_id)
    work = rec["work_dir"]
    wait_for(lambda: committed_pointer(work, exp_id), "a checkpoint committed by Ray Train", poll=0.2)
    os.kill(int(rec["backend_job_id"]), signal.SIGKILL)  # the detached driver, as the OOM killer would
    rec = wait_until(home, exp_id, done, timeout=120)
    assert rec["state"] == "failed" and rec["reason"].startswith("monitor lost: the Ray driver"), rec
    launcher(home, "resume", exp_id, timeout=600)
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded" and set(train_iters(work)) == set(range(1, 61)), rec["reason"]
    assert [h["reason"][:12] for h in rec["history"]] == ["monitor lost"]
    assert_nothing_left(ray_head, exp_id)
