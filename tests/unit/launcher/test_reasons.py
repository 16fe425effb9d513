"""Reasons from the facts, the same on every backend: the rank that failed first, what Ray reported, the stage.

The facts are recorded the way the shims, the Ray workers and Ray Train's controller write them
(``launcher/runtime/shim.py``, ``launcher/backends/ray_train/{worker,callbacks}.py``); the Slurm
side, with recorded ``squeue``/``sacct`` output, is in ``test_slurm_state.py``.
"""
from __future__ import annotations

import json
import signal

import pytest

from detcore import contract
from detcore.facts import append_fact, parse_fact, read_facts
from launcher.backends.ray_train import reports
from launcher.backends.ray_train.reports import loss_kind
from launcher.runtime import facts as run_facts
from launcher.runtime.monitor import RunMonitor
from launcher.runtime.phase import running_reason
from launcher.state import JobState
from launcher.runtime.rank import heartbeat_dir

HEAD, NODE2 = "3fa9cef83c088b7aca2c223de38b5e15e9e36d0498315ddd16c46f0d", \
    "7deee693a873fe03b774428291fc0992d044225e0178927701059689"


def start(rank, attempt=0, t=100.0, pid=None, **extra):
    return {"event": "start", "rank": rank, "attempt": attempt, "pid": pid or 4100 + rank, "shim_pid": 4000 + rank,
            "host": "gpu7", "time": t, "master_addr": "127.0.0.1", "master_port": 29500, "world_size": 2,
            "local_rank": rank, **extra}


def end(rank, code, t, attempt=0, detail=""):
    return {"event": "end", "rank": rank, "attempt": attempt, "pid": 4100 + rank, "exit_code": code,
            "detail": detail, "time": t}


def typed(events):
    """The records of facts written here as their JSON objects (how the writers put them on disk)."""
    return [parse_fact(e) for e in events]


def summarize(events, alive=None):
    return run_facts.summarize(typed(events), alive)


def failure_facts(exceptions, events, now):
    return [f.to_json() for f in reports.failure_facts(exceptions, typed(events), now)]


def node_losses(events, nodes, now):
    return [f.to_json() for f in reports.node_losses(typed(events), nodes, now)]


def awaiting_node_verdict(events, now, *kinds):
    return reports.awaiting_node_verdict(typed(events), now, *kinds)


def failure(events, alive=lambda rec: False):
    return summarize(events, alive).last_failure


# ---- the first rank that ended badly ---------------------------------------------------------------

def test_a_killed_rank_1_is_named_although_rank_0_then_failed_on_its_own():
    """Slurm: rank 1's worker is SIGKILLed; rank 0's worker then fails with exit code 1 (gloo lost its peer)."""
    events = [start(0), start(1), end(1, -signal.SIGKILL, 130.02),
              end(0, 1, 130.41, detail="RuntimeError: [gloo] Connection closed by peer [127.0.0.1]:29500")]
    assert failure(events) == "rank 1 killed by SIGKILL"
    # local: torchrun stops rank 0 with SIGTERM after rank 1's death
    assert failure([start(0), start(1), end(1, -signal.SIGKILL, 130.02), end(0, -signal.SIGTERM, 130.2)]) == \
        "rank 1 killed by SIGKILL"


def test_the_earliest_failure_is_named_when_several_ranks_fail():
    late, early = end(0, 1, 131.0, detail="ValueError: a"), end(1, 1, 130.0, detail="ValueError: b")
    assert failure([start(0), start(1), late, early]) == "rank 1: exit code 1: ValueError: b"
    assert failure([start(0), start(1), {**late, "time": 129.0}, early]) == "rank 0: exit code 1: ValueError: a"
    # only stop signals: the first one (someone's kill), not torchrun's stop of the others
    assert failure([start(0), start(1), end(0, -signal.SIGTERM, 140.0), end(1, -signal.SIGTERM, 139.5)]) == \
        "rank 1 killed by SIGTERM"


def test_a_hang_is_named_before_the_kills_it_caused():
    events = [start(0), start(1), {"event": "hang", "attempt": 0, "rank": 1, "state": "stopped",
                                   "detail": "no rank finished an iteration for 31 s (limit 30 s)", "time": 200.0},
              end(0, contract.EXIT_HUNG, 202.1), end(1, -signal.SIGKILL, 202.0)]
    assert failure(events).startswith("hang: rank 1 is stopped; no rank finished an iteration for 31 s")


def test_a_rank_that_died_without_a_record_is_named_only_when_its_process_is_gone():
    events = [start(0), start(1, pid=4242)]
    assert summarize(events, alive=lambda rec: None).failures == ()  # another host: cannot tell
    assert failure(events, alive=lambda rec: rec.pid != 4242) == (
        "rank 1: the worker (pid 4242 on gpu7) died without recording an exit: killed by a signal (SIGKILL, the "
        "OOM killer or a node failure)")


def test_ray_a_killed_rank_1_is_named_from_ray_trains_report():
    """A Ray worker runs detcore in-process: neither the killed rank 1 nor rank 0, which Ray then tears down,
    records an end. Ray Train's controller reported rank 1 only; rank 0 died afterwards, torn down."""
    events = [start(0, node_id=HEAD), start(1, node_id=HEAD),
              {"event": "lost", "attempt": 0, "rank": 1, "kind": "process", "source": "ray", "time": 152.3,
               "detail": "The actor died unexpectedly before finishing this task."},
              start(0, attempt=1, t=190.0, node_id=HEAD), start(1, attempt=1, t=190.0, node_id=HEAD)]
    facts = summarize(events, alive=lambda rec: rec.attempt == 1)
    assert facts.restarts == 1 and facts.failures == (
        "rank 1: its worker (pid 4101 on gpu7) died without recording an exit; Ray reports its process died (a "
        "signal such as SIGKILL, the OOM killer or a crash)",)


def test_ray_a_rank_killed_after_its_training_ended_is_named_as_the_cause_of_the_restart():
    """Both ranks recorded exit code 0; rank 1 was SIGKILLed before Ray Train saw its function return, so Ray
    reported its process dead and restarted the group: the restart's cause is named, not left blank."""
    events = [start(0), start(1), end(0, 0, 150.0), end(1, 0, 150.1),
              {"event": "lost", "attempt": 0, "rank": 1, "kind": "process", "source": "ray", "time": 151.0,
               "detail": "The actor died unexpectedly before finishing this task."},
              start(0, attempt=1, t=190.0), start(1, attempt=1, t=190.0), end(0, 0, 200.0, attempt=1),
              end(1, 0, 200.0, attempt=1)]
    facts = summarize(events, alive=lambda rec: False)
    assert facts.failures == ("rank 1: its worker (pid 4101 on gpu7) was lost after its training had ended (its "
                              "process died)",)
    assert facts.success_note() == ("finished after 1 restart(s); last failure: rank 1: its worker (pid 4101 on "
                                    "gpu7) was lost after its training had ended (its process died)")
    # an error the worker raised after recording its end is not a loss from outside: no blame, no blank
    raised = [{**e, "kind": "error"} if e["event"] == "lost" else e for e in events]
    assert summarize(raised, alive=lambda rec: False).success_note() == "finished after 1 restart(s)"
    assert summarize(events[:4], alive=lambda rec: False).success_note() == ""


def test_every_monitor_words_a_stop_and_a_failure_alike():
    """The policy the local supervisor and the Ray driver share: a user error stops, never restarts; a failure
    says why it was not restarted again."""
    killed = [start(0), start(1), end(1, -signal.SIGKILL, 130.0), end(0, -signal.SIGTERM, 130.2)]
    facts = summarize(killed, alive=lambda rec: False)
    assert facts.stop_reason == ""
    assert facts.failure_reason("torchrun ended", 0, "--max-restarts") == \
        "rank 1 killed by SIGKILL (not restarted: --max-restarts 0)"
    again = killed + [start(0, attempt=1), start(1, attempt=1), end(1, -signal.SIGKILL, 140.0, attempt=1),
                      end(0, -signal.SIGTERM, 140.2, attempt=1)]
    facts = summarize(again, alive=lambda rec: False)
    assert facts.failure_reason("x", 1, "--max-failures") == \
        "rank 1 killed by SIGKILL (after 1 restart(s), the most allowed by --max-failures)"
    assert facts.failure_reason("x", -1, "--max-failures") == "rank 1 killed by SIGKILL (after 1 restart(s))"
    assert summarize([start(0)], alive=lambda rec: None).failure_reason("Ray Train: boom", 2, "--max-failures") == \
        "Ray Train: boom"
    user = summarize([start(0), start(1), end(1, contract.EXIT_USER_ERROR, 130.0, detail="ConfigError: bad key")],
                     alive=lambda rec: False)
    assert user.stop_reason == ("rank 1: exit code 2 (user error): ConfigError: bad key (a user error: the run was "
                                "stopped, not restarted)")


def test_ray_a_killed_rank_is_named_before_the_error_its_peer_raised_in_the_same_report():
    """Rank 0's collective lost its peer and raised (an end record, exit code 1) before Ray Train's poll, which
    then reported both: the rank killed from outside is the cause, whatever the times say."""
    events = [start(0), start(1), end(0, 1, 152.1, detail="RuntimeError: [gloo] Connection closed by peer"),
              {"event": "lost", "attempt": 0, "rank": 0, "kind": "error", "source": "ray", "time": 153.0},
              {"event": "lost", "attempt": 0, "rank": 1, "kind": "process", "source": "ray", "time": 153.0}]
    assert failure(events).startswith("rank 1: its worker (pid 4101 on gpu7) died without recording an exit")
    # rank 0 raised from Ray's own collective instead (no end record): still rank 1
    assert failure([e for e in events if e["event"] != "end"]).startswith("rank 1: its worker")


def test_ray_a_lost_second_node_names_its_rank_and_the_node():
    events = [start(0, node_id=HEAD), start(1, node_id=NODE2),
              {"event": "lost", "attempt": 0, "rank": 1, "kind": "unreachable", "source": "ray", "time": 153.5,
               "detail": "The actor 5ee4a845 is unavailable: The actor is temporarily unavailable: RpcError"}]
    assert failure(events) == ("rank 1: its worker (pid 4101 on gpu7) stopped answering Ray (its process or its node "
                               "is gone)")
    # the driver asked ray.nodes() (recorded) once Ray declared the node dead
    nodes = [{"NodeID": HEAD, "Alive": True, "NodeManagerAddress": "127.0.0.1"},
             {"NodeID": NODE2, "Alive": False, "NodeManagerAddress": "127.0.0.1", "DeathReason": 2,
              "DeathReasonMessage": "health check failed due to missing too many heartbeats"}]
    assert awaiting_node_verdict(events, now=160.0)
    verdict = node_losses(events, nodes, now=165.0)
    assert [(v["rank"], v["kind"]) for v in verdict] == [(1, "node")]
    events += verdict
    assert not awaiting_node_verdict(events, now=166.0) and node_losses(events, nodes, now=167.0) == []
    assert failure(events) == ("rank 1 lost with its node 7deee693a873 (127.0.0.1) (Ray: health check failed due to "
                               "missing too many heartbeats)")
    assert not awaiting_node_verdict(events[:2] + [{**events[2], "time": 100.0}], now=170.0)  # too old to wait on


def test_ray_an_exception_a_worker_raised_keeps_its_own_end_record():
    events = [start(0), start(1), end(1, 1, 150.0, detail="KeyError: 'boxes'"),
              {"event": "lost", "attempt": 0, "rank": 1, "kind": "error", "source": "ray", "time": 151.0,
               "detail": "rank 1: detcore.tools.cli exited with code 1: KeyError: 'boxes'"}]
    assert failure(events) == "rank 1: exit code 1: KeyError: 'boxes'"


def test_slurm_a_node_failure_names_the_ranks_on_the_lost_node():
    """sacct says NODE_FAIL; the rank on n2 left no record (its shim died with the node), rank 0 failed later."""
    events = [start(0, node="n1"), start(1, node="n2"), end(0, 1, 160.0, detail="RuntimeError: [gloo] timed out"),
              {"event": "lost", "attempt": 0, "rank": None, "kind": "node", "source": "slurm", "detail": ""}]
    assert failure(events) == "rank 1 lost with its node n2"


# ---- what Ray Train reports, as facts --------------------------------------------------------------

def test_ray_failure_reports_become_lost_facts_of_the_current_attempt():
    from ray.exceptions import ActorDiedError, ActorUnavailableError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError

    died = WorkerHealthCheckFailedError("Worker health check failed.", ActorDiedError())
    gone = WorkerHealthCheckFailedError("Worker health check failed.", ActorUnavailableError("socket closed", None))
    assert [loss_kind(e) for e in (died, gone, WorkerHealthCheckTimeoutError("60 s"), KeyError("boxes"))] == \
        ["process", "unreachable", "unresponsive", "error"]
    placing = {"event": "stage", "stage": "placing", "workers": 2}
    facts = failure_facts({1: died}, [placing, start(0), start(1), start(0, attempt=1), start(1, attempt=1)], now=7.0)
    assert facts == [{"event": "lost", "attempt": 1, "rank": 1, "kind": "process", "source": "ray", "time": 7.0,
                      "detail": "The actor died unexpectedly before finishing this task."}]
    # a worker of a new group that died before it recorded its start belongs to the new attempt
    assert failure_facts({0: died}, [start(0), start(1), placing], now=8.0)[0]["attempt"] == 1
    assert failure_facts({0: died}, [placing], now=8.0)[0]["attempt"] == 0


def test_ray_trainer_gets_the_callbacks_that_record_failures_and_stages(tmp_path):
    import pickle

    from launcher.backends.ray_train.callbacks import RecordFailures, RecordStages, train_callbacks

    run = tmp_path / "run"
    callbacks = pickle.loads(pickle.dumps(train_callbacks(str(run))))  # they travel to Ray Train's controller
    assert [type(c) for c in callbacks] == [RecordFailures, RecordStages]

    class Context:
        num_workers, resources_per_worker = 2, {"CPU": 1}

    callbacks[1].before_worker_group_start(Context())
    callbacks[0].after_exception(None, {1: KeyError("boxes")})
    placing, lost = (f.to_json() for f in read_facts(run))
    assert (placing["event"], placing["stage"], placing["workers"], placing["resources"]) == \
        ("stage", "placing", 2, {"CPU": 1})
    assert (lost["event"], lost["rank"], lost["kind"], lost["detail"]) == ("lost", 1, "error", "'boxes'")


# ---- the stage while the job runs ------------------------------------------------------------------

def beat(it, phase="training"):
    return contract.Beat(it, 300.0, phase)


@pytest.mark.parametrize("events, beats, reason", [
    ([], {}, ""),
    ([{"event": "stage", "stage": "placing", "workers": 2, "resources": {"CPU": 1}}], {},
     "waiting for Ray to place 2 worker(s) (1 CPU each)"),
    ([{"event": "stage", "stage": "placing", "workers": 2}, {"event": "stage", "stage": "starting", "workers": 2}], {},
     "starting 2 worker(s)"),
    ([start(0)], {0: None, 1: None}, "1 of 2 ranks started: building the model and loading data"),
    ([start(0), start(1)], {0: beat(12), 1: beat(11)}, "training at iteration 12"),
    ([start(0), start(1)], {0: beat(20, "evaluating"), 1: beat(20, "evaluating")}, "evaluating at iteration 20"),
    ([start(0), start(1), end(1, -9, 130.0), start(0, 1), start(1, 1)], {0: beat(7), 1: beat(7)},
     "training at iteration 7 (restart 1 of at most 2, after rank 1 killed by SIGKILL)"),
])
def test_the_running_reason_follows_the_stage(events, beats, reason):
    assert running_reason(summarize(events), beats, 2, max_restarts=2) == reason


def test_the_ray_monitor_follows_placement_training_evaluation_and_a_restart(tmp_path):
    """The driver's monitor, fed the facts as Ray Train's controller and the workers append them."""
    run = tmp_path / "runs" / "r1"
    mon = RunMonitor(tmp_path / "status.json", run, max_restarts=1)
    mon.set(JobState.PENDING, reason="Ray Train on 127.0.0.1:6391: starting workers")

    def step(*facts, beats=None, attempt=0) -> tuple[str, str]:
        for fact in facts:
            append_fact(run, parse_fact(fact))
        heartbeat_dir(run, attempt).mkdir(parents=True, exist_ok=True)  # as the shim makes it
        for rank, (it, phase) in (beats or {}).items():
            contract.write_heartbeat(heartbeat_dir(run, attempt), rank, it, phase)
        mon.observe()
        status = json.loads((tmp_path / "status.json").read_text())
        return status["state"], status["reason"]

    assert step() == ("pending", "Ray Train on 127.0.0.1:6391: starting workers")
    assert step({"event": "stage", "stage": "placing", "workers": 2, "resources": {"CPU": 1.0}}) == \
        ("pending", "waiting for Ray to place 2 worker(s) (1 CPU each)")
    assert step({"event": "stage", "stage": "starting", "workers": 2}) == ("pending", "starting 2 worker(s)")
    assert step(start(0, node_id=HEAD), start(1, node_id=HEAD)) == \
        ("running", "2 rank(s) started: building the model and loading data")
    assert step(beats={0: (5, "training"), 1: (5, "training")}) == ("running", "training at iteration 5")
    assert step(beats={0: (10, "evaluating")}) == ("running", "evaluating at iteration 10")
    assert step({"event": "lost", "attempt": 0, "rank": 1, "kind": "process", "source": "ray", "time": 1.0}) == \
        ("restarting", "restarting after rank 1: its worker (pid 4101 on gpu7) died without recording an exit; Ray "
                       "reports its process died (a signal such as SIGKILL, the OOM killer or a crash)")
    state, reason = step({"event": "stage", "stage": "placing", "workers": 2})
    assert state == "restarting" and reason.endswith("; waiting for Ray to place 2 worker(s)")
    state, reason = step(start(0, 1), start(1, 1), beats={0: (12, "training"), 1: (12, "training")}, attempt=1)
    assert state == "running" and reason.startswith("training at iteration 12 (restart 1 of at most 1, after rank 1:")
    assert mon.status["restarts"] == 1
