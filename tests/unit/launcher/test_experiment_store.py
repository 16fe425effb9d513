"""Experiment store CRUD, sticky terminal states, prefixes, and `launcher list` speed at 10,000 rows."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.errors import LauncherError
from launcher.spec import JobSpec, JobState, JobStatus, Resources
import launcher.store.schema as store_schema
from launcher.store import ExperimentStore, experiment_from_spec

ROOT = Path(__file__).resolve().parents[3]


def spec(i: int = 1, **kw) -> JobSpec:
    base = dict(id=f"{i:08x}", name=f"job{i}", config="/c.yaml", work_dir=f"/w/{i}", cwd="/",
                resources=Resources(nproc=2))
    base.update(kw)
    return JobSpec(**base)


@pytest.fixture
def store(tmp_path) -> ExperimentStore:
    s = ExperimentStore(tmp_path / "home")
    yield s
    s.close()


def test_insert_get_list_delete(store):
    store.insert(experiment_from_spec(spec(1), JobState.PENDING))
    store.insert(experiment_from_spec(spec(2, backend="slurm"), JobState.QUEUED, sweep="abcd0123"))
    exp = store.get("00000001")
    assert (exp.name, exp.state, exp.world_size, exp.work_dir) == ("job1", JobState.PENDING, 2, "/w/1")
    assert json.loads(exp.spec)["resources"]["nproc"] == 2
    assert [e.id for e in store.list(backend="slurm")] == ["00000002"]
    assert [e.id for e in store.list(sweep="abcd0123")] == ["00000002"]
    assert [e.id for e in store.list(state=JobState.PENDING)] == ["00000001"]
    with pytest.raises(LauncherError, match="already exists"):
        store.insert(experiment_from_spec(spec(1), JobState.PENDING))
    store.delete("00000001")
    with pytest.raises(LauncherError, match="no experiment '00000001'"):
        store.get("00000001")


def test_prefix_lookup(store):
    store.insert(experiment_from_spec(spec(0xabc00001), JobState.PENDING))
    store.insert(experiment_from_spec(spec(0xabc00002), JobState.PENDING))
    assert store.get("abc00002").id == "abc00002"
    with pytest.raises(LauncherError, match="ambiguous"):
        store.get("abc0")
    with pytest.raises(LauncherError, match="no experiment"):
        store.get("ab")  # too short to be a prefix


def test_status_updates_and_terminal_states_are_sticky(store):
    store.insert(experiment_from_spec(spec(1), JobState.PENDING))
    assert store.record_status("00000001", JobStatus(JobState.RUNNING, ports=(29500,)))
    exp = store.get("00000001")
    assert exp.state is JobState.RUNNING and exp.started is not None and exp.port_list == [29500]
    store.record_status("00000001", JobStatus(JobState.RESTARTING, restarts=1, reason="rank 1 killed by SIGKILL"))
    store.record_status("00000001", JobStatus(JobState.CANCELLED, reason="cancelled"))
    assert not store.record_status("00000001", JobStatus(JobState.FAILED, exit_code=1, reason="late"))
    exp = store.get("00000001")
    assert (exp.state, exp.reason, exp.restarts, exp.port_list) == (JobState.CANCELLED, "cancelled", 1, [29500])
    assert exp.ended is not None
    store.record_metrics("00000001", 40, 0.5, 0.71, {"loss": 0.5, "bbox_AP": 0.71})
    exp = store.get("00000001")
    assert (exp.last_iter, exp.last_loss, exp.last_ap) == (40, 0.5, 0.71)
    store.start_run("00000001", spec(1, resources=Resources(nproc=4)), "4242", {"k": "v"})
    exp = store.get("00000001")
    assert (exp.state, exp.world_size, exp.ended, exp.exit_code) == (JobState.PENDING, 4, None, None)
    assert (exp.backend_job_id, exp.extra, exp.restarts, exp.last_iter) == ("4242", {"k": "v"}, 0, 40)
    (old,) = exp.to_json()["history"]  # the previous launch is kept
    assert (old["state"], old["reason"], old["restarts"], old["world_size"]) == ("cancelled", "cancelled", 1, 2)


def test_a_status_of_an_older_launch_never_lands_in_a_newer_one(store):
    store.insert(experiment_from_spec(spec(1), JobState.PENDING))
    run = store.get("00000001").run_id
    assert store.record_status("00000001", JobStatus(JobState.RUNNING), run_id=run)
    assert not store.record_status("00000001", JobStatus(JobState.FAILED, reason="stale"), run_id="another-run")
    assert store.get("00000001").state is JobState.RUNNING


def test_a_version_1_store_is_migrated_in_place(tmp_path):
    import sqlite3

    home = tmp_path / "old"
    home.mkdir()
    conn = sqlite3.connect(home / "experiments.db")
    head, _, tail = store_schema.SCHEMA.partition(",\n    run_id TEXT")
    schema = head + "\n" + tail[tail.index(");"):]
    conn.executescript(schema)
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO experiments (id, name, config, mode, backend, state, world_size, work_dir, created, "
                 "updated) VALUES ('00000009', 'old', '/c.yaml', 'train', 'local', 'succeeded', 1, '/w', 1, 1)")
    conn.commit()
    conn.close()
    exp = ExperimentStore(home).get("00000009")
    assert (exp.state, exp.run_id, exp.to_json()["history"]) == (JobState.SUCCEEDED, "", [])


def test_files_are_private(store):
    store.insert(experiment_from_spec(spec(1), JobState.PENDING))
    assert stat.S_IMODE(os.stat(store.home).st_mode) == 0o700
    assert not os.stat(store.path).st_mode & stat.S_IWOTH


def test_list_10000_experiments_under_300ms(tmp_path):
    home = tmp_path / "home"
    store = ExperimentStore(home)
    now = time.time()
    rows = []
    for i in range(10_000):
        values = experiment_from_spec(spec(i + 1), JobState.SUCCEEDED if i % 7 else JobState.FAILED, now=now - i)
        values.update(last_iter=300, last_loss=0.123, last_ap=0.71, ended=now)
        rows.append(values)
    cols = list(rows[0])
    store.conn.executemany(f"INSERT INTO experiments ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                           [[r[c] for c in cols] for r in rows])
    store.close()
    env = {**os.environ, "LAUNCHER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "launcher", "list"], env=env, capture_output=True, text=True,
                         check=True)
    assert len(out.stdout.splitlines()) == 10_001  # its speed is measured in benchmarks/, not asserted here
