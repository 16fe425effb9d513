"""Inside a Slurm job: rank environment and port policy (pure), and the checkpoint handshake with a real child."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

from launcher.backends.slurm import task as slurm_task
from launcher.backends.slurm.task import (PORT_BASE, PORT_SPAN, SlurmTask, WorkerFinished, first_node, master_port,
                                          task_env, task_gpu, usr2_disposition)

SLURM_ENV = {"SLURM_JOB_ID": "12345", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2", "SLURM_PROCID": "5",
             "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}


def test_master_port_is_fixed_range_and_distinct_for_concurrent_jobs():
    assert master_port(12345) == 20000 + 12345 % 12000 == 20345
    ports = [master_port(j) for j in range(1_000_000, 1_000_000 + PORT_SPAN)]
    assert len(set(ports)) == PORT_SPAN  # any 12,000 consecutive job ids (array tasks included) get distinct ports
    assert min(ports) == PORT_BASE and max(ports) == PORT_BASE + PORT_SPAN - 1 < 32768  # below the ephemeral range
    assert master_port(7) == master_port(7 + PORT_SPAN)  # the documented bound
    with pytest.raises(ValueError):
        master_port(-1)


CLUSTER_IPS = {"gpu07": "10.0.0.7", "gpu08": "10.0.0.8", "n1": "10.0.1.1", "n2": "10.0.1.2"}


def test_rank_environment_from_slurm_variables():
    env = task_env(SLURM_ENV, gpus_per_node=4, resolve=CLUSTER_IPS.get)
    assert env == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "gpu07",
                   "MASTER_PORT": "20345", "CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    cpu = task_env({**SLURM_ENV, "SLURM_JOB_NODELIST": "n1,n2"}, gpus_per_node=0, resolve=CLUSTER_IPS.get)
    assert cpu["MASTER_ADDR"] == "n1" and cpu["CUDA_VISIBLE_DEVICES"] == ""  # a CPU task sees no GPU
    assert first_node("cpu-a[3,5-6],gpu1") == "cpu-a3"


def test_a_job_on_one_machine_keeps_its_sockets_on_loopback():
    """Multi-node jobs meet at the first node's name (its store binds that address); a job whose nodes are all
    this machine (one node, or names resolving to loopback as on the test cluster) meets on 127.0.0.1, and gloo
    and NCCL use the loopback interface."""
    one_node = task_env({**SLURM_ENV, "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "gpu07"},
                        gpus_per_node=2, resolve=CLUSTER_IPS.get)
    assert one_node["MASTER_ADDR"] == "127.0.0.1" and one_node["GLOO_SOCKET_IFNAME"] == "lo"
    assert one_node["NCCL_SOCKET_IFNAME"] == "lo"
    emulated = task_env({**SLURM_ENV, "SLURM_JOB_NODELIST": "n[1-2]"}, 0, resolve=lambda name: "127.0.0.1")
    assert emulated["MASTER_ADDR"] == "127.0.0.1" and emulated["GLOO_SOCKET_IFNAME"] == "lo"
    debian = task_env({**SLURM_ENV, "SLURM_JOB_NODELIST": "n[1-2]"}, 0,
                      resolve={"n1": "127.0.1.1", "n2": "10.0.1.2"}.get)  # own name on loopback, the other not
    assert debian["MASTER_ADDR"] == "n1" and "GLOO_SOCKET_IFNAME" not in debian
    mine = task_env({**SLURM_ENV, "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "gpu07",
                     "GLOO_SOCKET_IFNAME": "ib0"}, 0, resolve=CLUSTER_IPS.get)
    assert mine["GLOO_SOCKET_IFNAME"] == "ib0"  # the user's own choice is kept


def test_each_task_gets_one_gpu():
    assert task_gpu("4,5,6,7", 2) == "6"  # Slurm lists the node's GPUs to every task
    assert task_gpu("3", 2) == "3"  # a task bound to one GPU keeps it
    assert task_gpu(None, 1) == "1"


def test_the_contract_is_imported_not_copied():
    """Exit codes and environment names live in detcore.contract; no launcher module spells them again."""
    from pathlib import Path

    import launcher

    for path in Path(launcher.__file__).parent.rglob("*.py"):
        text = path.read_text()
        for literal in ('"DETCORE_STOP_SIGNALS"', '"DETLAUNCH_EXPERIMENT_ID"', "EXIT_STOPPED = ", "USER_ERROR = 2"):
            assert literal not in text, f"{path} copies {literal} from detcore.contract"
    assert slurm_task.EXIT_STOPPED == 3


# A stand-in worker: ignores nothing itself, installs a USR2 handler after STARTUP seconds (like detcore after
# loading torch and the config), then "trains" until USR2 and exits 3, or exits 0 after FINISH seconds.
WORKER = """
import signal, sys, time
startup, finish = float(sys.argv[1]), float(sys.argv[2])
time.sleep(startup)
stop = []
signal.signal(signal.SIGUSR2, lambda *a: stop.append(1))
print("handler installed", flush=True)
end = time.time() + finish
while time.time() < end:
    if stop:
        time.sleep(0.3)  # finish the iteration, save a checkpoint
        sys.exit(3)
    time.sleep(0.05)
sys.exit(0)
"""


def start_worker(startup: float, finish: float) -> tuple[SlurmTask, subprocess.Popen]:
    task = SlurmTask("0123abcd", (), "/", {}, "/tmp", stop_timeout_s=20)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(startup), str(finish)], stdout=subprocess.PIPE,
                            text=True, preexec_fn=slurm_task._ignore_usr2)
    task._proc = proc
    return task, proc


def test_worker_checkpoints_and_stops_then_the_job_requeues(tmp_path):
    task, proc = start_worker(startup=0.0, finish=60)
    task.log_dir = str(tmp_path)
    assert proc.stdout.readline() == "handler installed\n"
    assert usr2_disposition(proc.pid) == "caught"
    t0 = time.monotonic()
    delayed = task.checkpoint()  # USR2 to the worker (as Slurm does), then wait for its exit
    assert time.monotonic() - t0 < 10
    assert proc.wait() == 3
    assert isinstance(delayed.function, SlurmTask) and delayed.function is not task
    assert "worker stopped with exit code 3 (stopped after a checkpoint); requeueing" in (tmp_path / "rank0.log").read_text()


def test_rank_0_records_how_long_the_job_had_left_when_usr2_came(tmp_path, monkeypatch):
    """The requeue fact, written before submitit requeues: what tells a time limit from a preemption."""
    from detcore.facts import read_facts

    asked = []
    monkeypatch.setattr(slurm_task, "job_time_left", lambda job: asked.append(job) or 95.0)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    task, proc = start_worker(startup=0.0, finish=60)
    task.log_dir, task.run_dir, task.signal_delay_s = str(tmp_path), str(tmp_path / "run"), 120
    assert proc.stdout.readline() == "handler installed\n"
    task.checkpoint()
    (fact,) = [f.to_json() for f in read_facts(tmp_path / "run")]
    assert asked == ["77"] and proc.wait() == 3
    assert {k: fact[k] for k in ("event", "attempt", "rank", "signal", "time_left_s", "signal_delay_s")} == \
        {"event": "requeue", "attempt": 2, "rank": 0, "signal": "USR2", "time_left_s": 95.0, "signal_delay_s": 120}


def test_signal_during_worker_start_up_is_not_fatal_and_requeues_at_once(tmp_path):
    task, proc = start_worker(startup=30.0, finish=60)
    task.log_dir = str(tmp_path)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGUSR2)  # Slurm's signal while the worker is still importing: ignored, not fatal
    time.sleep(0.2)
    assert proc.poll() is None and usr2_disposition(proc.pid) == "ignored"
    t0 = time.monotonic()
    task.checkpoint()  # it has trained nothing: no waiting for a checkpoint
    assert time.monotonic() - t0 < 3 and proc.wait() == -signal.SIGKILL


def test_a_worker_that_took_usr2_first_and_exited_is_waited_for_not_killed(tmp_path):
    """USR2 reaches the worker and its shim at once; on a loaded node the worker may checkpoint and exit
    before the shim's handler runs. The shim (no child any more, ignoring USR2) is then finishing up:
    its exit code is the worker's, and the job requeues as stopped after a checkpoint."""
    from detcore.facts import append_fact, parse_fact

    task = SlurmTask("0123abcd", (), "/", {}, str(tmp_path), stop_timeout_s=20, run_dir=str(tmp_path / "run"))
    shim = "import sys, time; print(1, flush=True); time.sleep(1.5); sys.exit(3)"  # records the worker's end, exits
    task._proc = subprocess.Popen([sys.executable, "-c", shim], stdout=subprocess.PIPE,
                                  preexec_fn=slurm_task._ignore_usr2)
    task._proc.stdout.readline()
    append_fact(tmp_path / "run", parse_fact({"event": "start", "rank": 0, "attempt": 0, "pid": 1, "shim_pid": task._proc.pid}))
    task.checkpoint()
    assert task._proc.wait() == 3
    assert "worker stopped with exit code 3 (stopped after a checkpoint); requeueing" in \
        (tmp_path / "rank0.log").read_text()


def test_worker_that_already_finished_is_not_requeued(tmp_path):
    task, proc = start_worker(startup=0.0, finish=0.5)
    task.log_dir = str(tmp_path)
    assert proc.stdout.readline() == "handler installed\n"
    time.sleep(1.0)
    with pytest.raises(WorkerFinished):
        task.checkpoint()


def test_a_worker_that_never_stops_is_killed(tmp_path):
    task = SlurmTask("0123abcd", (), "/", {}, str(tmp_path), stop_timeout_s=1.0)
    worker = "import signal, time; signal.signal(signal.SIGUSR2, lambda *a: None); print(1, flush=True); time.sleep(60)"
    task._proc = subprocess.Popen([sys.executable, "-c", worker], stdout=subprocess.PIPE,
                                  preexec_fn=slurm_task._ignore_usr2)
    task._proc.stdout.readline()
    t0 = time.monotonic()
    task.checkpoint()
    assert time.monotonic() - t0 < 5 and task._proc.wait() == -signal.SIGKILL


def test_task_pickles_without_its_process():
    task, proc = start_worker(startup=0.0, finish=0.1)
    copy = pickle.loads(pickle.dumps(task))
    assert copy._proc is None and copy.experiment_id == "0123abcd"
    proc.wait()


def _rank0_task(tmp_path, monkeypatch, events, attempt, worker_code):
    """Rank 0's task after ``events`` were recorded, its worker ending with ``worker_code`` (-N: signal N)."""
    from detcore.facts import append_fact, parse_fact

    log_dir, run_dir = tmp_path / "logs", tmp_path / "runs" / "r1"
    log_dir.mkdir(parents=True)
    for rec in events:
        append_fact(run_dir, parse_fact({"event": "end", **rec}))
    for key, value in {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0",
                       "SLURM_JOB_NODELIST": "n1", "SLURM_RESTART_COUNT": str(attempt)}.items():
        monkeypatch.setenv(key, value)
    body = f"import os, signal; os.kill(os.getpid(), {-worker_code})" if worker_code < 0 else \
        f"raise SystemExit({worker_code})"
    task = SlurmTask("0123abcd", [sys.executable, "-c", body], str(tmp_path), {}, str(log_dir), run_dir=str(run_dir))
    with pytest.raises(slurm_task.WorkerFailed) as failed:
        task()
    return str(failed.value).replace(str(log_dir), "{log_dir}")


@pytest.mark.parametrize("rank1_events, attempt, expected", [
    ([{"rank": 1, "attempt": 0, "exit_code": -9, "time": 10.0}], 0,
     "rank 1 killed by SIGKILL; see {log_dir}/rank1.log (rank 0 then ended with signal SIGTERM)"),
    ([{"rank": 1, "attempt": 0, "exit_code": 1, "detail": "RuntimeError: boom", "time": 10.0}], 0,
     "rank 1: exit code 1: RuntimeError: boom; see {log_dir}/rank1.log (rank 0 then ended with signal SIGTERM)"),
    # rank 1 failed in an earlier attempt only: Slurm itself ended this one
    ([{"rank": 1, "attempt": 0, "exit_code": 1, "detail": "x"}], 1,
     "rank 0: worker failed with signal SIGTERM; see {log_dir}/rank0.log"),
])
def test_rank_0_ended_by_srun_names_the_rank_that_failed(tmp_path, monkeypatch, rank1_events, attempt, expected):
    """srun ends every task of the step when one fails; the job's reason names the one that failed, from the
    end facts the shims recorded (never from a log)."""
    assert _rank0_task(tmp_path, monkeypatch, rank1_events, attempt, -signal.SIGTERM) == expected


def test_rank_0_failing_in_a_collective_after_rank_1_was_killed_names_rank_1(tmp_path, monkeypatch):
    """Rank 1's worker is SIGKILLed; rank 0's worker then fails on its own (gloo lost its peer, exit code 1).
    Both shims recorded their ends; rank 1's came first, so rank 1 is named, not rank 0's later error."""
    events = [{"rank": 1, "attempt": 0, "exit_code": -9, "time": 10.0},
              {"rank": 0, "attempt": 0, "exit_code": 1, "detail": "RuntimeError: Connection closed by peer",
               "time": 10.4}]
    assert _rank0_task(tmp_path, monkeypatch, events, 0, 1) == \
        "rank 1 killed by SIGKILL; see {log_dir}/rank1.log (rank 0 then ended with exit code 1)"
    # rank 0's own error came first: it is named, with its detail
    events[1]["time"] = 9.0
    assert _rank0_task(tmp_path / "b", monkeypatch, events, 0, 1) == \
        "rank 0: exit code 1: RuntimeError: Connection closed by peer; see {log_dir}/rank0.log"


def test_a_user_error_fails_the_job_in_the_shared_policys_words_and_is_never_requeued(tmp_path, monkeypatch):
    """Rank 1 ends with detcore's user error while the attempt also hung: no requeue (no restart can mend a
    bad config), and the reason is the one every backend gives."""
    from detcore.facts import append_fact, parse_fact

    monkeypatch.setattr(slurm_task.subprocess, "run", lambda cmd, **kw: pytest.fail(f"requeued: {cmd}"))
    append_fact(tmp_path / "runs" / "r1", parse_fact({"event": "hang", "attempt": 0, "rank": 1, "state": "stopped",
                                                      "detail": "no rank finished an iteration"}))
    events = [{"rank": 1, "attempt": 0, "exit_code": 2, "detail": "ConfigError: model.neck: bad key", "time": 10.0}]
    assert _rank0_task(tmp_path, monkeypatch, events, 0, -signal.SIGTERM) == (
        "rank 1: exit code 2 (user error): ConfigError: model.neck: bad key (a user error: the run was stopped, "
        "not restarted); see {log_dir}/rank1.log")
