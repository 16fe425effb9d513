"""Bad states of the launcher's own bookkeeping, with real local jobs: each one line, nothing lost.

- a corrupt store and one truncated to 0 bytes come back with every row the records, job folders
  and work dirs can give (state, progress, metrics, tags, note), the damaged file kept aside;
- a read-only ``$LAUNCHER_HOME`` still lists and shows experiments; commands that write say so;
- no ``pymp-*`` (or other temporary) folder is left after a killed worker, a restart and a cancel.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.helpers import tmpfs
from tests.integration.launcher_cli import SHAPES, done, job_processes, launcher, tiny, wait_until

# columns that stay exactly as they were (``updated`` is when a row was last written, so a rebuild changes it)
KEPT = ("id", "name", "config", "config_hash", "mode", "backend", "backend_job_id", "state", "exit_code", "reason",
        "restarts", "world_size", "total_batch", "lr", "work_dir", "sweep", "grid", "created", "started",
        "last_iter", "last_loss", "last_ap", "max_iter", "best_ap", "run_id", "tags", "note", "history")


def rows(home: Path) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(launcher(home, "list", "--json").stdout)}


def two_experiments(home: Path) -> list[str]:
    """A finished training and a cancelled one, tagged and noted."""
    first = launcher(home, "submit", SHAPES, "--nproc", "2", "--name", "kept", *tiny(4)).stdout.split()[0]
    second = launcher(home, "submit", SHAPES, "--nproc", "1", "--name", "stopped", "--detach",
                      *tiny(400)).stdout.split()[0]
    wait_until(home, second, lambda r: (r["last_iter"] or 0) >= 2)
    launcher(home, "cancel", second)
    launcher(home, "tag", first, "baseline", "v2")
    launcher(home, "note", second, "stopped on purpose")
    return [first, second]


def test_a_corrupt_and_a_truncated_store_are_repaired_with_every_row(home):
    ids = two_experiments(home)
    before = rows(home)
    assert [before[i]["state"] for i in ids] == ["succeeded", "cancelled"]
    db = home / "experiments.db"
    assert not (home / "experiments.db-wal").exists() or (home / "experiments.db-wal").stat().st_size == 0
    for damage in ("garbage in the middle", "truncated to 0 bytes"):
        if damage == "garbage in the middle":
            with open(db, "r+b") as f:
                f.seek(db.stat().st_size // 2)
                f.write(os.urandom(4096))
        else:
            db.write_bytes(b"")
        proc = launcher(home, "list")
        said = proc.stderr.strip().splitlines()
        assert len(said) == 1 and f"the experiment store {db} was " in said[0], proc.stderr
        assert "rebuilt 2 experiment(s)" in said[0]
        after = rows(home)
        assert set(after) == set(before)
        for exp_id in ids:
            assert {k: after[exp_id][k] for k in KEPT} == {k: before[exp_id][k] for k in KEPT}, damage
        assert launcher(home, "list").stderr == ""  # repaired once
    assert len([p for p in home.glob("experiments.db.corrupt-*") if not p.name.endswith("-wal")]) == 2
    status = launcher(home, "status", ids[1]).stdout
    assert "state: cancelled" in status and "note: stopped on purpose" in status


def test_a_read_only_home_lists_and_shows_and_writes_say_why(home, tmp_path):
    ids = two_experiments(home)
    before = rows(home)
    with tmpfs(tmp_path / "ro", "32m", "0700", "the read-only home test") as ro:
        shutil.copytree(home, ro / "home")
        remount = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.fail(f"cannot remount the tmpfs read-only: {remount.stderr.strip()}")
        ro_home = ro / "home"
        listed = launcher(ro_home, "list")
        assert listed.stderr == "" and len(listed.stdout.splitlines()) == 3
        assert {k: rows(ro_home)[ids[0]][k] for k in KEPT} == {k: before[ids[0]][k] for k in KEPT}
        assert "state: cancelled" in launcher(ro_home, "status", ids[1]).stdout
        for argv in (("note", ids[0], "x"), ("tag", ids[0], "y"), ("rm", ids[0]), ("cancel", ids[0]),
                     ("submit", SHAPES, "--detach", *tiny(2))):
            proc = launcher(ro_home, *argv, check=False)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1, (argv, proc.stderr)
            assert lines[0].startswith(f"launcher {argv[0]}: error: ") and "writable" in lines[0], lines
            assert "Traceback" not in proc.stderr


def test_no_temporary_folder_is_left_after_a_kill_a_restart_and_a_cancel(home):
    """DataLoader workers pass tensors through file descriptors, so each makes a pymp-* folder; workers and
    loaders are SIGKILLed here (a restart follows), then the job is cancelled."""
    tmp = Path(tempfile.mkdtemp(prefix="dlt", dir="/tmp"))  # short: AF_UNIX socket paths live below it
    try:
        exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", "--max-restarts", "2",
                          *tiny(400), "data.workers_per_gpu=2", TMPDIR=str(tmp)).stdout.split()[0]
        wait_until(home, exp_id, lambda r: (r["last_iter"] or 0) >= 2)
        assert any(tmp.glob("detlaunch-*/pymp-*")), sorted(tmp.rglob("*"))  # the loaders' folders, in the ranks'
        workers = [p for p in job_processes([exp_id]) if "detcore.tools.cli" in " ".join(p.cmdline())
                   and "launcher.runtime.shim" not in " ".join(p.cmdline())]
        victims = [p for p in workers if p.children()]  # a trainer with its loaders
        assert victims, [p.cmdline() for p in workers]
        for proc in victims[0].children() + [victims[0]]:
            proc.send_signal(signal.SIGKILL)
        wait_until(home, exp_id, lambda r: r["restarts"] >= 1 and (r["last_iter"] or 0) >= 4 or done(r))
        launcher(home, "cancel", exp_id)
        rec = wait_until(home, exp_id, done)
        assert rec["state"] == "cancelled"
        deadline = time.monotonic() + 30
        while job_processes([exp_id]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not job_processes([exp_id])
        left = sorted(p.name for p in tmp.iterdir())
        assert left == [], left
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
