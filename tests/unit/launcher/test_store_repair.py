"""A damaged, truncated or missing store comes back from the records, job folders and work dirs; a read-only
home is read as it is."""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import launcher.store as store_module
from launcher.store import records, repair as store_repair
from launcher.spec import JobSpec, JobState, JobStatus, Resources, spec_to_dict
from launcher.store import ExperimentStore, StoreReadOnly, experiment_from_spec

ROOT = Path(__file__).resolve().parents[3]


def spec(i: int, work: Path, **kw) -> JobSpec:
    base = dict(id=f"{i:08x}", name=f"job{i}", config="/c.yaml", work_dir=str(work / f"w{i}"), cwd="/",
                resources=Resources(nproc=2), run_id=f"20250101-00000{i}-abcd")
    base.update(kw)
    return JobSpec(**base)


def filled(home: Path, work: Path) -> list[dict]:
    """Four experiments with everything a user writes: a sweep with grid values, tags, a note, a resume, an
    ending; their rows as ``list --json`` shows them."""
    store = ExperimentStore(home)
    for i in (1, 2, 3):
        store.insert(experiment_from_spec(spec(i, work), JobState.PENDING, sweep="5eed0001" if i < 3 else None,
                                          grid={"optimizer.lr": f"0.0{i}"} if i < 3 else None))
        store.set_backend_job(f"{i:08x}", str(4000 + i), {"job_dir": "/nowhere", "supervisor_start": "1"})
    store.insert(experiment_from_spec(spec(4, work, backend="slurm"), JobState.PENDING))
    store.set_backend_job("00000004", "77", {"folder": "/nowhere"})
    store.update_tags("00000001", add=["baseline", "v2"])
    store.set_note("00000002", "lr too high?")
    assert store.record_status("00000003", JobStatus(JobState.SUCCEEDED, exit_code=0, ended=1.0e9))
    store.record_status("00000004", JobStatus(JobState.CANCELLED, reason="cancelled (scancel)"))
    store.start_run("00000004", spec(4, work, backend="slurm", run_id="20250102-000000-beef",
                                     resources=Resources(nproc=1)), "78", {"folder": "/nowhere"})
    store.record_status("00000004", JobStatus(JobState.FAILED, exit_code=1, reason="Slurm job 78 failed"))
    rows = [e.to_json() for e in store.list()]
    store.close()
    return rows


USER_FIELDS = ("id", "name", "config", "backend", "backend_job_id", "work_dir", "sweep", "grid", "tags", "note",
               "history", "run_id", "world_size", "created")


def same_user_fields(before: list[dict], after: list[ExperimentStore]) -> None:
    got = {e.id: e.to_json() for e in after}
    assert set(got) == {r["id"] for r in before}
    for row in before:
        assert {k: got[row["id"]][k] for k in USER_FIELDS} == {k: row[k] for k in USER_FIELDS}


def corrupt_middle(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(8192))


def close_wal(home: Path) -> None:
    """Fold the WAL into the database file (as the last launcher to close it does) so damage hits the file."""
    conn = sqlite3.connect(home / "experiments.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.mark.parametrize("damage", ["garbage in the middle", "truncated to 0 bytes", "not a database", "deleted",
                                    "half the file"])
def test_a_damaged_store_is_kept_aside_and_every_row_comes_back(tmp_path, damage, caplog):
    home, work = tmp_path / "home", tmp_path / "work"
    before = filled(home, work)
    close_wal(home)
    db = home / "experiments.db"
    if damage == "garbage in the middle":
        corrupt_middle(db)
    elif damage == "truncated to 0 bytes":
        db.write_bytes(b"")
    elif damage == "not a database":
        db.write_bytes(b"this is not sqlite\n" * 100)
    elif damage == "half the file":
        db.write_bytes(db.read_bytes()[:db.stat().st_size // 2])
    else:
        db.unlink()
    store = ExperimentStore(home)
    rows = store.list()
    same_user_fields(before, rows)
    states = {e.id: e.state for e in rows}
    assert states["00000003"] is JobState.SUCCEEDED and states["00000004"] is JobState.FAILED  # recorded endings
    assert store.repaired.startswith(f"launcher: the experiment store {db} was ")
    assert "rebuilt 4 experiment(s)" in store.repaired and "\n" not in store.repaired
    aside = [p for p in home.glob("experiments.db.corrupt-*") if not p.name.endswith("-wal")]
    assert (len(aside) == 1) == (damage != "deleted")
    assert store_repair.diagnose(db, home).words == ""
    assert store.conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    store.close()
    again = ExperimentStore(home)
    again.list()
    assert again.repaired == ""  # repaired once, then healthy


def test_a_new_home_is_not_a_lost_store(tmp_path):
    store = ExperimentStore(tmp_path / "home")
    assert store.list() == [] and store.repaired == ""
    assert records.records_complete(tmp_path / "home")


def test_the_work_dir_gives_back_metrics_schedule_and_scaling(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    s = spec(1, work)
    store = ExperimentStore(home)
    store.insert(experiment_from_spec(s, JobState.PENDING))
    store.record_status(s.id, JobStatus(JobState.SUCCEEDED, exit_code=0))
    store.close()
    wd = Path(s.work_dir)
    (wd / "runs" / s.run_id).mkdir(parents=True)
    (wd / "metrics.jsonl").write_text(json.dumps({"mode": "train", "iter": 20, "loss": 0.5}) + "\n"
                                      + json.dumps({"mode": "val", "iter": 20, "bbox_AP": 0.25}) + "\n")
    (wd / "config.yaml").write_text("runner: {type: IterBasedRunner, max_iters: 20}\n")
    (wd / "runs" / s.run_id / "events.jsonl").write_text(json.dumps(
        {"event": "scaling", "rank": 0, "scaling": {"world_size": 2, "total_batch": 8, "lr": 0.04, "base_lr": 0.02,
                                                    "samples_per_gpu": 4, "enabled": True}}) + "\n")
    close_wal(home)
    (home / "experiments.db").write_bytes(b"")
    exp = ExperimentStore(home).get(s.id)
    assert (exp.state, exp.last_iter, exp.max_iter, exp.last_loss, exp.best_ap, exp.lr, exp.total_batch) == \
        (JobState.SUCCEEDED, 20, 20, 0.5, 0.25, 0.04, 8)


def test_job_folders_give_back_experiments_from_before_records(tmp_path):
    """No records (a store from an older launcher): local and Ray folders (spec.json, status.json) and Slurm
    folders (manifest.json with specs, arrays too) give back each experiment with its backend handle."""
    home, work = tmp_path / "home", tmp_path / "work"
    local, ray = spec(1, work), spec(2, work, backend="ray")
    for s, sub, start in ((local, "jobs", 111), (ray, "ray", 222)):
        folder = home / sub / s.id
        folder.mkdir(parents=True)
        (folder / "spec.json").write_text(json.dumps(spec_to_dict(s)))
        (folder / "status.json").write_text(json.dumps({"state": "running", "monitor_pid": 4242,
                                                        "monitor_start": start, "run_dir": "/r"}))
    arr = [spec(3, work, backend="slurm"), spec(4, work, backend="slurm")]
    folder = home / "slurm" / "array-00000003"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"experiments": [s.id for s in arr], "array": True,
                                                      "job_id": "91", "specs": [spec_to_dict(s) for s in arr]}))
    old = home / "slurm" / "00000005"  # submitted by a launcher that kept no specs in the manifest
    old.mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({"experiments": ["00000005"], "array": False, "job_id": "90"}))
    home.mkdir(exist_ok=True)
    (home / "experiments.db").write_bytes(b"")
    store = ExperimentStore(home)
    rows = {e.id: e for e in store.list()}
    assert set(rows) == {"00000001", "00000002", "00000003", "00000004"}
    assert (rows["00000001"].backend, rows["00000001"].backend_job_id, rows["00000001"].extra["supervisor_start"]) \
        == ("local", "4242", "111")
    assert (rows["00000002"].backend, rows["00000002"].extra["driver_start"]) == ("ray", "222")
    assert [rows[i].backend_job_id for i in ("00000003", "00000004")] == ["91_0", "91_1"]
    assert "1 could not be read back (slurm/00000005 (no specs: submitted by an older launcher))" in store.repaired
    assert records.records_complete(home) and len(list(records.records_dir(home).glob("*.json"))) == 4


def test_store_repair_puts_back_rows_the_store_lacks(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    before = filled(home, work)
    conn = sqlite3.connect(home / "experiments.db")
    conn.execute("DELETE FROM experiments WHERE id IN ('00000001', '00000004')")  # e.g. an old backup put back
    conn.commit()
    conn.close()
    store = ExperimentStore(home)
    restored = store.restore_missing()
    assert sorted(restored.ids) == ["00000001", "00000004"]
    same_user_fields(before, store.list())
    assert store.restore_missing().ids == []


def test_rm_removes_the_record_so_a_rebuild_does_not_bring_it_back(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    filled(home, work)
    store = ExperimentStore(home)
    store.delete("00000002")
    store.close()
    close_wal(home)
    (home / "experiments.db").write_bytes(b"")
    assert [e.id for e in ExperimentStore(home).list()] == ["00000001", "00000003", "00000004"]


def test_a_read_only_home_reads_and_refuses_writes_in_one_line(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    before = filled(home, work)
    close_wal(home)

    def read_only(path, timeout):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(store_module, "blocking_flock", read_only)
    store = ExperimentStore(home)
    same_user_fields(before, store.list())
    assert store.read_only.startswith("read-only")
    with pytest.raises(StoreReadOnly, match=r"is read-only \(Read-only file system\): this command must write"):
        store.set_note("00000001", "x")
    with pytest.raises(StoreReadOnly):
        store.record_metrics("00000001", 1, 1.0, None, {})
    corrupt_middle(home / "experiments.db")  # damaged and read-only: shown from the records, nothing written
    damaged = ExperimentStore(home)
    same_user_fields(before, damaged.list())
    assert "cannot be rebuilt in place" in damaged.repaired
    assert not list(home.glob("experiments.db.corrupt-*"))


def run_cli(home: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAUNCHER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "launcher", *argv], env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_store_check_and_repair(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    filled(home, work)
    close_wal(home)
    ok = run_cli(home, "store", "check")
    assert ok.returncode == 0 and "ok (SQLite's integrity_check), 4 experiment(s)" in ok.stdout
    corrupt_middle(home / "experiments.db")
    bad = run_cli(home, "store", "check")
    assert bad.returncode == 1 and "launcher store repair" in bad.stdout, bad.stdout + bad.stderr
    fixed = run_cli(home, "store", "repair")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stderr.count("\n") == 1 and "was damaged" in fixed.stderr and "rebuilt 4 experiment(s)" in fixed.stderr
    again = run_cli(home, "store", "repair")
    assert again.returncode == 0 and "nothing to repair" in again.stdout
    listed = run_cli(home, "list", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 4


def test_damage_met_in_the_middle_of_a_command_is_one_line_and_repaired(tmp_path, monkeypatch, capsys):
    from launcher import cli

    home, work = tmp_path / "home", tmp_path / "work"
    filled(home, work)
    monkeypatch.setenv("LAUNCHER_HOME", str(home))

    def broken(args):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr("launcher.cli.commands.cmd_list", broken)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("launcher list: error: the experiment store was found damaged")
    assert "run the command again" in err[0]
    assert len([p for p in home.glob("experiments.db.corrupt-*") if not p.name.endswith("-wal")]) == 1
    assert len(ExperimentStore(home).list()) == 4


def test_what_quick_check_finds_is_one_line(tmp_path):
    class Checked:
        def execute(self, sql):
            class Rows:
                @staticmethod
                def fetchall():
                    return [("*** in database main ***\nPage 5: btreeInitPage() returns error code 11\n"
                             "On tree page 4 cell 1: Extends off end of page",), ("row 3 missing from index",)]
            return Rows()

    db = tmp_path / "experiments.db"
    db.write_bytes(store_repair.SQLITE_HEADER + b"\0" * 100)
    found = store_repair.diagnose(db, tmp_path, Checked())
    assert found.problem == "SQLite's quick_check: Page 5: btreeInitPage() returns error code 11 (and 2 more)"
