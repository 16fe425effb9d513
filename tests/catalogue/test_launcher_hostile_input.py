"""Hostile or broken input to the launcher and its own state: huge sweeps, control characters, a damaged store.

Each case runs ``launcher`` as a subprocess under an address-space limit (``RLIMIT_AS``) and the
harness's wall-clock limit (no timing is asserted). A user error exits 2 with one line naming what
was wrong and leaves no experiment, work dir or job folder; a damaged store is one line and every
row comes back.
"""
from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHAPES = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")
GIB = 1 << 30
CLI_AS = 2 * GIB  # the launcher CLI never imports torch for these
TIMEOUT_S = 120

THOUSAND = ",".join(str(i) for i in range(1, 1001))
ESC = "\x1b[2J"

# (id, argv, words in the one error line)
USER_ERRORS = [
    ("sweep-10000-points", ["sweep", SHAPES, "--grid", f"runner.max_iters={THOUSAND}", "--grid", "seed=1,2,3,4,5,6,7,8,9,10"],
     ["10,000 experiments", "more than 256", "--yes"]),
    ("sweep-a-billion-points", ["sweep", SHAPES, "--grid", f"runner.max_iters={THOUSAND}", "--grid",
                                f"optimizer.lr={THOUSAND}", "--grid", f"+x={THOUSAND}"],
     ["1,000,000,000 experiments", "--yes"]),
    ("override-escape-code", ["submit", SHAPES, "--cfg-options", f"optimizer.lr={ESC}"],
     ["optimizer.lr=\\x1b[2J", "invalid YAML", "unacceptable character"]),
    ("grid-escape-code", ["sweep", SHAPES, "--grid", f"optimizer.lr=0.1,{ESC}"], ["\\x1b[2J", "invalid YAML"]),
    ("name-escape-code", ["submit", SHAPES, "--name", f"a{ESC}"], ["\\x1b[2J", "may only hold"]),
    ("resume-unknown", ["resume", "deadbeef"], ["no experiment 'deadbeef'"]),
]


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CLI_AS, CLI_AS))


def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAUNCHER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("LAUNCHER_FAKE_GPUS", None)
    return subprocess.run([sys.executable, "-m", "launcher", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S, preexec_fn=_limit)


@pytest.mark.parametrize("case", USER_ERRORS, ids=[c[0] for c in USER_ERRORS])
def test_hostile_launcher_input_is_one_line_and_leaves_nothing(case, tmp_path):
    _, argv, words = case
    proc = run(tmp_path, *argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"launcher {argv[0]}: error: "), proc.stderr[-3000:]
    assert "\x1b" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "work_dirs").exists()
    home = tmp_path / "home"
    assert not any((home / sub).exists() and any((home / sub).iterdir()) for sub in ("jobs", "slurm", "ray"))
    if (home / "experiments.db").exists():
        assert sqlite3.connect(home / "experiments.db").execute("SELECT count(*) FROM experiments").fetchone()[0] == 0


def test_the_dry_run_of_a_billion_point_grid_is_bounded(tmp_path):
    proc = run(tmp_path, "sweep", SHAPES, "--grid", f"runner.max_iters={THOUSAND}", "--grid",
               f"optimizer.lr={THOUSAND}", "--grid", f"+x={THOUSAND}", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[0] == ("launcher: sweep of 1,000,000,000 experiment(s) (1000 runner.max_iters x "
                                           "1000 optimizer.lr x 1000 +x)")
    assert "the first 3 of 1,000,000,000 experiments are shown" in proc.stderr
    assert not (tmp_path / "work_dirs").exists()


def _store_with_rows(tmp_path: Path) -> list[dict]:
    from launcher.spec import JobSpec, JobState, JobStatus
    from launcher.store import ExperimentStore, experiment_from_spec

    store = ExperimentStore(tmp_path / "home")
    for i in range(1, 4):
        spec = JobSpec(id=f"0000000{i}", name=f"x{i}", config=SHAPES, work_dir=str(tmp_path / f"w{i}"), cwd="/")
        store.insert(experiment_from_spec(spec, JobState.PENDING))
        store.set_backend_job(spec.id, "1", {})
        store.record_status(spec.id, JobStatus(JobState.SUCCEEDED, exit_code=0))
    store.set_note("00000002", f"{ESC}state: failed")
    rows = [e.to_json() for e in store.list()]
    store.close()
    return rows


DAMAGE = {
    "zero-bytes": lambda db: db.write_bytes(b""),
    "garbage-header": lambda db: db.write_bytes(b"\0" * 4096 + os.urandom(4096)),
    "a-folder": lambda db: (db.unlink(), db.mkdir()),
    "a-fifo": lambda db: (db.unlink(), os.mkfifo(db)),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_store_is_one_line_and_every_row_comes_back(damage, tmp_path):
    before = _store_with_rows(tmp_path)
    db = tmp_path / "home" / "experiments.db"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    DAMAGE[damage](db)
    proc = run(tmp_path, "list", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stderr.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"launcher: the experiment store {db} was "), proc.stderr
    assert [(r["id"], r["state"], r["note"]) for r in json.loads(proc.stdout)] == \
        [(r["id"], r["state"], r["note"]) for r in before]
    listed = run(tmp_path, "list", "--wide")
    assert listed.returncode == 0 and listed.stderr == "" and "\x1b" not in listed.stdout
    assert "\\x1b[2Jstate: failed" in listed.stdout


def test_a_store_padded_to_10_gib_is_read_in_bounded_memory(tmp_path):
    """Zeros after the last page (a sparse file): SQLite reads only the pages its b-trees name; nothing is lost."""
    before = _store_with_rows(tmp_path)
    db = tmp_path / "home" / "experiments.db"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    os.truncate(db, 10 * GIB)
    proc = run(tmp_path, "list", "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert [r["id"] for r in json.loads(proc.stdout)] == [r["id"] for r in before]
