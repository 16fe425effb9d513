"""Security promises: no shell injection through user strings, services on 127.0.0.1, files that
are not world-writable even under a permissive umask."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.integration.launcher_cli import SHAPES, env_for, launcher, record, tiny

INJECT = "$(touch {marker})`touch {marker}`;touch {marker}"


def test_shell_metacharacters_in_work_dir_and_overrides_run_literally(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    work = tmp_path / ("w;touch " + str(marker))
    evil = INJECT.format(marker=marker)
    proc = launcher(home, "submit", SHAPES, "--nproc", "1", "--work-dir", str(work), "--json",
                    *tiny(1, 1), "evaluation.interval=0", f"+model_note={evil}")
    assert not marker.exists()
    rec = record(home, json.loads(proc.stdout)["id"])
    assert rec["state"] == "succeeded" and Path(rec["work_dir"]) == work
    assert yaml.safe_load((work / "config.yaml").read_text())["model_note"] == evil  # passed on as plain data
    bad = launcher(home, "submit", SHAPES, "--name", "x;rm -rf /", "--dry-run", check=False)
    assert bad.returncode != 0 and "may only hold letters" in bad.stderr
    assert not marker.exists()


# SIGTERM to the whole process group reaches the TensorBoard server itself, which then exits without removing
# its server record (TensorBoard removes it only on a clean exit; `launcher tensorboard` stopping it does)
@pytest.mark.leaves_tmp(".tensorboard-info", reason="TensorBoard's own record of a server SIGTERMed directly")
def test_tensorboard_binds_loopback_by_default(home: Path, tmp_path: Path) -> None:
    proc = launcher(home, "submit", SHAPES, "--nproc", "1", "--json", *tiny(1, 1), "evaluation.interval=0")
    exp_id = json.loads(proc.stdout)["id"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tb = subprocess.Popen([sys.executable, "-m", "launcher", "tensorboard", exp_id, "--port", str(port)],
                          env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        listening = []
        while not listening and time.monotonic() < deadline:
            assert tb.poll() is None, tb.stdout.read()
            procs = [psutil.Process(tb.pid), *psutil.Process(tb.pid).children(recursive=True)]
            listening = [c.laddr for p in procs for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
            time.sleep(0.5)
        assert listening, "TensorBoard never listened"
        assert {a.ip for a in listening} == {"127.0.0.1"} and {a.port for a in listening} == {port}
    finally:
        os.killpg(tb.pid, 15)
        tb.wait(timeout=30)


def test_files_are_not_world_writable_even_with_umask_zero(home: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    proc = subprocess.run(["sh", "-c", 'umask 000; exec "$0" "$@"', sys.executable, "-m", "launcher", "submit",
                           SHAPES, "--nproc", "1", "--work-dir", str(work), *tiny(1, 1), "evaluation.interval=0"],
                          env=env_for(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    writable = [p for p in [work, *work.rglob("*"), home, *home.rglob("*")] if os.stat(p).st_mode & 0o002]
    assert not writable, writable


def test_detcore_train_alone_writes_nothing_group_or_world_writable_under_umask_zero(tmp_path: Path) -> None:
    """The worker run by hand (or under plain torchrun), without the launcher's umask."""
    work = tmp_path / "work"
    proc = subprocess.run(["sh", "-c", 'umask 000; exec "$0" "$@"', sys.executable, "-m", "detcore.tools.cli", "train",
                           SHAPES, "--work-dir", str(work), "--no-validate", *tiny(1, 1)],
                          env=env_for(tmp_path / "home"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    writable = [p for p in [work, *work.rglob("*")] if os.stat(p).st_mode & 0o022]
    assert not writable, writable
    assert (work / "last_checkpoint").exists()
