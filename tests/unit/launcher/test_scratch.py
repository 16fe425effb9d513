"""Each rank's own TMPDIR: nothing a killed worker or its loaders made in the temporary folder is left behind."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from launcher.resources.procinfo import process_start
from launcher.runtime.scratch import PREFIX, make_scratch, remove_dead_scratch, scratch_base

ROOT = Path(__file__).resolve().parents[3]

# A worker that does what a DataLoader with workers does (a child passing a file descriptor makes
# multiprocessing's pymp-* folder in TMPDIR), leaves a grandchild running, then is SIGKILLed.
VICTIM = """
import multiprocessing as mp, os, signal, subprocess, sys, tempfile, time
from multiprocessing import reduction

def loader(conn):
    with open(__file__, "rb") as f:
        conn.send(reduction.DupFd(f.fileno()))  # resource_sharer: a listener socket in a pymp-* folder
    time.sleep(60)

if __name__ == "__main__":
    print("tmp", tempfile.gettempdir(), flush=True)
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe()
    p = ctx.Process(target=loader, args=(b,))
    p.start()
    a.recv()
    open(os.path.join(tempfile.gettempdir(), "mine"), "w").close()
    print("orphan", subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid, flush=True)
    print("loader", p.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def short_tmp():
    """A temporary folder with a short path (pytest's are too long for AF_UNIX sockets two levels below)."""
    path = Path(tempfile.mkdtemp(prefix="scr", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_killed_worker_leaves_no_temporary_files_and_no_processes(tmp_path, short_tmp):
    base = short_tmp
    (tmp_path / "victim.py").write_text(VICTIM)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}", "TMPDIR": str(base),
           "DETLAUNCH_EXPERIMENT_ID": "0123abcd"}
    proc = subprocess.run([sys.executable, "-m", "launcher.runtime.shim", "--log-dir", str(tmp_path / "logs"), "--",
                           "victim"], env=env, timeout=120)
    assert proc.returncode == -9
    log = (tmp_path / "logs" / "rank0.log").read_text()
    shown = dict(line.split(" ", 1) for line in log.splitlines() if line.split(" ", 1)[0] in ("tmp", "orphan", "loader"))
    assert Path(shown["tmp"]) == base / f"{PREFIX}{proc_pid(log)}"
    assert list(base.iterdir()) == []  # the worker's own folder (its pymp-* inside) is gone
    for pid in (int(shown["orphan"]), int(shown["loader"])):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def proc_pid(log: str) -> int:
    """The shim's pid, as the start fact would say; here read back from the scratch folder's name in the log."""
    line = next(line for line in log.splitlines() if line.startswith("tmp "))
    return int(line.rsplit("-", 1)[1])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folders_of_dead_owners_are_removed_and_live_ones_kept(short_tmp):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = short_tmp / f"{PREFIX}{live.pid}"
        (theirs / "pymp-x").mkdir(parents=True)
        (theirs / ".owner").write_text(f"0123abcd {process_start(live.pid)}")
        gone, other = short_tmp / f"{PREFIX}{dead_pid()}", short_tmp / f"{PREFIX}{dead_pid()}"
        for folder, owner in ((gone, "0123abcd 5"), (other, "99999999 5")):
            (folder / "pymp-x").mkdir(parents=True)
            (folder / ".owner").write_text(owner)
        reused = short_tmp / f"{PREFIX}{os.getpid()}"  # this pid, but another start tick: its owner is gone
        reused.mkdir()
        (reused / ".owner").write_text("0123abcd 1")
        unrelated = [short_tmp / "pymp-someone-elses", short_tmp / f"{PREFIX}slurm",
                     short_tmp / f"{PREFIX}{dead_pid()}"]
        for folder in unrelated:  # not a scratch folder, or one without an owner file: never touched
            folder.mkdir()
        assert sorted(remove_dead_scratch("0123abcd", base=short_tmp)) == sorted([gone, reused])
        assert theirs.is_dir() and other.is_dir() and all(f.is_dir() for f in unrelated)
        mine = make_scratch("0123abcd", base=short_tmp)  # starting one removes every dead one
        assert (mine / ".owner").read_text().split() == ["0123abcd", str(process_start(os.getpid()))]
        assert not other.exists() and theirs.is_dir() and all(f.is_dir() for f in unrelated)
    finally:
        live.kill()
        live.wait()


def test_a_temporary_folder_too_long_for_socket_paths_is_not_used(tmp_path):
    long = tmp_path / ("x" * 80)
    long.mkdir()
    assert scratch_base(long) == Path("/tmp")
    assert scratch_base("/tmp") == Path("/tmp")
