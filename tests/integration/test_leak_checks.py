"""The leak checks the ``home`` fixture runs after every local test find what was left, and only that."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import psutil

from launcher.resources.leases import LeaseBook
from launcher.resources.procinfo import process_start
from launcher.runtime.scratch import OWNER_FILE, PREFIX, scratch_base
from tests.integration.launcher_cli import MARKER, job_tmp
from tests.integration.leaks import _port_holder, leftovers, open_fds


def test_each_kind_of_leftover_is_named_and_nothing_once_cleaned(tmp_path: Path) -> None:
    tmp_path = tmp_path / ("deep" * 16)  # as pytest's default base: too long for a rank's sockets, so /tmp
    home = tmp_path / "home"
    home.mkdir(parents=True)
    job_tmp(home).mkdir()
    fds_before = open_fds()
    assert leftovers(home, fds_before) == []
    # a process of a job of this home, a sweep slot it keeps, a temp dir it left, a file left open in us
    keeper = subprocess.Popen(["sleep", "600"], env={**os.environ, "LAUNCHER_HOME": str(home), MARKER: "e1"})
    try:
        assert LeaseBook(home).acquire("slots:s1", ["0"], 1, "e1", keeper.pid, 0) == ("0",)
        (job_tmp(home) / "pymp-abc").mkdir()
        rank_tmp = scratch_base(job_tmp(home)) / f"{PREFIX}{keeper.pid}"  # a rank's own TMPDIR
        assert rank_tmp.parent != job_tmp(home)  # (a pytest tmp_path is too long for its sockets: /tmp)
        rank_tmp.mkdir()
        # its owner's real start tick: other ranks on the machine remove a scratch folder whose owner is gone
        (rank_tmp / OWNER_FILE).write_text(f"e1 {process_start(keeper.pid)}\n")
        held_open = open(tmp_path / "log.txt", "w")  # noqa: SIM115  (left open on purpose)
        left = leftovers(home, fds_before)
        assert len(left) == 5, left
        assert any(f"pid {keeper.pid}" in line and "sleep 600" in line for line in left), left
        assert any("lease still held: slots:s1 0 by e1" in line for line in left), left
        assert any("pymp-abc" in line for line in left), left
        assert any("log.txt" in line and "file descriptor" in line for line in left), left
        assert any(str(rank_tmp) in line for line in left), left
    finally:
        keeper.kill()
        keeper.wait()
        shutil.rmtree(rank_tmp, ignore_errors=True)
    held_open.close()
    (job_tmp(home) / "pymp-abc").rmdir()
    assert leftovers(home, fds_before) == []  # the dead keeper's lease is reclaimed: nothing is held


def test_a_port_is_left_only_when_the_test_or_its_jobs_hold_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert f"port {port} is still bound" in _port_holder(port, {os.getpid()})
        # a process outside the test took the freed port since (a shared machine): not the test's leak
        assert _port_holder(port, {psutil.Process().ppid()}) is None
    assert _port_holder(port, {os.getpid()}) is None


def test_a_test_that_keeps_sockets_is_still_checked_for_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    fds_before = open_fds()
    with socket.socket(), open(tmp_path / "log.txt", "w"):
        left = leftovers(home, fds_before)
        assert len(left) == 2 and any("socket:" in line for line in left), left
        kept = leftovers(home, fds_before, keeps_sockets=True)
        assert len(kept) == 1 and "log.txt" in kept[0], kept
    assert leftovers(home, fds_before) == []
