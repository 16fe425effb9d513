"""The local backend with real processes: the launcher CLI, torchrun's elastic agent, detcore's trainer.

Every test gets its own LAUNCHER_HOME and work dirs under tmp_path; the shapes data is
generated once per session into a small cache (40 training, 8 validation images).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from tests.integration.launcher_cli import (PROBE, SHAPES, attempts, checkpointed, done, env_for, job_processes,
                                          launcher, record, tiny, train_iters, user_error_neck, wait_until)


def test_two_process_gloo_training_end_to_end(home):
    proc = launcher(home, "submit", SHAPES, "--nproc", "2", "--name", "e2e", *tiny(4))
    exp_id = proc.stdout.splitlines()[0].strip()
    assert "world size 2 x 2 per worker = total batch 4" in proc.stderr
    assert "iter" in proc.stdout  # rank 0's log was streamed
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded" and rec["exit_code"] == 0 and rec["restarts"] == 0
    assert (rec["world_size"], rec["total_batch"], rec["lr"]) == (2, 4, 0.02)
    assert rec["last_iter"] == 4 and rec["last_loss"] > 0 and rec["last_ap"] is not None
    assert len(rec["ports"]) == 1 and rec["ports"][0] > 0
    work = Path(rec["work_dir"])
    assert train_iters(str(work)) == [1, 2, 3, 4]
    assert (work / "last_checkpoint").read_text().strip() == "iter_4.pth" and (work / "iter_4.pth").is_file()
    assert {a["rank"] for a in attempts(home, exp_id)} == {0, 1}
    assert (work / "logs" / "rank1.log").is_file() and (work / "tb").is_dir()
    assert "_scaling" in (work / "config.yaml").read_text()  # the decision reaches the trainer (checkpoint meta)
    listed = json.loads(launcher(home, "list", "--json").stdout)
    assert [(e["id"], e["state"]) for e in listed] == [(exp_id, "succeeded")]
    table = launcher(home, "list").stdout
    assert exp_id in table and "succeeded" in table
    assert "saved checkpoint" in launcher(home, "logs", exp_id).stdout
    assert not job_processes({exp_id})
    assert not any(os.stat(p).st_mode & 0o002 for p in [work, *work.rglob("*"), *home.rglob("*")])


def test_sixteen_jobs_started_together_never_share_a_port(home):
    # --oversubscribe: all sixteen run at once (with core leases they would take turns on 2 cores);
    # the probe worker (PROBE): ports and the record are the point here, training is proven elsewhere.
    # No --max-restarts 0: a port clash would show as a restart (restarts 0 below) or a failure.
    subs = [subprocess.Popen([sys.executable, "-m", "launcher", "submit", SHAPES, "--nproc", "2", "--detach", "--json",
                              "--oversubscribe", "--worker-module", PROBE, "--name", f"probe{i}", *tiny(2)],
                             cwd=home.parent, env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(16)]
    ids = []
    for p in subs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids.append(json.loads(out)["id"])  # --json --detach: the submitted record
    recs = [wait_until(home, i, done, timeout=900, poll=0.5) for i in ids]
    assert [r["state"] for r in recs] == ["succeeded"] * 16, [r["reason"] for r in recs]
    assert all(r["last_iter"] == 2 and r["restarts"] == 0 for r in recs)
    ports = [r["ports"] for r in recs]
    assert all(len(p) == 1 for p in ports) and len({p[0] for p in ports}) == 16, ports
    for r in recs:  # both ranks of each job met on that job's own port
        probes = [json.loads((Path(r["work_dir"]) / f"probe{k}.json").read_text()) for k in (0, 1)]
        assert [p["port"] for p in probes] == r["ports"] * 2 and all(p["sum"] == 2 for p in probes)
    assert not job_processes(set(ids))


def test_sigkill_of_a_worker_restarts_and_finishes_the_full_run(home):
    # 40 iterations: long enough that the kill lands before the end on a fast machine
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", "--max-restarts", "1",
                      *tiny(40)).stdout.strip()
    rec = wait_until(home, exp_id, lambda r: checkpointed(r) or done(r), poll=0.5)
    assert not done(rec), rec
    victim = [a for a in attempts(home, exp_id) if a["rank"] == 1][-1]
    os.kill(victim["pid"], signal.SIGKILL)
    rec = wait_until(home, exp_id, done)
    assert rec["state"] == "succeeded", rec["reason"]
    assert rec["restarts"] == 1 and "rank 1 killed by SIGKILL" in rec["reason"]
    assert rec["last_iter"] == 40 and train_iters(rec["work_dir"])[-1] == 40
    assert (Path(rec["work_dir"]) / "last_checkpoint").read_text().strip() == "iter_40.pth"
    assert sorted({a["attempt"] for a in attempts(home, exp_id)}) == [0, 1]
    resumed = (Path(rec["work_dir"]) / "logs" / "rank0.log").read_text()
    assert "resumed from" in resumed  # the second attempt continued from the newest checkpoint


def test_cancel_leaves_no_process_behind_and_is_idempotent(home):
    # the probe worker, long (it runs until cancelled): the processes are the point; a training run's cancel
    # is in test_resume_at_another_world_size_recomputes_scaling
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", "--worker-module", PROBE,
                      *tiny(10_000, 1000)).stdout.strip()
    wait_until(home, exp_id, lambda r: len(attempts(home, exp_id)) == 2 and r["state"] == "running", poll=0.5)
    assert len(job_processes({exp_id})) >= 4  # supervisor, torchrun, 2 workers
    t0 = time.monotonic()
    out = launcher(home, "cancel", exp_id).stdout
    assert f"{exp_id}: cancelled" in out and time.monotonic() - t0 < 40
    assert not job_processes({exp_id})
    rec = record(home, exp_id)
    assert rec["state"] == "cancelled" and rec["ended"] is not None
    assert f"{exp_id}: already cancelled" in launcher(home, "cancel", exp_id).stdout


def test_job_outlives_the_submitting_process_and_is_reported_right(home):
    sub = subprocess.Popen([sys.executable, "-m", "launcher", "submit", SHAPES, "--nproc", "2", *tiny(6)],
                           cwd=home.parent, env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, start_new_session=True)
    exp_id = sub.stdout.readline().strip()  # the id comes first, then rank 0's log
    wait_until(home, exp_id, lambda r: r["state"] == "running", poll=0.5)
    os.killpg(sub.pid, signal.SIGKILL)  # the submitting command and its terminal session are gone
    sub.wait()
    rec = wait_until(home, exp_id, done)
    assert rec["state"] == "succeeded" and rec["last_iter"] == 6, rec["reason"]


def test_sweep_of_three_respects_max_parallel(home):
    # --no-validate: the slots, the grid and the scaling are the point, not the final evaluation
    proc = launcher(home, "sweep", SHAPES, "--grid", "optimizer.lr=0.01,0.02,0.03", "--max-parallel", "2",
                    "--nproc", "1", "--max-restarts", "0", "--no-validate", *tiny(2))
    assert "3 experiments, at most 2 at a time" in proc.stderr
    recs = json.loads(launcher(home, "list", "--json").stdout)
    assert len(recs) == 3 and all(r["state"] == "succeeded" for r in recs), [r["reason"] for r in recs]
    assert len({r["work_dir"] for r in recs}) == 3 and len({r["sweep"] for r in recs}) == 1
    # one worker x 2 images = total batch 2 against a base of 4: each grid LR is halved
    assert sorted(r["lr"] for r in recs) == [0.005, 0.01, 0.015]
    for r in recs:
        assert yaml.safe_load((Path(r["work_dir"]) / "config.yaml").read_text())["optimizer"]["lr"] == r["lr"]
    spans = [(r["started"], r["ended"]) for r in recs]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) <= 2


def test_dry_run_starts_nothing(home, tmp_path):
    before = {p.pid for p in psutil.process_iter()}
    out = launcher(home, "submit", SHAPES, "--nproc", "2", "--dry-run", *tiny(4)).stdout
    assert "launcher.backends.local.agent" in out and "--rdzv-endpoint 127.0.0.1:0" in out and "scaled lr: 0.02" in out
    sweep = launcher(home, "sweep", SHAPES, "--grid", "optimizer.lr=0.01,0.02", "--dry-run", "--json").stdout
    assert len(json.loads(sweep)) == 2
    assert not (tmp_path / "work_dirs").exists() and not (home / "jobs").exists()
    assert json.loads(launcher(home, "list", "--json").stdout) == []
    new = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in before
           and "launcher.backends.local.agent" in " ".join(p.info["cmdline"] or [])]
    assert not new


def test_gpu_leases_queue_and_no_wait_with_fake_gpus(home):
    # the probe worker (PROBE): the leases and the queue are the point, not training. The first job's 40
    # probe iterations (4 s after its ranks joined, no CPU) hold its GPUs while the refused and the queued submits happen
    fake = {"LAUNCHER_FAKE_GPUS": "2"}
    first = launcher(home, "submit", SHAPES, "--gpus", "2", "--detach", "--worker-module", PROBE, *tiny(40),
                     **fake).stdout.strip()
    wait_until(home, first, lambda r: r["state"] == "running", poll=0.2)
    busy = launcher(home, "submit", SHAPES, "--gpus", "2", "--no-wait", *tiny(4), check=False, **fake)
    assert busy.returncode == 2 and "only 0 of 2 are free" in busy.stderr
    second = launcher(home, "submit", SHAPES, "--gpus", "1", "--detach", "--worker-module", PROBE, *tiny(2),
                      **fake).stdout.strip()
    queued = wait_until(home, second, lambda r: r["state"] in ("queued", "running") or done(r), poll=0.3)
    first_now = record(home, first)
    assert queued["state"] == "queued" or done(first_now), (queued, first_now)
    assert "queued" in launcher(home, "list", "--state", "queued").stdout or done(first_now)
    a, b = wait_until(home, first, done, poll=0.3), wait_until(home, second, done, poll=0.3)
    assert a["state"] == b["state"] == "succeeded", (a["reason"], b["reason"])
    assert b["started"] >= a["ended"] - 1.0
    assert {x["cuda_visible_devices"] for x in attempts(home, first)} == {"0,1"}
    assert {x["cuda_visible_devices"] for x in attempts(home, second)} == {"0"}
    assert not (home / "leases.json").exists() or json.loads((home / "leases.json").read_text()) == {}


def test_a_worker_user_error_fails_fast_without_restarts(home):
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", "--max-restarts", "2", *tiny(4),
                      *user_error_neck(home.parent)).stdout.strip()
    rec = wait_until(home, exp_id, done)
    # the supervisor stops the group on exit code 2; an attempt torchrun may already have begun by then is
    # not a restart: the row says 0, as its reason says "not restarted"
    assert rec["state"] == "failed" and rec["restarts"] == 0
    assert "exit code 2 (user error)" in rec["reason"] and "not restarted" in rec["reason"]
    assert "DetlNeck got a setting" in rec["reason"]
    assert not job_processes({exp_id})


def test_resume_at_another_world_size_recomputes_scaling(home):
    # 40 iterations: long enough that the cancel lands before the end on a fast machine
    exp_id = launcher(home, "submit", SHAPES, "--nproc", "2", "--detach", *tiny(40)).stdout.strip()
    wait_until(home, exp_id, lambda r: checkpointed(r) or done(r), poll=0.2)
    launcher(home, "cancel", exp_id)
    assert record(home, exp_id)["state"] == "cancelled"
    proc = launcher(home, "resume", exp_id, "--nproc", "1")
    # 1 worker x 2 images against the base batch of 4: half the LR, twice the iterations (same epochs)
    assert "world size changed 2 -> 1, scaling recomputed" in proc.stderr and "lr 0.02 -> 0.01" in proc.stderr
    rec = record(home, exp_id)
    assert rec["state"] == "succeeded" and (rec["world_size"], rec["lr"]) == (1, 0.01), rec["reason"]
    assert rec["last_iter"] == 80
    assert "resumed from" in (Path(rec["work_dir"]) / "logs" / "rank0.log").read_text()
