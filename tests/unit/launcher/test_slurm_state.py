"""Slurm's answers (recorded from the test cluster, Slurm 22.05.8) into launcher states, through the `_run` seam."""
from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest

from detcore.facts import parse_fact
from launcher.backends.slurm import SlurmBackend, SlurmError
from launcher.backends.slurm.script import SlurmDefaults
from launcher.backends.slurm.state import (job_status, parse_sacct, parse_sbatch, parse_squeue, sbatch_error_line)
from launcher.backends.slurm.task import master_port
from launcher.errors import LauncherError
from launcher.spec import JobHandle, JobSpec, JobState, Resources

# squeue -h -j ID -O JobArrayID:|,JobID:|,State:|,Reason:|,RestartCnt:|,NodeList:|,StartTime:|
SQ_RUNNING = "16|16|RUNNING|None|0|n1|2026-11-24T16:23:12|\n"
SQ_RUNNING_AGAIN = "13|13|RUNNING|None|1|n1|2026-11-24T16:17:44|\n"
SQ_PENDING = "17|17|PENDING|Priority|0||N/A|\n"
SQ_REQUEUED = "4|4|PENDING|BeginTime|1||2026-11-24T16:12:00|\n"
SQ_COMPLETING = "4|4|COMPLETING|None|1|n1|2026-11-24T16:11:31|\n"
SQ_ARRAY = "9_2|9|PENDING|JobArrayTaskLimit|0|||\n9_0|10|RUNNING|None|0|n1|2026-11-24T16:13:04|\n"
SQ_TOO_BIG = "5|5|PENDING|PartitionNodeLimit|0||N/A|\n"
SQ_TIMEOUT_COMPLETING = "41|41|COMPLETING|TimeLimit|0|n1|2026-11-24T16:46:40|\n"
SQ_REQUEUED_TWICE = "41|41|PENDING|BeginTime|2||2026-11-24T17:11:07|\n"
# sacct -n -P -D -X -j ID -o JobID,JobIDRaw,State,ExitCode,Start,End,NodeList
SA_TIMEOUT_COMPLETING = "41|41|TIMEOUT|0:15|2026-11-24T16:46:40|2026-11-24T17:02:47|n1\n"
SA_REQUEUED_NODE_FAIL = ("41|41|REQUEUED|0:15|2026-11-24T16:46:40|2026-11-24T17:02:47|n1\n"
                         "41|41|NODE_FAIL|0:0|2026-11-24T17:03:28|2026-11-24T17:10:34|n1\n"
                         "41|41|PENDING|0:0|Unknown|Unknown|None assigned\n")
SA_REQUEUED_NODE_FAIL_DONE = ("41|41|REQUEUED|0:15|2026-11-24T16:46:40|2026-11-24T17:02:47|n1\n"
                              "41|41|NODE_FAIL|0:0|2026-11-24T17:03:28|2026-11-24T17:10:34|n1\n"
                              "41|41|COMPLETED|0:0|2026-11-24T17:11:07|2026-11-24T17:11:38|n1\n")
SA_COMPLETED = "12|12|COMPLETED|0:0|2026-11-24T16:15:47|2026-11-24T16:16:39|n1\n"
SA_REQUEUED_COMPLETED = ("13|13|REQUEUED|0:0|2026-11-24T16:17:16|2026-11-24T16:17:43|n1\n"
                         "13|13|COMPLETED|0:0|2026-11-24T16:17:44|2026-11-24T16:19:12|n1\n")
SA_REQUEUED_CANCELLED = ("4|4|REQUEUED|0:0|2026-11-24T16:11:27|2026-11-24T16:11:29|n1\n"
                         "4|4|CANCELLED by 0|0:0|2026-11-24T16:11:31|2026-11-24T16:11:33|n1\n")
SA_FAILED = "16|16|FAILED|15:0|2026-11-24T16:23:12|2026-11-24T16:23:12|n1\n"
SA_TIMEOUT = "21|21|TIMEOUT|0:0|2026-11-24T17:00:00|2026-11-24T17:12:00|n1\n"
SA_OOM = "22|22|OUT_OF_MEMORY|0:125|2026-11-24T17:00:00|2026-11-24T17:01:00|n[1-2]\n"
SA_ARRAY_CANCELLED_PENDING = "9_2|9|CANCELLED by 0|0:0|2026-11-24T16:13:06|2026-11-24T16:13:06|None assigned\n"
SA_WITH_STEPS = ("30|30|COMPLETED|0:0|2026-11-24T16:15:47|2026-11-24T16:16:39|n1\n"
                 "30.batch|30.batch|COMPLETED|0:0|2026-11-24T16:15:47|2026-11-24T16:16:39|n1\n")


def status(job_id: str, squeue: str = "", sacct: str = ""):
    return job_status(job_id, parse_squeue(squeue), parse_sacct(sacct), master_port)


def test_running_pending_and_requeued_jobs():
    st = status("16", SQ_RUNNING)
    assert st.state is JobState.RUNNING and st.restarts == 0 and st.ports == (20016,) and st.started is not None
    st = status("13", SQ_RUNNING_AGAIN)
    assert st.state is JobState.RUNNING and st.restarts == 1 and "after 1 requeue" in st.reason
    st = status("17", SQ_PENDING)
    assert st.state is JobState.PENDING and st.reason == "Slurm: Priority" and st.ports == (20017,)
    st = status("4", SQ_REQUEUED)
    assert st.state is JobState.PREEMPTED and st.restarts == 1
    assert "requeued" in st.reason and "BeginTime" in st.reason
    st = status("5", SQ_TOO_BIG)
    assert st.state is JobState.PENDING and "PartitionNodeLimit" in st.reason


def test_finished_jobs_from_sacct():
    st = status("12", sacct=SA_COMPLETED)
    assert st.state is JobState.SUCCEEDED and st.exit_code == 0 and st.restarts == 0 and st.ended > st.started
    st = status("13", sacct=SA_REQUEUED_COMPLETED)
    assert st.state is JobState.SUCCEEDED and st.restarts == 1 and st.ports == (20013,)
    st = status("4", sacct=SA_REQUEUED_CANCELLED)
    assert st.state is JobState.CANCELLED and st.restarts == 1
    st = status("16", sacct=SA_FAILED)
    assert st.state is JobState.FAILED and st.exit_code == 15 and "failed (exit 15)" in st.reason
    assert "time limit" in status("21", sacct=SA_TIMEOUT).reason
    oom = status("22", sacct=SA_OOM)
    assert oom.state is JobState.FAILED and "--mem-gb" in oom.reason and "signal 125" in oom.reason
    assert status("30", sacct=SA_WITH_STEPS).state is JobState.SUCCEEDED


def test_completing_job_is_final_only_when_cancelled_or_completed():
    assert status("4", SQ_COMPLETING, SA_REQUEUED_CANCELLED).state is JobState.CANCELLED
    assert status("4", SQ_COMPLETING, "").state is JobState.RUNNING
    # Recorded: the time limit killed job 41 while rank 0 was checkpointing; submitit requeued it 10 s later.
    # While it was COMPLETING, sacct said TIMEOUT: that must not be reported (the store keeps terminal states).
    st = status("41", SQ_TIMEOUT_COMPLETING, SA_TIMEOUT_COMPLETING)
    assert st.state is JobState.RUNNING and "COMPLETING" in st.reason
    st = status("41", SQ_REQUEUED_TWICE, SA_REQUEUED_NODE_FAIL)
    assert st.state is JobState.PREEMPTED and st.restarts == 2
    st = status("41", "", SA_REQUEUED_NODE_FAIL_DONE)
    assert st.state is JobState.SUCCEEDED and st.restarts == 2


def test_array_tasks_have_their_own_ids_and_ports():
    rows = parse_squeue(SQ_ARRAY)
    pending = job_status("9_2", rows, [], master_port)
    assert pending.state is JobState.PENDING and pending.ports == ()  # its own id comes when it starts
    running = job_status("9_0", rows, [], master_port)
    assert running.state is JobState.RUNNING and running.ports == (20010,)
    assert status("9_2", sacct=SA_ARRAY_CANCELLED_PENDING).state is JobState.CANCELLED


def test_unknown_job_is_failed_with_a_reason():
    st = status("99")
    assert st.state is JobState.FAILED and "knows no job 99" in st.reason


def test_sbatch_answers():
    assert parse_sbatch("123\n") == "123" and parse_sbatch("124;detlaunch\n") == "124"
    with pytest.raises(LauncherError, match="could not read a job id"):
        parse_sbatch("Submitted batch job\n")
    err = ("sbatch: error: Memory specification can not be satisfied\n"
           "sbatch: error: Batch job submission failed: Requested node configuration is not available\n")
    assert sbatch_error_line(err) == ("Memory specification can not be satisfied; Batch job submission failed: "
                                      "Requested node configuration is not available")
    assert sbatch_error_line("sbatch: unrecognized option '--foo=bar'\nTry \"sbatch --help\" for more "
                             "information\n") == "unrecognized option '--foo=bar'"


class RecordedSlurm(SlurmBackend):
    """The backend with `_run` answering from recorded output (or raising a recorded error)."""

    def __init__(self, home: Path, answers: dict[str, object]):
        super().__init__(home, SlurmDefaults(), python="/py", repo_root="/repo")
        self.answers = answers
        self.calls: list[list[str]] = []

    def _run(self, cmd):
        self.calls.append(list(cmd))
        answer = self.answers.get(cmd[0], "")
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def handle(job_id: str, folder: Path, work_dir: Path) -> JobHandle:
    return JobHandle("0123abcd", "slurm", job_id, (("folder", str(folder)), ("work_dir", str(work_dir))))


def test_status_asks_squeue_then_sacct_and_explains_failures(tmp_path):
    folder = tmp_path / "slurm" / "0123abcd"
    folder.mkdir(parents=True)
    with open(folder / "16_0_result.pkl", "wb") as f:  # what submitit's runner writes when the task raised
        pickle.dump(("error", "Traceback (most recent call last):\n  ...\nWorkerFailed: rank 0: worker failed "
                              "with exit code 1; see /w/logs/rank0.log\n"), f)
    b = RecordedSlurm(tmp_path, {"squeue": SlurmError("squeue failed: slurm_load_jobs error: Invalid job id "
                                                      "specified"), "sacct": SA_FAILED})
    st = b.status(handle("16", folder, tmp_path / "w"))
    assert st.state is JobState.FAILED
    assert st.reason.endswith("WorkerFailed: rank 0: worker failed with exit code 1; see /w/logs/rank0.log")
    assert [c[0] for c in b.calls] == ["squeue", "sacct"] and b.calls[0][:4] == ["squeue", "-h", "-j", "16"]
    b = RecordedSlurm(tmp_path, {"squeue": SQ_RUNNING})
    assert b.status(handle("16", folder, tmp_path / "w")).state is JobState.RUNNING
    assert [c[0] for c in b.calls] == ["squeue"]  # a running job costs one call
    b = RecordedSlurm(tmp_path, {"squeue": SlurmError("squeue failed: Unable to contact slurm controller")})
    with pytest.raises(SlurmError, match="Unable to contact"):
        b.status(handle("16", folder, tmp_path / "w"))


def test_running_status_and_progress_reach_the_store_through_reconcile(tmp_path, monkeypatch):
    """The backend only reports; reconcile (the store's one writer) records state and the newest metrics."""
    import launcher.backends as backends
    from launcher.store.reconcile import refresh
    from launcher.store import ExperimentStore, experiment_from_spec

    work = tmp_path / "w"
    work.mkdir()
    (work / "metrics.jsonl").write_text('{"mode": "train", "iter": 7, "loss": 0.5}\n')
    store = ExperimentStore(tmp_path)
    spec = JobSpec(id="0123abcd", name="x", config="/c.yaml", work_dir=str(work), cwd="/", backend="slurm",
                   resources=Resources(nproc=2))
    store.insert(experiment_from_spec(spec, JobState.PENDING))
    store.set_backend_job("0123abcd", "16", {"folder": str(tmp_path), "work_dir": str(work)})
    slurm = RecordedSlurm(tmp_path, {"squeue": SQ_RUNNING})
    monkeypatch.setattr(backends, "get_backend", lambda name, home=None: slurm)
    assert store.get("0123abcd").last_iter is None  # status alone writes nothing
    exp, = refresh(store, [store.get("0123abcd")])
    assert (exp.state, exp.last_iter, exp.last_loss) == (JobState.RUNNING, 7, 0.5)


def test_cancel_is_idempotent_and_waits_for_the_end(tmp_path):
    b = RecordedSlurm(tmp_path, {"scancel": "", "squeue": [SQ_COMPLETING, ""], "sacct": ["", SA_REQUEUED_CANCELLED]})
    b.cancel(handle("4", tmp_path, tmp_path))
    assert b.calls[0] == ["scancel", "4"]
    assert [c[0] for c in b.calls].count("squeue") == 2
    # an already finished job: scancel complains, cancel does not
    done = RecordedSlurm(tmp_path, {"scancel": SlurmError("scancel failed: Kill job error on job id 12: Job/step "
                                                          "already completing or completed"), "sacct": SA_COMPLETED})
    done.cancel(handle("12", tmp_path, tmp_path))
    gone = RecordedSlurm(tmp_path, {"scancel": SlurmError("scancel failed: Invalid job id specified"),
                                    "sacct": SA_COMPLETED})
    gone.cancel(handle("12", tmp_path, tmp_path))
    broken = RecordedSlurm(tmp_path, {"scancel": SlurmError("scancel failed: Access/permission denied")})
    with pytest.raises(SlurmError, match="permission denied"):
        broken.cancel(handle("12", tmp_path, tmp_path))


def test_refused_submission_leaves_nothing(tmp_path):
    spec = JobSpec(id="0123abcd", name="x", config="/c.yaml", work_dir=str(tmp_path / "w"), cwd=str(tmp_path),
                   backend="slurm", resources=Resources(nproc=1, gpus=1))
    b = RecordedSlurm(tmp_path, {"sbatch": SlurmError("sbatch failed: Invalid generic resource (gres) "
                                                      "specification")})
    with pytest.raises(LauncherError) as err:
        b.submit(spec)
    assert str(err.value) == "sbatch refused the job: Invalid generic resource (gres) specification"
    assert "\n" not in str(err.value)
    assert not (tmp_path / "slurm" / "0123abcd").exists() and not (tmp_path / "w").exists()


def test_submission_writes_script_and_pickles(tmp_path):
    spec = JobSpec(id="0123abcd", name="x", config="/c.yaml", work_dir=str(tmp_path / "w"), cwd=str(tmp_path),
                   backend="slurm", resources=Resources(nproc=2))
    b = RecordedSlurm(tmp_path, {"sbatch": "42\n"})
    h = b.submit(spec)
    folder = tmp_path / "slurm" / "0123abcd"
    assert h.job_id == "42" and h.get("folder") == str(folder) and h.get("work_dir") == spec.work_dir
    assert b.calls == [["sbatch", "--parsable", str(folder / "submission.sh")]]
    assert (folder / "submission.sh").read_text() == dict(b.dryrun(spec).files)["sbatch script submission.sh"]
    assert (folder / "42_submitted.pkl").is_file() and not list(folder.glob(".*.pkl"))
    specs = [JobSpec(id=f"0000000{i}", name=f"x-{i}", config="/c.yaml", work_dir=str(tmp_path / f"w{i}"),
                     cwd=str(tmp_path), backend="slurm") for i in range(3)]
    handles = RecordedSlurm(tmp_path, {"sbatch": "50\n"}).submit_array(specs)
    assert [h.job_id for h in handles] == ["50_0", "50_1", "50_2"]
    assert [h.experiment_id for h in handles] == [s.id for s in specs]
    assert sorted(p.name for p in (tmp_path / "slurm" / "array-00000000").glob("*.pkl")) == \
        ["50_0_submitted.pkl", "50_1_submitted.pkl", "50_2_submitted.pkl"]




# ---- why a job was requeued, and which rank failed: Slurm's records plus the launch's facts ----------

SA_REQUEUED_RUNNING = ("13|13|REQUEUED|0:0|2026-11-24T16:17:16|2026-11-24T16:17:43|n1\n"
                       "13|13|RUNNING|0:0|2026-11-24T16:17:44|Unknown|n1\n")
SA_REQUEUED_PENDING = ("4|4|REQUEUED|0:0|2026-11-24T16:11:27|2026-11-24T16:11:29|n1\n"
                       "4|4|PENDING|0:0|Unknown|Unknown|None assigned\n")
SA_NODE_FAIL = "41|41|NODE_FAIL|1:0|2026-11-24T17:03:28|2026-11-24T17:10:34|n[1-2]\n"
# squeue -h -j ID -O EndTime:|
SQ_END_TIME = "2026-12-07T09:07:19|\n"


def shim_start(rank, attempt=0, node="n1"):
    return {"event": "start", "rank": rank, "attempt": attempt, "pid": 900 + rank, "host": "login1", "node": node,
            "time": 1000.0 + attempt, "master_addr": "n1", "master_port": 20016, "world_size": 2}


def usr2_requeue(attempt, left):
    return {"event": "requeue", "attempt": attempt, "rank": 0, "signal": "USR2", "time_left_s": left,
            "signal_delay_s": 120, "time": 1500.0}


def typed(events):
    """The records of facts written here as their JSON objects (how the writers put them on disk)."""
    return [parse_fact(e) for e in events]


def with_facts(job_id, squeue="", sacct="", events=()):
    return job_status(job_id, parse_squeue(squeue), parse_sacct(sacct), master_port, typed(events))


@pytest.mark.parametrize("events, cause", [
    ([], "a manual scontrol requeue (no preemption, time limit or hang was recorded)"),
    ([usr2_requeue(0, 141.0)], "the time limit (USR2 with 141 s left)"),
    ([usr2_requeue(0, 3480.0)], "a preemption signal (USR2 with 58 min left before the time limit)"),
    ([usr2_requeue(0, None)], "a USR2 signal (a preemption or the time limit)"),
    ([{"event": "hang", "attempt": 0, "rank": 1, "state": "stopped", "detail": "no rank finished ..."},
      {"event": "requeue", "attempt": 0, "rank": 0, "cause": "hang", "time": 1500.0}], "a hang (rank 1 is stopped)"),
])
def test_a_requeue_says_why(events, cause):
    facts = [shim_start(0), shim_start(1), *events]
    st = with_facts("4", SQ_REQUEUED, SA_REQUEUED_PENDING, facts)
    assert st.state is JobState.PREEMPTED and st.restarts == 1
    assert st.reason == f"requeued after {cause}, waiting to start again (restart 1); Slurm: BeginTime"
    running = with_facts("13", SQ_RUNNING_AGAIN, SA_REQUEUED_RUNNING, facts)
    assert running.reason == f"running again after 1 requeue(s), the last after {cause}"
    done = with_facts("13", sacct=SA_REQUEUED_COMPLETED, events=facts)
    assert done.state is JobState.SUCCEEDED and done.reason == f"finished after 1 requeue(s), the last after {cause}"


def test_a_node_failure_requeue_names_the_rank_on_the_lost_node():
    facts = [shim_start(0, node="n1"), shim_start(1, node="n2"),
             {"event": "end", "rank": 0, "attempt": 0, "exit_code": 1, "detail": "RuntimeError: [gloo] timed out",
              "time": 1060.0}]
    st = with_facts("41", SQ_REQUEUED_TWICE, SA_REQUEUED_NODE_FAIL, [*facts, usr2_requeue(0, 100.0),
                                                                       *[{**f, "attempt": 1} for f in facts]])
    assert st.state is JobState.PREEMPTED and st.restarts == 2
    assert st.reason.startswith("requeued after a node failure (rank 1 lost with its node n2), waiting to start again")
    failed = with_facts("41", sacct=SA_NODE_FAIL, events=facts)
    assert failed.state is JobState.FAILED
    assert failed.reason == "Slurm job 41 lost a node (exit 1): rank 1 lost with its node n2"


def test_a_failed_job_names_the_rank_that_failed_first_not_rank_0():
    facts = [shim_start(0), shim_start(1),
             {"event": "end", "rank": 1, "attempt": 0, "exit_code": -9, "detail": "", "time": 1030.02},
             {"event": "end", "rank": 0, "attempt": 0, "exit_code": 1, "time": 1030.4,
              "detail": "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"}]
    st = job_status("16", [], parse_sacct(SA_FAILED), master_port, typed(facts), lambda: "WorkerFailed: rank 0: ...")
    assert st.reason == "Slurm job 16 failed (exit 15): rank 1 killed by SIGKILL"
    # out of memory: Slurm's word and the rank the OOM killer took
    oom = job_status("22", [], parse_sacct(SA_OOM), master_port, typed(facts[:3]))
    assert oom.reason == ("Slurm job 22 ran out of memory (raise --mem-gb) (exit 0, signal 125): rank 1 killed by "
                          "SIGKILL")
    # a time limit or a cancel is Slurm's own doing: the ranks' SIGTERMs are not the reason
    assert status("21", sacct=SA_TIMEOUT).reason == "Slurm job 21 reached its time limit and was not requeued (exit 0)"


def test_a_user_error_is_the_failure_reason_every_backend_gives():
    facts = [shim_start(0), shim_start(1),
             {"event": "end", "rank": 1, "attempt": 0, "exit_code": 2, "detail": "ConfigError: bad key", "time": 1030.0},
             {"event": "end", "rank": 0, "attempt": 0, "exit_code": -15, "detail": "", "time": 1030.2}]
    st = job_status("16", [], parse_sacct(SA_FAILED), master_port, typed(facts))
    assert st.reason == ("Slurm job 16 failed (exit 15): rank 1: exit code 2 (user error): ConfigError: bad key (a "
                         "user error: the run was stopped, not restarted)")


def test_the_time_left_at_a_usr2_comes_from_squeues_end_time():
    from launcher.backends.slurm.state import end_time_command, parse_end_time

    assert end_time_command("16") == ["squeue", "-h", "-j", "16", "-O", "EndTime:|"]
    assert parse_end_time(SQ_END_TIME) == time.mktime(time.strptime("2026-12-07T09:07:19", "%Y-%m-%dT%H:%M:%S"))
    assert parse_end_time("Unknown|\n") is None and parse_end_time("") is None


def test_status_reads_the_facts_and_asks_sacct_only_when_they_cannot_say(tmp_path):
    from detcore.facts import append_fact

    run = tmp_path / "w" / "runs" / "r1"
    for fact in (shim_start(0), shim_start(1), usr2_requeue(0, 100.0)):
        append_fact(run, parse_fact(fact))
    h = JobHandle("0123abcd", "slurm", "13", (("folder", str(tmp_path)), ("work_dir", str(tmp_path / "w")),
                                             ("run_dir", str(run))))
    b = RecordedSlurm(tmp_path, {"squeue": SQ_RUNNING_AGAIN, "sacct": SA_REQUEUED_RUNNING})
    st = b.status(h)
    assert st.reason == "running again after 1 requeue(s), the last after the time limit (USR2 with 100 s left)"
    assert [c[0] for c in b.calls] == ["squeue"]  # rank 0 recorded why: no sacct
    b = RecordedSlurm(tmp_path, {"squeue": SQ_RUNNING_AGAIN, "sacct": SA_REQUEUED_RUNNING})
    st = b.status(JobHandle("0123abcd", "slurm", "13", (("folder", str(tmp_path)),)))  # no facts (an older job)
    assert [c[0] for c in b.calls] == ["squeue", "sacct"] and "manual scontrol requeue" in st.reason
