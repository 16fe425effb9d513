"""Faults a cluster produces every week, each ending well, with real processes (local backend).

A user error fixed and resumed; the job's monitor SIGKILLed mid-run and resumed; two resumes at
the same moment; a full ``$LAUNCHER_HOME``; a rank stopped with SIGSTOP (the hang watchdog).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.views.metrics import schedule_length
from tests.integration.helpers import tmpfs
from tests.integration.launcher_cli import (SHAPES, attempts, checkpointed, done, env_for, launcher, record, tiny,
                                            train_iters, user_error_neck, wait_until)


def _runs(work_dir: str) -> list[Path]:
    return sorted((Path(work_dir) / "runs").glob("*"))


def test_user_error_fixed_then_resumed_succeeds_and_a_reused_work_dir_starts_clean(home):
    work = home.parent / "w-user-error"
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", "--work-dir", str(work), *tiny(4),
                      *user_error_neck(home.parent)).stdout.strip()
    rec = wait_until(home, exp_id, done)
    assert rec["state"] == "failed" and "DetlNeck got a setting" in rec["reason"] and "user error" in rec["reason"], rec
    user_error_neck(home.parent, broken=False)  # the user fixes the module
    launcher(home, "resume", exp_id)  # follows the run; exit 0 only when it succeeded
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded" and rec["reason"] == "", rec
    assert train_iters(rec["work_dir"])[-1] == 4
    assert [h["state"] for h in rec["history"]] == ["failed"] and len(_runs(rec["work_dir"])) == 2
    # a new experiment in the same work dir never sees the old launches' endings
    other = launcher(home, "submit", SHAPES, "--nproc", "1", "--detach", "--work-dir", str(work), "--resume", "auto",
                     *tiny(6)).stdout.strip()  # a work dir with a run is continued only when asked
    assert wait_until(home, other, done)["state"] == "succeeded"


def test_monitor_sigkilled_mid_run_is_monitor_lost_and_resumes_to_the_full_run(home):
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", *tiny(40)).stdout.strip()
    rec = wait_until(home, exp_id, lambda r: checkpointed(r) or done(r), poll=0.5)
    assert not done(rec), rec
    os.kill(int(rec["backend_job_id"]), signal.SIGKILL)  # the detached supervisor, as the OOM killer would
    rec = wait_until(home, exp_id, done)
    assert rec["state"] == "failed" and rec["reason"].startswith("monitor lost"), rec
    deadline = time.monotonic() + 60  # torchrun and the workers follow their supervisor (PR_SET_PDEATHSIG)
    while any(_alive(a["pid"]) for a in attempts(home, exp_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(a["pid"]) for a in attempts(home, exp_id))
    launcher(home, "resume", exp_id)
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded", rec
    assert train_iters(rec["work_dir"]) == list(range(1, 41))
    assert rec["history"][-1]["reason"].startswith("monitor lost")


def test_two_resumes_at_the_same_moment_start_exactly_one_run(home):
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "1", "--detach", *tiny(30)).stdout.strip()
    wait_until(home, exp_id, lambda r: r["state"] == "running" or done(r), poll=0.5)
    launcher(home, "cancel", exp_id)
    procs = [subprocess.Popen([sys.executable, "-m", "launcher", "resume", exp_id, "--detach"], cwd=home.parent,
                              env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert "cancel it first or wait for it to end" in refused and len(refused.strip().splitlines()) == 1
    rec = wait_until(home, exp_id, done)
    assert rec["state"] == "succeeded" and len(_runs(rec["work_dir"])) == 2, rec
    assert train_iters(rec["work_dir"])[-1] == schedule_length(rec["work_dir"])[0] == 60  # 1 worker: schedule scaled x2


@pytest.fixture
def tiny_home(tmp_path: Path):
    """``$LAUNCHER_HOME`` on an 8 MiB tmpfs the test fills up while the job runs."""
    with tmpfs(tmp_path / "home", "8m", "0700", "the full-home test") as mount:
        yield mount


def _fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until the file system is full."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_launcher_home_never_fails_a_job_that_finishes(tiny_home):
    home = tiny_home
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", "--max-restarts", "1",
                      "--work-dir", str(home.parent / "work-full"), *tiny(30)).stdout.strip()
    rec = wait_until(home, exp_id, lambda r: checkpointed(r) or done(r), poll=0.5)
    assert not done(rec), rec
    filler = _fill(home)
    victim = [a for a in attempts(home, exp_id) if a["rank"] == 1][-1]
    os.kill(victim["pid"], signal.SIGKILL)  # a worker dies while the supervisor cannot write its status
    rec = wait_until(home, exp_id, done)  # the store cannot be written either: this is the derived view
    assert rec["state"] == "succeeded", rec
    assert rec["restarts"] == 1 and "rank 1 killed by SIGKILL" in rec["reason"], rec
    filler.unlink()
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded" and train_iters(rec["work_dir"])[-1] == 30


def test_a_stopped_rank_is_detected_named_and_the_attempt_restarted(home):
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", "--max-restarts", "1", "--hang-timeout",
                      "12", *tiny(40)).stdout.strip()
    rec = wait_until(home, exp_id, lambda r: checkpointed(r) or done(r), poll=0.5)
    assert not done(rec), rec
    victim = [a for a in attempts(home, exp_id) if a["rank"] == 1][-1]
    os.kill(victim["pid"], signal.SIGSTOP)
    rec = wait_until(home, exp_id, done)
    assert rec["state"] == "succeeded", rec
    assert rec["restarts"] == 1 and "hang: rank 1 is stopped" in rec["reason"], rec
    assert train_iters(rec["work_dir"])[-1] == 40
    log0 = (Path(rec["work_dir"]) / "logs" / "rank0.log").read_text()
    assert "hang watchdog" in log0 and "most recent call first" in log0  # rank 0's Python stacks (faulthandler)
    hangs = [json.loads(x) for x in open(Path(rec["work_dir"]) / "runs" / rec["run_id"] / "events.jsonl")
             if '"hang"' in x]
    assert {(h["rank"], h["state"]) for h in hangs} >= {(1, "stopped")}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
