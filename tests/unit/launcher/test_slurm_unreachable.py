"""A Slurm daemon that does not answer: every query time-boxed, asked once per command, the experiment kept at
its last known state and marked stale (``running?``), with one line saying why.

The Slurm client commands are small scripts on ``PATH`` that print what Slurm's clients print when
slurmctld or slurmdbd is down (Slurm 22.05), or hang; the backend's real subprocess seam runs them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import launcher.backends.slurm.queries as slurm_queries
from launcher.backends.slurm import SlurmBackend, SlurmUnreachable
from launcher.backends.slurm.script import SlurmDefaults
from launcher.spec import JobHandle, JobSpec, JobState, JobStatus, Resources
from launcher.store import ExperimentStore, experiment_from_spec

ROOT = Path(__file__).resolve().parents[3]
DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
DBD_DOWN = "sacct: error: Problem talking to the database: Connection refused"
SA_COMPLETED = "12|12|COMPLETED|0:0|2026-11-24T16:15:47|2026-11-24T16:16:39|n1"
SA_RUNNING = "16|16|RUNNING|0:0|2026-11-24T16:23:12|Unknown|n1"


def fake_slurm(folder: Path, squeue: str, sacct: str) -> dict[str, str]:
    """``squeue`` and ``sacct`` scripts in ``folder`` (each appends its name to ``calls``); the environment
    that puts them first on PATH. ``squeue``/``sacct``: a shell body."""
    folder.mkdir(exist_ok=True)
    for name, body in (("squeue", squeue), ("sacct", sacct)):
        path = folder / name
        path.write_text(f"#!/bin/sh\necho {name} >> {folder}/calls\n{body}\n")
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def calls(folder: Path) -> list[str]:
    path = folder / "calls"
    return path.read_text().split() if path.exists() else []


def handle(job_id: str) -> JobHandle:
    return JobHandle("0123abcd", "slurm", job_id, (("folder", "/nowhere"), ("work_dir", "/nowhere")))


@pytest.fixture
def backend(tmp_path):
    return SlurmBackend(tmp_path / "home", SlurmDefaults(), python="/py", repo_root="/repo")


def test_slurmctld_down_is_asked_once_per_command(tmp_path, backend, monkeypatch):
    env = fake_slurm(tmp_path / "bin", f"echo '{DOWN}' >&2; exit 1", f"echo '{SA_RUNNING}'")
    monkeypatch.setenv("PATH", env["PATH"])
    for job in ("16", "17", "18"):
        with pytest.raises(SlurmUnreachable, match="slurmctld unreachable: squeue: .*Unable to contact"):
            backend.status(handle(job))
    assert calls(tmp_path / "bin") == ["squeue", "sacct", "sacct", "sacct"]  # one squeue; sacct asks slurmdbd


def test_a_job_that_completed_is_known_from_accounting_while_slurmctld_is_down(tmp_path, backend, monkeypatch):
    env = fake_slurm(tmp_path / "bin", f"echo '{DOWN}' >&2; exit 1", f"echo '{SA_COMPLETED}'")
    monkeypatch.setenv("PATH", env["PATH"])
    st = backend.status(handle("12"))
    assert (st.state, st.exit_code) == (JobState.SUCCEEDED, 0)


def test_a_hanging_query_is_cut_off(tmp_path, backend, monkeypatch):
    env = fake_slurm(tmp_path / "bin", "sleep 60", "sleep 60")
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setattr(slurm_queries, "QUERY_TIMEOUT_S", 0.5)
    with pytest.raises(SlurmUnreachable, match=r"slurmctld unreachable: squeue did not answer within 0.5 s"):
        backend.status(handle("16"))
    with pytest.raises(SlurmUnreachable):  # both daemons are now known not to answer: no second wait
        backend.status(handle("17"))
    assert calls(tmp_path / "bin") == ["squeue", "sacct"]


def test_refresh_keeps_the_last_known_state_marked_stale(tmp_path, monkeypatch):
    from launcher.store.reconcile import refresh

    env = fake_slurm(tmp_path / "bin", f"echo '{DOWN}' >&2; exit 1", f"echo '{DBD_DOWN}' >&2; exit 1")
    monkeypatch.setenv("PATH", env["PATH"])
    store = ExperimentStore(tmp_path / "home")
    spec = JobSpec(id="0123abcd", name="x", config="/c.yaml", work_dir=str(tmp_path / "w"), cwd="/",
                   backend="slurm", resources=Resources(nproc=2))
    store.insert(experiment_from_spec(spec, JobState.PENDING))
    store.set_backend_job(spec.id, "16", {"folder": "/nowhere", "work_dir": str(tmp_path / "w")})
    store.record_status(spec.id, JobStatus(JobState.RUNNING))
    exp, = refresh(store, [store.get(spec.id)])
    assert exp.state is JobState.RUNNING and "slurmctld unreachable" in exp.stale
    assert exp.to_json()["stale"] == exp.stale
    assert store.get(spec.id).state is JobState.RUNNING  # nothing written


def cli(home: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *argv], capture_output=True, text=True, timeout=120,
                          env={**env, "LAUNCHER_HOME": str(home), "PYTHONPATH": str(ROOT)})


def test_list_and_status_show_running_question_mark_and_say_why_once(tmp_path):
    env = fake_slurm(tmp_path / "bin", f"echo '{DOWN}' >&2; exit 1", f"echo '{DBD_DOWN}' >&2; exit 1")
    home = tmp_path / "home"
    store = ExperimentStore(home)
    for i in (1, 2):
        spec = JobSpec(id=f"0000000{i}", name=f"x{i}", config="/c.yaml", work_dir=str(tmp_path / f"w{i}"), cwd="/",
                       backend="slurm", resources=Resources(nproc=2))
        store.insert(experiment_from_spec(spec, JobState.PENDING))
        store.set_backend_job(spec.id, str(16 + i), {"folder": "/nowhere", "work_dir": spec.work_dir})
        store.record_status(spec.id, JobStatus(JobState.RUNNING))
    store.close()
    listed = cli(home, env, "list")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert [r.split()[2] for r in rows] == ["running?", "running?"]
    warning = listed.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("launcher: warning: 2 experiment(s) show their last known "
                                                       "state, marked '?': slurmctld unreachable"), listed.stderr
    assert calls(tmp_path / "bin").count("squeue") == 1
    status = cli(home, env, "status", "00000001")
    assert status.returncode == 0, status.stderr
    assert "state: running? (the last known state: slurmctld unreachable: squeue: " in status.stdout
    as_json = json.loads(cli(home, env, "list", "--json").stdout)
    assert all("slurmctld unreachable" in r["stale"] for r in as_json)
