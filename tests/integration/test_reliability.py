"""Faults survived, nothing lost: SIGKILLs at random points and mid-checkpoint, a full disk, many
concurrent submissions, a sweep of many short jobs through few slots. (What no local test may leave
behind, the ``home`` fixture checks after each: tests/integration/leaks.py.)"""
from __future__ import annotations

import getpass
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher.resources.leases import LeaseBook
from tests.integration.helpers import detcore, tmpfs
from tests.integration.launcher_cli import (PROBE, SHAPES, attempts, checkpointed, done, env_for, job_processes, launcher,
                                          record, tiny, train_iters, wait_until)

pytestmark = pytest.mark.slow


def _loads(path: Path) -> bool:
    data = torch.load(path, weights_only=True)
    return "state_dict" in data and "optimizer" in data


def _kill_mid_checkpoint(work: Path, pid: int, timeout: float = 300) -> bool:
    """SIGKILL ``pid`` while a checkpoint's temporary file exists in ``work`` (True if caught mid-write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(work.glob(".iter_*.tmp")):
            os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.001)
    return False


# the kills land within a few seconds of the first checkpoint (iteration 3), about iteration 3-15 with three jobs
# sharing 2 cores: 45 leaves three times that before the end (a multiple of the checkpoint interval, 3)
KILL_RUN_ITERS = 45


def test_sigkill_at_random_points_and_mid_checkpoint_loses_nothing(home: Path) -> None:
    """Three jobs at once: two killed at seeded random times, one while rank 0 writes a checkpoint."""
    # a job that ended before its kill fails the test (`not done`, a dead pid, `restarts >= 1`), it never
    # passes unkilled
    jobs = []
    for seed in (1, 2, 3):
        exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", "--max-restarts", "2",
                          "--oversubscribe",  # all three at once on 2 cores (core leases would run them in turn)
                          "--name", f"fault{seed}", *tiny(KILL_RUN_ITERS, 3)).stdout.strip()
        jobs.append((seed, exp_id))

    def ready(r: dict) -> bool:
        return (len(attempts(home, r["id"])) == 2 and checkpointed(r)) or done(r)

    records = {exp_id: wait_until(home, exp_id, ready, poll=0.2) for _, exp_id in jobs}
    assert not any(done(r) for r in records.values()), records
    for seed, exp_id in jobs:
        rng = random.Random(seed)
        if seed == 3:
            victim = [a for a in attempts(home, exp_id) if a["rank"] == 0][-1]["pid"]
            assert _kill_mid_checkpoint(Path(records[exp_id]["work_dir"]), victim), "never saw a checkpoint being written"
        else:
            time.sleep(rng.uniform(0.1, 1.5))
            rank = rng.choice([0, 1])  # drawn once: inside the filter it was drawn per row and could match none
            victim = [a for a in attempts(home, exp_id) if a["rank"] == rank][-1]["pid"]
            os.kill(victim, signal.SIGKILL)
    for _, exp_id in jobs:
        rec = wait_until(home, exp_id, done, timeout=900)
        work = Path(rec["work_dir"])
        assert rec["state"] == "succeeded" and rec["restarts"] >= 1, rec
        assert rec["last_iter"] == KILL_RUN_ITERS and train_iters(str(work))[-1] == KILL_RUN_ITERS
        assert (work / "last_checkpoint").read_text().strip() == f"iter_{KILL_RUN_ITERS}.pth"
        assert all(_loads(p) for p in work.glob("*.pth"))  # every checkpoint on disk is whole (a killed save
        # leaves at most its hidden temporary file, never a torn .pth)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs: room for one checkpoint of the shapes model (~10.7 MB), not two."""
    with tmpfs(tmp_path / "disk", "16m", "0755", "the full-disk test") as mount:
        yield mount


def test_full_disk_while_saving_fails_clearly_and_keeps_the_previous_checkpoint(small_disk: Path) -> None:
    work = small_disk / "work"
    proc = detcore("train", SHAPES, "--work-dir", str(work), "--no-validate", "--cfg-options", "runner.max_iters=4",
                   "checkpoint_config.interval=1", "checkpoint_config.max_keep=5", "data.samples_per_gpu=2", "auto_scale_lr.enable=false",
                   "data.workers_per_gpu=0", check=False)
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "No space left on device" in errors[0] and "previous checkpoint is untouched" in errors[0]
    assert (work / "last_checkpoint").read_text().strip() == "iter_1.pth"
    assert _loads(work / "iter_1.pth") and not list(work.glob(".*.tmp"))
    assert torch.load(work / "iter_1.pth", weights_only=True)["meta"]["iter"] == 1


def test_32_jobs_submitted_at_once_are_each_recorded_once(home: Path) -> None:
    """32 separate `launcher submit` processes at the same moment, competing for 2 (fake) GPUs: every
    job is recorded once; 8 run to success one GPU at a time, the 24 still queued are cancelled. The jobs
    run the probe worker (PROBE): the submits, leases, queue and records are the point, not training."""
    gpus = {"LAUNCHER_FAKE_GPUS": "2"}
    subs = [subprocess.Popen([sys.executable, "-m", "launcher", "submit", SHAPES, "--gpus", "1", "--detach", "--json",
                              "--worker-module", PROBE, "--name", f"burst{i}", *tiny(1, 1)], cwd=home.parent,
                             env=env_for(home, **gpus), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(32)]
    ids = []
    for sub in subs:
        out, err = sub.communicate(timeout=600)
        assert sub.returncode == 0, err[-2000:]
        ids.append(json.loads(out)["id"])
    assert len(set(ids)) == 32
    listed = json.loads(launcher(home, "list", "--json", **gpus).stdout)
    assert sorted(e["id"] for e in listed) == sorted(ids)
    # at most 2 hold a GPU, the rest wait (or, 1-iteration jobs, already ran while the burst was submitted)
    assert sum(e["state"] not in ("queued", "succeeded") for e in listed) <= 2, [e["state"] for e in listed]
    queued = [e["id"] for e in listed if e["state"] == "queued"]
    assert len(queued) >= 16, [e["state"] for e in listed]
    keep = [e["id"] for e in listed if e["state"] != "queued"]
    keep += queued[: max(0, 8 - len(keep))]
    cancel = [i for i in ids if i not in keep]
    launcher(home, "cancel", *cancel, **gpus)
    for exp_id in ids:
        wait_until(home, exp_id, done, timeout=900, poll=2.0)
    final = {e["id"]: e for e in json.loads(launcher(home, "list", "--json", **gpus).stdout)}
    assert len(final) == 32 and sorted(e["name"] for e in final.values()) == sorted(f"burst{i}" for i in range(32))
    assert {final[i]["state"] for i in keep} == {"succeeded"}, [(i, final[i]["reason"]) for i in keep]
    # a queued job may win a GPU between the listing and the cancel and finish first: that is a final state too
    assert {final[i]["state"] for i in cancel} <= {"cancelled", "succeeded"}
    assert sum(final[i]["state"] == "cancelled" for i in cancel) >= len(cancel) - 4
    assert not job_processes(set(ids))


def test_a_sweep_of_many_short_jobs_runs_them_all_through_few_slots(home: Path) -> None:
    """Nine one-iteration jobs through three sweep slots: each slot is taken and given back three times.
    That every job left nothing behind (processes, leases and sweep slots, ports, temp dirs, open files in
    this process) the ``home`` fixture checks after this test, as after every local test. The jobs run the
    probe worker (PROBE): the slots are the point; what a training job leaves, the training tests check."""
    values = ",".join(f"{0.001 * (i + 1):.3f}" for i in range(9))
    proc = launcher(home, "sweep", SHAPES, "--nproc", "1", "--max-parallel", "3", "--grid", f"optimizer.lr={values}",
                    "--json", "--worker-module", PROBE, *tiny(1, 1), "--detach", timeout=600)
    ids = [r["id"] for r in json.loads(proc.stdout)]
    assert len(ids) == 9
    for exp_id in ids:
        wait_until(home, exp_id, done, timeout=1500, poll=2.0)
    records = [record(home, i) for i in ids]
    assert {r["state"] for r in records} == {"succeeded"}, [(r["id"], r["reason"]) for r in records if r["state"] != "succeeded"]
    assert all(r["restarts"] == 0 for r in records)
    spans = [(r["started"], r["ended"]) for r in records]  # the slots held: never more than 3 at a time
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) <= 3
    assert not job_processes(set(ids))  # no supervisor, agent or worker left
    assert not any(LeaseBook(home).held().values())  # no GPU lease or sweep slot still held


def test_a_job_with_loader_workers_leaves_no_temp_dir(home: Path, tmp_path: Path) -> None:
    """The sweep of short jobs runs without loader workers; workers (training and evaluation loaders)
    used to leave one ``pymp-*`` folder each in ``$TMPDIR`` per job."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = launcher(home, "submit", SHAPES, "--nproc", "1", "--json", *tiny(2, 2), "data.workers_per_gpu=2",
                    "evaluation.interval=2", timeout=600, TMPDIR=str(scratch))
    rec = wait_until(home, json.loads(proc.stdout)["id"], done, timeout=600, poll=2.0)
    assert rec["state"] == "succeeded", rec["reason"]
    assert not job_processes({rec["id"]})
    assert [p.name for p in scratch.iterdir() if p.name != f"torchinductor_{getpass.getuser()}"] == []
