"""A work dir belongs to one run: the claim file, its staleness rule, takeover and the earlier-run refusal."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from detcore import ownership
from detcore.contract import OWNER_FILE, run_evidence
from detcore.errors import WorkDirError
from detcore.ownership import STALE_AFTER_S, Holder, claim, earlier_run, new_holder, placeholder, stale_reason
from detcore.procinfo import process_start


def dead_process() -> tuple[int, int]:
    """The pid and start tick of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = process_start(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start


def holder(experiment: str, **kw) -> Holder:
    return new_holder(experiment, f"experiment {experiment}", "test", **kw)


def write_claim(work: Path, h: Holder, age_s: float = 0.0) -> None:
    work.mkdir(parents=True, exist_ok=True)
    path = work / OWNER_FILE
    path.write_text(json.dumps(h.__dict__))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))


def test_staleness_rule():
    me = holder("a")
    assert stale_reason(me, 10_000, me.host) is None  # a live process on this host holds it, however old the beat
    pid, start = dead_process()
    gone = Holder("a", "x", "p", me.host, pid, start, 0, "t")
    assert "is gone" in stale_reason(gone, 0, me.host)
    reused = Holder("a", "x", "p", me.host, os.getpid(), (me.pid_start or 0) + 1, 0, "t")
    assert "is gone" in stale_reason(reused, 0, me.host)  # the pid now names another process
    remote = Holder("a", "x", "p", "other-node", 12345, 1, 0, "t")
    assert stale_reason(remote, STALE_AFTER_S - 1, me.host) is None
    assert "no heartbeat for" in stale_reason(remote, STALE_AFTER_S + 1, me.host)
    waiting = placeholder(me, "queued")  # no process: judged by its heartbeat, also on this host
    assert stale_reason(waiting, 5, me.host) is None and stale_reason(waiting, STALE_AFTER_S + 5, me.host)
    assert "unreadable" in stale_reason(None, 0, me.host)


def test_claim_refuses_a_live_holder_and_names_it(tmp_path):
    work = tmp_path / "w"
    first = claim(work, new_holder("exp1", "launcher experiment exp1 (r50)", "supervisor", launcher=True))
    assert first.owned and json.loads((work / OWNER_FILE).read_text())["experiment"] == "exp1"
    before = sorted(p.name for p in work.iterdir())
    with pytest.raises(WorkDirError) as err:
        claim(work, holder("exp2"))
    line = str(err.value)
    assert "\n" not in line and f"work dir {work} is in use by launcher experiment exp1 (r50)" in line
    assert f"supervisor pid {os.getpid()}" in line and "`launcher cancel exp1`" in line and "--work-dir" in line
    assert sorted(p.name for p in work.iterdir()) == before  # nothing left by the refused claim
    first.release()
    assert not (work / OWNER_FILE).exists()
    claim(work, holder("exp2")).release()


def test_a_dead_holder_on_this_host_is_taken_over_with_a_line(tmp_path, caplog):
    work = tmp_path / "w"
    pid, start = dead_process()
    write_claim(work, Holder("old", "`detcore train`", "", os.uname().nodename, pid, start, time.time(), "t0"))
    with caplog.at_level(logging.WARNING, logger="detcore.ownership"):
        took = claim(work, holder("new"))
    assert took.owned and took.taken_over and took.previous.experiment == "old"
    assert any("took over the claim of `detcore train`" in r.message and f"(pid {pid}) is gone" in r.message
               for r in caplog.records)
    assert json.loads((work / OWNER_FILE).read_text())["experiment"] == "new"


def test_another_hosts_claim_holds_until_its_heartbeat_is_old(tmp_path):
    work = tmp_path / "w"
    remote = Holder("remote", "`detcore train`", "", "node-b", 4242, 7, time.time(), "t0")
    write_claim(work, remote, age_s=30)
    with pytest.raises(WorkDirError, match="pid 4242 on node-b"):
        claim(work, holder("mine"))
    write_claim(work, remote, age_s=STALE_AFTER_S + 30)
    assert "no heartbeat" in claim(work, holder("mine")).taken_over


def test_an_unreadable_claim_is_taken_over(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / OWNER_FILE).write_text("{not json")
    assert "unreadable" in claim(work, holder("mine")).taken_over


def test_the_same_experiment_joins_a_live_claim_and_takes_a_dead_or_waiting_one(tmp_path):
    work = tmp_path / "w"
    monitor = claim(work, new_holder("exp", "launcher experiment exp", "supervisor", launcher=True))
    rank0 = claim(work, new_holder("exp", "launcher experiment exp", "rank 0", launcher=True))
    assert not rank0.owned and rank0.continues  # joined: the monitor keeps the claim
    rank0.release()
    assert (work / OWNER_FILE).exists()
    handed = claim(work, new_holder("exp", "launcher experiment exp", "supervisor 2", launcher=True), join=False)
    assert handed.owned and json.loads((work / OWNER_FILE).read_text())["process"] == "supervisor 2"
    assert not monitor.refresh() and monitor.lost  # the first holder learns it lost the claim
    monitor.release()
    assert (work / OWNER_FILE).exists()  # and never removes someone else's
    handed.hand_over(placeholder(handed.holder, "queued in Slurm"))
    waiting = json.loads((work / OWNER_FILE).read_text())
    assert waiting["pid"] is None and waiting["process"] == "queued in Slurm"
    starts = claim(work, new_holder("exp", "launcher experiment exp", "rank 0", launcher=True))
    assert starts.owned and starts.continues  # a placeholder is taken by the first process of its experiment
    with pytest.raises(WorkDirError, match="launcher experiment exp"):
        claim(work, holder("intruder"))
    starts.release()


def test_heartbeat_refreshes_the_claim(tmp_path):
    work = tmp_path / "w"
    held = claim(work, holder("exp"))
    then = time.time() - 100
    os.utime(work / OWNER_FILE, (then, then))
    held.start_heartbeat(interval_s=0.05)
    deadline = time.monotonic() + 10
    while (work / OWNER_FILE).stat().st_mtime < then + 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (work / OWNER_FILE).stat().st_mtime > then + 50
    held.release()


def test_releasing_while_the_heartbeat_wakes_raises_nothing_in_its_thread(tmp_path, monkeypatch):
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    for i in range(200):  # release() races the beat thread waking up from its wait
        held = claim(tmp_path / f"w{i}", holder("exp")).start_heartbeat(interval_s=0.0001)
        thread = held._beat
        time.sleep(0.0005)
        held.release()
        thread.join(5)
    assert errors == []


def _contend(work: str, name: str, barrier, results) -> None:
    barrier.wait()
    try:
        held = claim(work, new_holder(name, name, "contender"))
        results.put((name, held.owned))
        time.sleep(1.0)  # hold it while the others decide
    except WorkDirError:
        results.put((name, False))


def test_many_processes_taking_over_one_stale_claim_leave_exactly_one_owner(tmp_path):
    work = tmp_path / "w"
    pid, start = dead_process()
    write_claim(work, Holder("dead", "x", "", os.uname().nodename, pid, start, time.time(), "t0"))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(work), f"c{i}", barrier, results)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = [results.get(timeout=5) for _ in procs]
    winners = [name for name, owned in outcomes if owned]
    assert len(winners) == 1, outcomes
    assert not list(work.glob(f".{OWNER_FILE}.*.tmp")) and not (work / f"{OWNER_FILE}.lock").exists()


def test_a_missing_folder_is_created_and_an_unwritable_one_is_one_line(tmp_path):
    held = claim(tmp_path / "a" / "b", holder("exp"))
    assert held.owned
    held.release()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkDirError, match="cannot create work dir"):
        claim(blocker / "w", holder("exp"))


def test_a_work_dir_holds_a_run_when_it_has_checkpoints_or_metrics(tmp_path):
    assert run_evidence(tmp_path / "missing") == []
    (tmp_path / "logs").mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "config.yaml").write_text("a: 1\n")
    (tmp_path / "train.log").write_text("set-up failed\n")
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / OWNER_FILE).write_text("{}")
    assert run_evidence(tmp_path) == [] and earlier_run(tmp_path, None) is None  # nothing trained: nothing to lose
    for name in ("iter_4.pth", "iter_12.pth", "best_bbox_AP.pth", "latest.pth", "last_checkpoint"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "metrics.jsonl").write_text('{"iter": 1}\n')
    assert set(run_evidence(tmp_path)) == {"iter_4.pth", "iter_12.pth", "best_bbox_AP.pth", "latest.pth",
                                           "last_checkpoint", "metrics.jsonl"}


def test_an_earlier_run_is_continued_only_when_asked(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    for name in ("iter_4.pth", "iter_12.pth", "best_bbox_AP.pth"):
        (work / name).write_bytes(b"x")
    (tmp_path / "w-2").mkdir()
    line = earlier_run(work, None)
    assert line == (f"work dir {work} holds an earlier run (best_bbox_AP.pth, iter_12.pth, iter_4.pth); pass "
                    f"--resume auto to continue that run, or --work-dir {work}-3 for a new one (nothing was written)")
    assert earlier_run(work, "never") == line
    assert earlier_run(work, "auto") is None
    assert earlier_run(work, str(work / "iter_4.pth")) is None  # a checkpoint of this run: continuing it
    elsewhere = tmp_path / "other" / "iter_2.pth"
    assert "is a checkpoint of another folder" in earlier_run(work, str(elsewhere))


def test_a_detcore_train_holder_is_its_torchrun_agent_or_itself():
    assert ownership.run_holder({"DETLAUNCH_EXPERIMENT_ID": "abc"}).experiment == "abc"
    agent = ownership.run_holder({"TORCHELASTIC_RUN_ID": "none"})
    assert agent.experiment.startswith("torchrun:") and str(os.getppid()) in agent.experiment
    alone = ownership.run_holder({})
    assert alone.experiment.startswith("detcore:") and str(os.getpid()) in alone.experiment
