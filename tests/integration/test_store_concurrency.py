"""The experiment store under 20 concurrent writer processes: every insert and every final update survives."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from launcher.state import JobState
from launcher.store import ExperimentStore

ROOT = Path(__file__).resolve().parents[2]
WRITERS, ROWS = 20, 25

WRITER = r"""
import sys, time
from launcher.spec import JobSpec, JobStatus, Resources
from launcher.state import JobState
from launcher.store import ExperimentStore, experiment_from_spec

home, w, rows, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
store = ExperimentStore(home)
while time.time() < go:
    time.sleep(0.001)
for i in range(rows):
    exp_id = f"{w:04x}{i:04x}"
    spec = JobSpec(id=exp_id, name=f"w{w}-{i}", config="/c.yaml", work_dir=f"/w/{exp_id}", cwd="/",
                   resources=Resources(nproc=2))
    store.insert(experiment_from_spec(spec, JobState.PENDING))
    store.set_backend_job(exp_id, str(w * 1000 + i))
    store.record_status(exp_id, JobStatus(JobState.RUNNING, ports=(20000 + w,)))
    store.record_metrics(exp_id, i, 1.0 / (i + 1), None, {"loss": 1.0 / (i + 1)})
    store.record_status(exp_id, JobStatus(JobState.SUCCEEDED, exit_code=0, restarts=i % 3))
"""


def test_20_concurrent_writers_lose_nothing(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    import time

    go = time.time() + 5.0  # all writers start writing at the same moment (a fresh database, too)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(w), str(ROWS), str(go)], env=env,
                              stderr=subprocess.PIPE, text=True) for w in range(WRITERS)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    store = ExperimentStore(home)
    rows = store.list()
    assert len(rows) == WRITERS * ROWS
    assert len({r.id for r in rows}) == WRITERS * ROWS
    for r in rows:
        w, i = int(r.id[:4], 16), int(r.id[4:], 16)
        assert r.state is JobState.SUCCEEDED and r.exit_code == 0
        assert (r.backend_job_id, r.restarts, r.last_iter, r.port_list) == (str(w * 1000 + i), i % 3, i, [20000 + w])
        assert r.started is not None and r.ended is not None
