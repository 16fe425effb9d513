"""The job runtime without processes: facts to restarts and reasons, the monitor's writes, the hang verdict."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detcore import contract
from launcher.runtime import facts as run_facts
from detcore.contract import OUTCOME_FILE
from detcore.facts import append_fact, parse_fact, read_facts
from launcher.runtime.monitor import RunMonitor, observed_status
from launcher.state import JobState
from launcher.resources.procinfo import process_state
from launcher.runtime.rank import hang_verdict

ROOT = Path(__file__).resolve().parents[3]


def summarize(events, alive=None):
    """The summary of facts written here as their JSON objects (how the writers put them on disk)."""
    return run_facts.summarize([parse_fact(e) for e in events], alive)


def start(rank, attempt, port=29500, pid=None):
    return {"event": "start", "rank": rank, "attempt": attempt, "pid": pid or 100 + rank, "master_port": port,
            "master_addr": "127.0.0.1", "host": "h"}


def end(rank, attempt, code, detail=""):
    return {"event": "end", "rank": rank, "attempt": attempt, "exit_code": code, "detail": detail}


def test_the_rank_that_failed_is_named_not_the_one_torchrun_stopped():
    events = [start(0, 0), start(1, 0), end(0, 0, -signal.SIGTERM), end(1, 0, -signal.SIGKILL),
              start(0, 1, 29501), start(1, 1, 29501), end(0, 1, 0), end(1, 1, 0)]
    facts = summarize(events)
    assert facts.failures == ("rank 1 killed by SIGKILL",) and facts.restarts == 1
    assert facts.ports == (29500, 29501) and facts.all_succeeded(2) and facts.user_error == ""


def test_a_worker_error_outranks_signals_and_a_user_error_is_kept():
    facts = summarize([start(0, 0), start(1, 0), end(1, 0, -signal.SIGTERM),
                       end(0, 0, contract.EXIT_USER_ERROR, "detcore train: error: no module named x")])
    assert facts.failures == ("rank 0: exit code 2 (user error): detcore train: error: no module named x",)
    assert facts.user_error == facts.failures[0] and not facts.all_succeeded(2) and facts.restarts == 0


def test_an_attempt_torchrun_began_after_a_user_error_is_not_a_restart():
    # rank 0 ends with a user error; before the supervisor's SIGTERM reaches torchrun it begins attempt 1,
    # which the stop then ends: the run was stopped, not restarted, and the row must say 0 restarts
    events = [start(0, 0), start(1, 0), end(0, 0, contract.EXIT_USER_ERROR, "bad key"), end(1, 0, -signal.SIGTERM),
              start(0, 1, 29501), start(1, 1, 29501), end(0, 1, -signal.SIGTERM), end(1, 1, -signal.SIGTERM)]
    facts = summarize(events)
    assert facts.user_error.startswith("rank 0: exit code 2") and facts.attempt == 1 and facts.restarts == 0
    # a user error after a real restart keeps that restart
    later = summarize([start(0, 0), end(0, 0, -signal.SIGKILL), start(0, 1), end(0, 1, contract.EXIT_USER_ERROR)])
    assert later.restarts == 1


def test_a_rank_that_died_without_an_end_record_is_reported_killed_only_when_its_pid_is_gone():
    events = [start(0, 0), start(1, 0, pid=4242)]
    assert summarize(events, alive=lambda rec: True).failures == ()
    assert summarize(events, alive=lambda rec: None).failures == ()  # another host: cannot tell
    gone = summarize(events, alive=lambda rec: rec.pid != 4242)
    assert gone.failures[0].startswith("rank 1: the worker (pid 4242 on h) died without recording an exit")


def test_hang_facts_name_the_stopped_rank():
    events = [start(0, 0), start(1, 0),
              {"event": "hang", "attempt": 0, "rank": 0, "state": "running", "detail": "no rank finished ..."},
              {"event": "hang", "attempt": 0, "rank": 1, "state": "stopped", "detail": "no rank finished ..."},
              end(0, 0, contract.EXIT_HUNG), end(1, 0, contract.EXIT_HUNG), start(0, 1), start(1, 1)]
    facts = summarize(events)
    assert facts.restarts == 1 and facts.failures[0].startswith("hang: rank 1 is stopped; no rank finished")


def test_hang_verdict():
    now = 1000.0
    assert hang_verdict({0: (5, now - 3), 1: (5, now - 4)}, started=0, now=now, timeout=10) is None
    text = hang_verdict({0: (5, now - 30), 1: None}, started=0, now=now, timeout=10)
    assert text.startswith("no rank finished an iteration for 30 s (limit 10 s)") and "rank 1: -" in text
    # before the first heartbeat the limit is at least the start-up limit
    assert hang_verdict({0: None}, started=now - 100, now=now, timeout=10, startup_limit=600) is None
    assert "first iteration" in hang_verdict({0: None}, started=now - 700, now=now, timeout=10, startup_limit=600)


def test_process_state_sees_a_stopped_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_state(proc.pid) == "running"
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while process_state(proc.pid) != "stopped" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_state(proc.pid) == "stopped"
    finally:
        proc.kill()
        proc.wait()
    assert process_state(proc.pid) == "gone"


def test_monitor_keeps_the_status_when_the_disk_refuses_and_records_the_ending_beside_the_facts(tmp_path,
                                                                                                monkeypatch):
    import launcher.runtime.monitor as monitor_module

    run = tmp_path / "work" / "runs" / "r1"
    run.mkdir(parents=True)
    mon = RunMonitor(tmp_path / "home" / "status.json", run, max_restarts=1)  # home/ does not exist: writes fail
    mon.set(JobState.RUNNING, restarts=1)
    assert mon.status["state"] == "running" and not (tmp_path / "home" / "status.json").exists()
    mon.finish(JobState.SUCCEEDED, 0, "")
    outcome = json.loads((run / OUTCOME_FILE).read_text())
    assert outcome["state"] == "succeeded" and outcome["restarts"] == 1
    # the reader: a stale status.json and a dead monitor, but the ending is in outcome.json
    st = observed_status({"state": "running", "restarts": 1}, outcome, monitor_alive=False, who="the supervisor")
    assert st.state is JobState.SUCCEEDED and st.restarts == 1
    monkeypatch.setattr(monitor_module, "write_json_atomic", lambda *a: (_ for _ in ()).throw(OSError(28, "full")))
    mon2 = RunMonitor(tmp_path / "status2.json", run, max_restarts=0)
    mon2.set(JobState.RUNNING)  # no exception: a full disk never stops a job


def test_a_dead_monitor_without_an_ending_is_monitor_lost():
    st = observed_status({"state": "running", "restarts": 2}, None, monitor_alive=False, who="the supervisor (pid 7)")
    assert st.state is JobState.FAILED and st.restarts == 2
    assert st.reason.startswith("monitor lost: the supervisor (pid 7) died without recording an ending")
    assert observed_status(None, None, monitor_alive=True, who="x").state is JobState.PENDING


def test_the_shim_records_its_workers_exit_and_exits_the_same_way(tmp_path):
    """The shim is the worker's parent: a worker killed by SIGKILL is recorded exactly, and the shim dies the same way."""
    run, logs = tmp_path / "run", tmp_path / "logs"
    script = tmp_path / "victim.py"
    script.write_text("import os, signal\nprint('hello', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}", "RANK": "1", "WORLD_SIZE": "2"}
    proc = subprocess.run([sys.executable, "-m", "launcher.runtime.shim", "--log-dir", str(logs), "--run-dir", str(run),
                           "--", "victim"], env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    kinds = [(e["event"], e["rank"], e.get("exit_code")) for e in [f.to_json() for f in read_facts(run)]]
    assert kinds == [("start", 1, None), ("end", 1, -signal.SIGKILL)]
    assert "hello" in (logs / "rank1.log").read_text()
    assert (run / "heartbeat" / "a0").is_dir()


@pytest.mark.parametrize("code", [0, 2])
def test_the_shim_passes_exit_codes_through(tmp_path, code):
    script = tmp_path / "ender.py"
    script.write_text(f"import sys\nprint('last words', file=sys.stderr)\nsys.exit({code})\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    proc = subprocess.run([sys.executable, "-m", "launcher.runtime.shim", "--log-dir", str(tmp_path / "logs"), "--run-dir",
                           str(tmp_path / "run"), "--", "ender"], env=env, timeout=60)
    assert proc.returncode == code
    (rec,) = [e for e in [f.to_json() for f in read_facts(tmp_path / "run")] if e["event"] == "end"]
    assert rec["exit_code"] == code and rec["detail"] == ("last words" if code else "")


def test_a_dead_monitor_of_a_cancelled_job_reads_cancelled_not_lost():
    """`launcher cancel` may have to kill the monitor; a reader between the kill and the cancel's own write sees
    the `cancel` file, not a lost monitor."""
    st = observed_status({"state": "running"}, None, monitor_alive=False, who="the driver", cancel_requested=True)
    assert (st.state, st.reason) == (JobState.CANCELLED, "cancelled")


def test_resume_on_the_same_backend_changes_only_the_options_given():
    import argparse

    from launcher.backends.slurm import options_from_args
    from launcher.backends.slurm.script import SlurmOptions
    from launcher.cli.commands import _resume_options
    import launcher.backends.slurm as slurm_module

    old = SlurmOptions(partition="gpu", account="p", exclude="n2")
    flags = {k: None for k in ("slurm_partition", "slurm_account", "slurm_qos", "slurm_constraint", "slurm_exclude",
                               "slurm_signal_delay", "slurm_max_timeouts", "slurm_array_parallelism")}
    args = argparse.Namespace(**{**flags, "slurm_exclude": "n3", "slurm_options": []})
    merged = _resume_options(args, slurm_module, old, moved=False)
    assert (merged.partition, merged.account, merged.exclude) == ("gpu", "p", "n3")
    assert _resume_options(argparse.Namespace(**flags, slurm_options=[]), slurm_module, old, moved=False) == old
    moved = _resume_options(args, slurm_module, None, moved=True)
    assert moved == options_from_args(args) and moved.partition is None


def test_a_two_node_slurm_experiment_resumed_locally_is_told_to_pass_nodes_1(tmp_path):
    """Every node ran --nproc workers: on one machine the user chooses how many; the advice names --nodes 1."""
    from launcher.backends.slurm.script import SlurmOptions
    from launcher.spec import JobSpec, JobStatus, Resources
    from launcher.store import ExperimentStore, experiment_from_spec

    home = tmp_path / "home"
    store = ExperimentStore(home)
    shapes = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")
    spec = JobSpec(id="0123abcd", name="two", config=shapes, work_dir=str(tmp_path / "w"), cwd=str(tmp_path),
                   backend="slurm", backend_options=SlurmOptions(), resources=Resources(nproc=2, nodes=2))
    store.insert(experiment_from_spec(spec, JobState.PENDING))
    store.set_backend_job(spec.id, "5", {"folder": "/nowhere"})
    store.record_status(spec.id, JobStatus(JobState.FAILED, exit_code=1))
    store.close()
    env = {**os.environ, "LAUNCHER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "launcher", "resume", spec.id, "--backend", "local"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "launcher resume: error: experiment 0123abcd ran on 2 nodes and the local backend runs on one: add --nodes 1 "
        "(with --nproc N or --gpus N for this machine's workers; the scaling is recomputed for the new world size)"]
    assert not (home / "jobs").exists()


def test_slurm_hang_requeues_within_the_budget_then_fails(tmp_path, monkeypatch):
    from launcher.backends.slurm import task as slurm_task

    run = tmp_path / "run"
    calls = []
    monkeypatch.setattr(slurm_task, "REQUEUE_WAIT_S", 0.0)
    monkeypatch.setattr(slurm_task.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    task = slurm_task.SlurmTask("0123abcd", (), str(tmp_path), {}, str(tmp_path / "logs"), run_dir=str(run),
                                hang_requeues=1)
    append_fact(run, parse_fact({"event": "hang", "attempt": 0, "rank": 1, "state": "stopped", "detail": "no rank"}))
    with pytest.raises(slurm_task.WorkerFailed, match="not requeued within"):
        task._after_hang(0, 0)
    assert calls == [["scontrol", "requeue", "77"]]
    append_fact(run, parse_fact({"event": "hang", "attempt": 1, "rank": 1, "state": "stopped", "detail": "no rank"}))
    with pytest.raises(slurm_task.WorkerFailed, match="the most allowed by --max-restarts") as failed:
        task._after_hang(0, 1)
    assert "hang: rank 1 is stopped" in str(failed.value) and len(calls) == 1
    # no requeue allowed: the same words as a local run with --max-restarts 0
    none = slurm_task.SlurmTask("0123abcd", (), str(tmp_path), {}, str(tmp_path / "logs"), run_dir=str(run))
    with pytest.raises(slurm_task.WorkerFailed) as failed:
        none._after_hang(0, 1)
    assert str(failed.value).endswith("(not restarted: --max-restarts 0)") and len(calls) == 1


def test_status_json_holds_what_its_readers_use(tmp_path):
    """``launcher status`` (through observed_status) and the store's repair read these keys; nothing else is
    written, so no field goes stale unread."""
    run = tmp_path / "run"
    mon = RunMonitor(tmp_path / "status.json", run, max_restarts=0)
    append_fact(run, parse_fact(start(0, 0)))
    mon.observe()
    mon.finish(JobState.SUCCEEDED, 0, "")
    status = json.loads((tmp_path / "status.json").read_text())
    assert set(status) == {"state", "restarts", "ports", "reason", "exit_code", "started", "ended", "run_dir",
                           "monitor_pid", "monitor_start"}
    assert status["ports"] == [29500] and observed_status(status, None, False, "the supervisor").exit_code == 0


def test_a_rank_runs_detcore_with_its_run_dir_heartbeats_and_restart_in_either_mode(tmp_path):
    """The shim's child and Ray's in-process detcore get one environment from the rank runner: without the run
    dir, rank 0 of a Ray job could not append its scaling and weights facts (the row would miss its schedule)."""
    from detcore import contract
    from launcher.runtime.rank import RankAttempt

    run = tmp_path / "runs" / "r1"
    env = RankAttempt(str(run), None, 0, 2, 1).worker_env(restart=1)
    assert env[contract.RUN_DIR_ENV] == str(run)
    assert Path(env[contract.HEARTBEAT_DIR_ENV]).is_dir() and Path(env[contract.HEARTBEAT_DIR_ENV]).parent.parent == run
    assert {k: env[k] for k in contract.restart_env(1)} == dict(contract.restart_env(1))
    assert RankAttempt(None, None, 0, 1, 0).worker_env(restart=0) == dict(contract.restart_env(0))
