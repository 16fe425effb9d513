"""Reading a row reconciles it with the local backend: a dead supervisor is reported, not shown as running."""
from __future__ import annotations

import json
import subprocess
import sys

from launcher.runtime.files import write_json_atomic
from launcher.resources.procinfo import current_process, process_start
from launcher.store.reconcile import refresh
from launcher.spec import JobSpec, JobState
from launcher.store import ExperimentStore, experiment_from_spec


def _row(store, tmp_path, exp_id, pid, start, status):
    spec = JobSpec(id=exp_id, name="x", config="/c.yaml", work_dir=str(tmp_path / exp_id), cwd="/")
    store.insert(experiment_from_spec(spec, JobState.RUNNING))
    store.set_backend_job(exp_id, str(pid), {"supervisor_start": str(start)})
    job_dir = tmp_path / "home" / "jobs" / exp_id
    job_dir.mkdir(parents=True)
    if status is not None:
        write_json_atomic(job_dir / "status.json", status)


def test_dead_supervisor_is_failed_and_finished_one_is_read_from_its_file(tmp_path):
    store = ExperimentStore(tmp_path / "home")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = process_start(dead.pid) or 1
    dead.wait()
    _row(store, tmp_path, "0000dead", dead.pid, dead_start, {"state": "running", "restarts": 1})
    _row(store, tmp_path, "000000ff", dead.pid, dead_start,
         {"state": "succeeded", "exit_code": 0, "restarts": 1, "ports": [41000], "reason": "finished after 1 restart"})
    me, my_start = current_process()
    _row(store, tmp_path, "0000a11e", me, my_start, {"state": "running", "ports": [42000]})
    rows = {e.id: e for e in refresh(store, store.list())}
    assert rows["0000dead"].state is JobState.FAILED and "supervisor" in rows["0000dead"].reason
    assert rows["0000dead"].restarts == 1 and rows["0000dead"].ended is not None
    ok = rows["000000ff"]
    assert (ok.state, ok.exit_code, ok.restarts, ok.port_list) == (JobState.SUCCEEDED, 0, 1, [41000])
    assert rows["0000a11e"].state is JobState.RUNNING and rows["0000a11e"].port_list == [42000]
    # terminal rows are not touched again, whatever the backend says later
    (tmp_path / "home" / "jobs" / "000000ff" / "status.json").write_text(json.dumps({"state": "failed"}))
    assert {e.id: e for e in refresh(store, store.list())}["000000ff"].state is JobState.SUCCEEDED


def test_the_workers_scaling_fact_replaces_the_launchers_prediction_in_the_row(tmp_path):
    """The row's lr/total_batch/scaling come from what the worker applied, not from what the launcher predicted."""
    from detcore.contract import run_dir
    from detcore.facts import append_fact, parse_fact
    from detcore.engine.scaling import scale_for_world

    store = ExperimentStore(tmp_path / "home")
    me, my_start = current_process()
    cfg = {"optimizer": {"lr": 0.02}, "runner": {"type": "IterBasedRunner", "max_iters": 8},
           "auto_scale_lr": {"enable": True, "base_batch_size": 4}}
    spec = JobSpec(id="0000cafe", name="x", config="/c.yaml", work_dir=str(tmp_path / "w"), cwd="/",
                   scaling=scale_for_world(cfg, 1, 2), run_id="r1")
    store.insert(experiment_from_spec(spec, JobState.RUNNING))
    store.set_backend_job(spec.id, str(me), {"supervisor_start": str(my_start)})
    (tmp_path / "home" / "jobs" / spec.id).mkdir(parents=True)
    write_json_atomic(tmp_path / "home" / "jobs" / spec.id / "status.json", {"state": "running"})
    assert store.get(spec.id).lr == 0.01  # the prediction, until the worker says
    applied = scale_for_world(cfg, 4, 2).to_dict()
    append_fact(run_dir(spec.work_dir, "r1"), parse_fact({"event": "start", "rank": 0, "attempt": 0, "pid": me}))
    append_fact(run_dir(spec.work_dir, "r1"), parse_fact({"event": "scaling", "rank": 0, "scaling": applied}))
    row = refresh(store, [store.get(spec.id)])[0]
    assert (row.lr, row.total_batch) == (0.04, 8)
    assert row.to_json()["scaling"]["base_lr"] == 0.02 and row.to_json()["scaling"]["world_size"] == 4


def test_progress_is_out_of_the_schedule_this_launch_runs(tmp_path):
    """After a resume at another world size the work dir's config.yaml is the earlier launch's (its schedule
    scaled for the old world size) until this launch's trainer writes its own; the row's schedule is read only
    then, so progress never reads "24 of 12"."""
    from detcore.contract import run_dir
    from detcore.facts import append_fact, parse_fact

    store = ExperimentStore(tmp_path / "home")
    me, my_start = current_process()
    work = tmp_path / "w"
    work.mkdir()
    first = JobSpec(id="0000beef", name="x", config="/c.yaml", work_dir=str(work), cwd="/", run_id="r1")
    store.insert(experiment_from_spec(first, JobState.PENDING))
    store.set_backend_job(first.id, str(me), {"supervisor_start": str(my_start)})
    job = tmp_path / "home" / "jobs" / first.id
    job.mkdir(parents=True)
    write_json_atomic(job / "status.json", {"state": "running"})
    (work / "config.yaml").write_text("runner: {type: IterBasedRunner, max_iters: 12}\n")  # world size 2
    append_fact(run_dir(str(work), "r1"), parse_fact({"event": "scaling", "rank": 0, "scaling": {"world_size": 2}}))
    (work / "metrics.jsonl").write_text('{"mode": "train", "iter": 12, "loss": 0.5}\n')
    assert refresh(store, [store.get(first.id)])[0].max_iter == 12
    write_json_atomic(job / "status.json", {"state": "succeeded", "exit_code": 0})
    refresh(store, [store.get(first.id)])
    # resumed at world size 1: the schedule doubles to 24 once this launch's trainer has written its config
    resumed = JobSpec(id=first.id, name="x", config="/c.yaml", work_dir=str(work), cwd="/", run_id="r2")
    store.start_run(first.id, resumed, str(me), {"supervisor_start": str(my_start)})
    write_json_atomic(job / "status.json", {"state": "running"})
    exp = refresh(store, [store.get(first.id)])[0]
    assert exp.max_iter is None  # config.yaml is still the first launch's
    (work / "config.yaml").write_text("runner: {type: IterBasedRunner, max_iters: 24}\n")
    append_fact(run_dir(str(work), "r2"), parse_fact({"event": "scaling", "rank": 0, "scaling": {"world_size": 1}}))
    with open(work / "metrics.jsonl", "a") as f:
        f.write('{"mode": "train", "iter": 24, "loss": 0.4}\n')
    exp = refresh(store, [store.get(first.id)])[0]
    assert (exp.last_iter, exp.max_iter) == (24, 24)
