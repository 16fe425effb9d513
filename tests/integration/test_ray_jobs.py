"""Test jobs, sweeps and Ray Client on a real local Ray head (``tests/integration/ray_cluster.py``), through the
real CLI.

The session's checkpoint of the shapes config (conftest's ``shapes_checkpoint``); ``launcher submit --test CKPT
--backend ray`` evaluates it with two Ray Train workers (each its share of the test split) and the
experiment records the checkpoint's AP, as a local test job does. A 2-point sweep runs both experiments
on Ray to the end, and a job submitted with ``--address ray://...`` goes through the head's Ray Client server.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.launcher_cli import DATA, SHAPES, launcher, record
from tests.integration.ray_cluster import ray_head  # noqa: F401  (a fixture)
from tests.integration.test_ray import assert_nothing_left, ray_args, starts

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TEST_DATA = ["data.test.num_train=40", "data.test.num_val=8"]


def test_a_test_job_on_ray_prints_and_records_the_checkpoints_ap(home, ray_head, shapes_checkpoint):
    proc = launcher(home, "submit", SHAPES, "--test", str(shapes_checkpoint), "--eval", "bbox", *ray_args(ray_head),
                    "--name", "ray-test", "--cfg-options", *DATA, *TEST_DATA, timeout=600)
    exp_id = proc.stdout.splitlines()[0].strip()
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded" and rec["exit_code"] == 0, rec["reason"]
    assert rec["backend"] == "ray" and rec["mode"] == "test" and rec["world_size"] == 2
    # the checkpoint's AP, from detcore's own evaluation of every image (both workers' shares gathered)
    metrics = json.loads((Path(rec["work_dir"]) / "test_metrics.json").read_text())
    assert rec["last_ap"] == metrics["bbox_AP"] and "bbox_AP50" in rec["last_metrics"]
    assert "Average Precision" in proc.stdout  # the evaluation table, followed from rank 0's log
    detections = json.loads((Path(rec["work_dir"]) / "results.json").read_text())
    assert detections and all(len(d["bbox"]) == 4 for d in detections)
    line = next(x for x in launcher(home, "list").stdout.splitlines() if x.startswith(exp_id))
    assert " test " in line and f"{rec['last_ap']:.3f}" in line
    ranks = starts(rec["work_dir"])  # (a group Ray restarted, e.g. after a slow worker start, evaluates again)
    assert {a["rank"] for a in ranks} == {0, 1} and {a["master_addr"] for a in ranks} == {"127.0.0.1"}
    assert_nothing_left(ray_head, exp_id)


def test_a_two_point_sweep_on_ray_finishes_both_experiments(home, ray_head):
    proc = launcher(home, "sweep", SHAPES, "--grid", "optimizer.lr=0.01,0.02", "--backend", "ray", "--address",
                    ray_head.address, "--workers", "1", "--max-restarts", "0", "--name", "raysweep", "--cfg-options",
                    *DATA, "runner.max_iters=2", "checkpoint_config.interval=2", timeout=900)
    ids = [line.split()[0] for line in proc.stdout.splitlines()[:2]]  # then the closing table
    recs = [record(home, i) for i in ids]
    assert [r["state"] for r in recs] == ["succeeded", "succeeded"], [r["reason"] for r in recs]
    assert {r["backend"] for r in recs} == {"ray"} and recs[0]["sweep"] == recs[1]["sweep"]
    assert sorted(r["grid"]["optimizer.lr"] for r in recs) == ["0.01", "0.02"]
    for rec in recs:  # each its own Ray Train run, to its last iteration (2, doubled for 1 worker's batch of 2)
        work = Path(rec["work_dir"])
        assert (work / "last_checkpoint").read_text().strip() == f"iter_{rec['last_iter']}.pth"
        assert rec["last_iter"] == 4 and (work / "ray" / f"detlaunch-{rec['id']}").is_dir()
    listed = launcher(home, "list", "--sweep", recs[0]["sweep"]).stdout.splitlines()
    assert len(listed) == 3 and all(" succeeded " in line for line in listed[1:])
    for i in ids:
        assert_nothing_left(ray_head, i)


def test_a_job_through_ray_client_runs_to_the_end(home, ray_head):
    """``--address ray://HOST:PORT``: the driver reaches the head through its Ray Client server."""
    from tests.integration.ray_cluster import HEAD_ENV

    client = f"ray://127.0.0.1:{HEAD_ENV['DETLAUNCH_RAY_CLIENT_PORT']}"
    out = launcher(home, "submit", SHAPES, "--backend", "ray", "--address", client, "--workers", "2", "--name",
                   "client", "--cfg-options", *DATA, "runner.max_iters=4", "checkpoint_config.interval=2",
                   timeout=600).stdout
    rec = record(home, out.splitlines()[0].strip())
    assert rec["state"] == "succeeded" and rec["last_iter"] == 4, rec["reason"]
    assert rec["backend_extra"]["address"] == client and f"finished on Ray at {client}" == rec["reason"]
    # the head's Ray Client proxy ends the session's own server process after the driver left (it checks every 30 s)
    assert_nothing_left(ray_head, rec["id"], grace_s=90)
