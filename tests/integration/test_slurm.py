"""The Slurm backend against a real Slurm 22.05 cluster (two emulated nodes): the launcher CLI, submitit, sbatch,
srun, requeue, sacct, and detcore's trainer with gloo DDP.

Every launcher command runs in its own process, after the submitting one has exited: status, logs and
cancel work from the store and Slurm alone. LAUNCHER_HOME and the work dirs contain spaces, quotes and
``$`` so the sbatch script's quoting is exercised for real.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.backends.slurm.task import master_port
from tests.integration.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHAPES = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")
# 2 images per worker: 2 workers make the config's base batch of 4 (no schedule scaling); tiny data and eval.
DATA = ["data.samples_per_gpu=2", "data.workers_per_gpu=0", "data.train.num_train=40", "data.train.num_val=8",
        "data.val.num_train=40", "data.val.num_val=8", "log_config.interval=1", "evaluation.interval=1000"]


def tiny(iters: int, ckpt_every: int = 1000, *extra: str) -> list[str]:
    return ["--cfg-options", f"runner.max_iters={iters}", f"checkpoint_config.interval={ckpt_every}", *DATA, *extra]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "launcher home's $x"


def launcher(cluster: SlurmCluster, home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**cluster.env, "LAUNCHER_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "launcher", *args], cwd=home.parent, env=env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"launcher {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def submit(cluster: SlurmCluster, home: Path, *args: str) -> str:
    out = launcher(cluster, home, "submit", SHAPES, "--backend", "slurm", "--detach", *args).stdout.split()
    assert len(out) == 1 and re.fullmatch(r"[0-9a-f]{8}", out[0]), out
    return out[0]


def record(cluster: SlurmCluster, home: Path, exp_id: str) -> dict:
    return json.loads(launcher(cluster, home, "status", exp_id, "--json").stdout)


def wait_for(cluster, home, exp_id, predicate, timeout: float = 300, what: str = "a state") -> dict:
    """Poll ``launcher status`` (a new process each time) until ``predicate``; fail on timeout or another end."""
    deadline = time.monotonic() + timeout
    while True:
        rec = record(cluster, home, exp_id)
        if predicate(rec):
            return rec
        if time.monotonic() > deadline or done(rec):
            log = Path(rec["work_dir"]) / "logs" / "rank0.log"
            tail = log.read_text()[-3000:] if log.exists() else "(no rank 0 log)"
            raise AssertionError(f"{exp_id}: waiting for {what}, got {rec['state']} ({rec['reason']})"
                                 f"\n{tail}")
        time.sleep(1.0)


def done(rec: dict) -> bool:
    return rec["state"] in ("succeeded", "failed", "cancelled")


def train_iters(work_dir: Path) -> list[int]:
    return [json.loads(line)["iter"] for line in (work_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line)["mode"] == "train"]


def wait_iters(work_dir: Path, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not (work_dir / "metrics.jsonl").exists() or len(train_iters(work_dir)) < n:
        assert time.monotonic() < deadline, f"no {n} training iterations in {work_dir} after {timeout} s"
        time.sleep(0.3)


def launcher_lines(work_dir: Path, rank: int) -> list[str]:
    return [line for line in (work_dir / "logs" / f"rank{rank}.log").read_text().splitlines() if "[launcher]" in line]


def test_ddp_job_on_one_node_managed_from_new_processes(slurm_cluster, home, tmp_path):
    work = tmp_path / "work dir's one"
    exp = submit(slurm_cluster, home, "--nproc", "2", "--time", "15", "--work-dir", str(work), *tiny(12, 6))
    rec = wait_for(slurm_cluster, home, exp, done, what="the end")
    assert rec["state"] == "succeeded", rec["reason"]
    job = rec["backend_job_id"]
    port = master_port(int(job))
    assert (rec["world_size"], rec["restarts"], rec["last_iter"], rec["ports"]) == (2, 0, 12, [port])
    assert sorted(set(train_iters(work))) == list(range(1, 13))
    for rank in (0, 1):
        lines = launcher_lines(work, rank)
        assert f"slurm job {job} attempt 0 on n1: rank {rank}/2 MASTER_ADDR=127.0.0.1 MASTER_PORT={port}" in lines[0]
        assert lines[-1].endswith("worker finished")
    rank0 = (work / "logs" / "rank0.log").read_text()
    assert f"backend=gloo rank=0 world=2 master=127.0.0.1:{port}" in rank0  # one machine: loopback
    # logs per rank through the CLI, from a process that never saw the job being submitted
    out = launcher(slurm_cluster, home, "logs", exp, "--rank", "1").stdout
    assert "rank 1/2" in out and "worker finished" in out
    listed = json.loads(launcher(slurm_cluster, home, "list", "--json").stdout)
    assert [(r["id"], r["state"], r["backend"]) for r in listed] == [(exp, "succeeded", "slurm")]
    assert slurm_cluster.state(job) == ""


def test_ddp_job_across_two_nodes(slurm_cluster, home, tmp_path):
    work = tmp_path / "two nodes"
    exp = submit(slurm_cluster, home, "--nodes", "2", "--tasks-per-node", "1", "--time", "15", "--work-dir",
                 str(work), *tiny(8))
    rec = wait_for(slurm_cluster, home, exp, done, what="the end")
    assert rec["state"] == "succeeded", rec["reason"]
    port = master_port(int(rec["backend_job_id"]))
    # n1 and n2 are both this machine (they resolve to 127.0.0.1), so the ranks meet on loopback
    assert launcher_lines(work, 0)[0].endswith(f"on n1: rank 0/2 MASTER_ADDR=127.0.0.1 MASTER_PORT={port}")
    assert launcher_lines(work, 1)[0].endswith(f"on n2: rank 1/2 MASTER_ADDR=127.0.0.1 MASTER_PORT={port}")
    assert sorted(set(train_iters(work))) == list(range(1, 9)) and rec["last_iter"] == 8


def assert_resumed_to_the_end(work: Path, rec: dict, iters: int) -> int:
    """The run was stopped once mid-way, resumed from its checkpoint and trained exactly to ``iters``."""
    assert rec["state"] == "succeeded", rec["reason"]
    assert rec["restarts"] == 1 and rec["last_iter"] == iters
    logged = train_iters(work)
    assert sorted(set(logged)) == list(range(1, iters + 1))
    rank0 = (work / "logs" / "rank0.log").read_text()
    stopped = int(re.search(r"stopped on request at iteration (\d+)", rank0).group(1))
    assert f"resumed from {work}/iter_{stopped}.pth at iteration {stopped}" in rank0
    assert 3 <= stopped < iters
    assert logged.count(stopped + 1) == 1  # nothing after the checkpoint was trained twice
    notes = launcher_lines(work, 0)
    assert "attempt 0" in notes[0] and any("attempt 1" in n for n in notes), notes
    assert any("worker stopped with exit code 3 (stopped after a checkpoint); requeueing" in n for n in notes), notes
    return stopped


def test_preemption_signal_checkpoints_requeues_and_resumes(slurm_cluster, home, tmp_path):
    work = tmp_path / "preempted"
    iters = 20
    exp = submit(slurm_cluster, home, "--nproc", "2", "--time", "15", "--work-dir", str(work), *tiny(iters))
    job = wait_for(slurm_cluster, home, exp, lambda r: r["state"] == "running", what="running")["backend_job_id"]
    wait_iters(work, 3)
    slurm_cluster.run("scancel", "--signal=USR2", job)  # what Slurm sends a preempted job
    rec = wait_for(slurm_cluster, home, exp, lambda r: r["state"] == "preempted", timeout=60, what="preempted")
    assert rec["restarts"] == 1 and rec["reason"].startswith("requeued after a preemption signal (USR2 with "), rec
    slurm_cluster.release(job)
    rec = wait_for(slurm_cluster, home, exp, done, what="the end")
    assert_resumed_to_the_end(work, rec, iters)
    assert rec["reason"].startswith("finished after 1 requeue(s), the last after a preemption signal"), rec["reason"]


def worker_processes(exp_id: str) -> list[psutil.Process]:
    """The detcore workers of the job (``python -m detcore.tools.cli``, each the child of its shim)."""
    found = []
    for proc in psutil.process_iter(["environ", "cmdline"]):
        env, cmd = proc.info["environ"] or {}, proc.info["cmdline"] or []
        if env.get("DETLAUNCH_EXPERIMENT_ID") == exp_id and cmd[1:3] == ["-m", "detcore.tools.cli"]:
            found.append(proc)
    return found


def test_time_limit_signal_checkpoints_requeues_and_resumes(slurm_cluster, home, tmp_path):
    """Slurm itself sends USR2 ``--signal-delay`` seconds before the time limit; the test sends no signal.

    To keep the test short the running job's limit is lowered so that it ends 40-100 s from now:
    slurmctld checks limits every 30 s and signals at the first check that is less than
    delay + 30 s before the end, which is then at least 10 s before the kill. The workers are
    paused (SIGSTOP) until that check has signalled the job, so that a fast machine cannot finish
    the run first; they then take the signal, checkpoint and stop.
    """
    work = tmp_path / "time limit"
    iters = 24
    exp = submit(slurm_cluster, home, "--nproc", "2", "--time", "12", "--signal-delay", "90", "--work-dir",
                 str(work), *tiny(iters))
    job = wait_for(slurm_cluster, home, exp, lambda r: r["state"] == "running", what="running")["backend_job_id"]
    wait_iters(work, 3)
    workers = worker_processes(exp)
    assert len(workers) == 2
    for proc in workers:
        proc.suspend()
    elapsed = time.time() - slurm_cluster.start_time(job)
    slurm_cluster.run("scontrol", "update", f"JobId={job}", f"TimeLimit={math.ceil((elapsed + 40) / 60)}")
    submitit_log = home / "slurm" / exp / f"{job}_0_log.err"
    deadline = time.monotonic() + 90
    while "Caught signal SIGUSR2" not in submitit_log.read_text():
        assert time.monotonic() < deadline, "Slurm sent no USR2 before the lowered time limit"
        time.sleep(0.2)
    for proc in workers:
        proc.resume()
    rec = wait_for(slurm_cluster, home, exp, lambda r: r["state"] == "preempted", timeout=60, what="requeued")
    assert rec["restarts"] == 1 and rec["reason"].startswith("requeued after the time limit (USR2 with "), rec
    slurm_cluster.release(job, TimeLimit="12")  # the requeued run gets the job's full limit again
    rec = wait_for(slurm_cluster, home, exp, done, what="the end")
    assert_resumed_to_the_end(work, rec, iters)


def test_cancel_is_idempotent_and_resume_continues(slurm_cluster, home, tmp_path):
    work = tmp_path / "cancelled"
    iters = 60  # long enough that `launcher cancel` (a fresh process) lands before the end on a fast machine
    exp = submit(slurm_cluster, home, "--nproc", "2", "--time", "15", "--work-dir", str(work), *tiny(iters, 4))
    job = wait_for(slurm_cluster, home, exp, lambda r: r["state"] == "running", what="running")["backend_job_id"]
    wait_iters(work, 5)
    out = launcher(slurm_cluster, home, "cancel", exp).stdout
    assert out.strip() == f"{exp}: cancelled"
    assert record(slurm_cluster, home, exp)["state"] == "cancelled"
    assert slurm_cluster.state(job) in ("", "CANCELLED", "COMPLETING")
    assert launcher(slurm_cluster, home, "cancel", exp).stdout.strip() == f"{exp}: already cancelled"
    deadline = time.monotonic() + 30
    while True:  # Slurm kills every process of the job (KillWait 5 s)
        left = [p for p in psutil.process_iter(["environ"]) if (p.info["environ"] or {}).get("SLURM_JOB_ID") == job]
        if not left:
            break
        assert time.monotonic() < deadline, f"processes of cancelled job {job} still alive: {left}"
        time.sleep(0.5)
    saved = int((work / "last_checkpoint").read_text().strip().removeprefix("iter_").removesuffix(".pth"))
    assert 4 <= saved < iters
    # the same experiment, a new Slurm job, from its newest checkpoint to the end
    launcher(slurm_cluster, home, "resume", exp, "--detach")
    rec = wait_for(slurm_cluster, home, exp, done, what="the resumed run's end")
    assert rec["state"] == "succeeded" and rec["backend_job_id"] != job and rec["last_iter"] == iters, rec["reason"]
    assert sorted(set(train_iters(work))) == list(range(1, iters + 1))
    assert f"resumed from {work}/iter_{saved}.pth at iteration {saved}" in (work / "logs" / "rank0.log").read_text()
    assert (home / "slurm" / f"{exp}.{job}" / "submission.sh").is_file()  # the first run's folder is kept


def test_sweep_is_one_job_array_with_its_own_work_dirs_and_ports(slurm_cluster, home, tmp_path):
    root = tmp_path / "sweep dir"
    out = launcher(slurm_cluster, home, "sweep", SHAPES, "--backend", "slurm", "--detach", "--nproc", "1",
                   "--time", "15", "--array-parallelism", "3", "--work-dir", str(root),
                   "--grid", "optimizer.lr=0.01,0.02,0.04", *tiny(4, 1000, "auto_scale_lr.enable=false")).stdout
    ids = [line.split()[0] for line in out.splitlines()]
    assert len(ids) == 3
    recs = [wait_for(slurm_cluster, home, i, done, what="the end") for i in ids]
    assert [r["state"] for r in recs] == ["succeeded"] * 3, [r["reason"] for r in recs]
    (array,) = {r["backend_job_id"].split("_")[0] for r in recs}  # one array job
    assert [r["backend_job_id"] for r in recs] == [f"{array}_{i}" for i in range(3)]
    ports = [r["ports"][0] for r in recs]
    assert len(set(ports)) == 3
    for rec, port, lr in zip(recs, ports, ("0.01", "0.02", "0.04")):
        work = Path(rec["work_dir"])
        assert work.parent == root and work.name.endswith(f"lr={lr}")
        assert launcher_lines(work, 0)[0].endswith(f"MASTER_PORT={port}")
        assert train_iters(work) == [1, 2, 3, 4]
    assert len(list((home / "slurm").iterdir())) == 1  # one job folder, one sbatch


@pytest.mark.parametrize("args, message", [
    (["--mem-gb", "900"], "sbatch refused the job: Memory specification can not be satisfied"),
    (["--gpus", "1"], "sbatch refused the job: Invalid generic resource (gres) specification"),
    (["--partition", "nope"], "sbatch refused the job: invalid partition specified: nope"),
    (["--slurm-option", "no-such-option=1"], "sbatch refused the job: unrecognized option '--no-such-option=1'"),
])
def test_impossible_requests_fail_in_one_line_and_leave_nothing(slurm_cluster, home, tmp_path, args, message):
    proc = launcher(slurm_cluster, home, "submit", SHAPES, "--backend", "slurm", "--detach", "--work-dir",
                    str(tmp_path / "never"), *args, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()  # (a scaling note may come first)
    errors = [line for line in lines if line.startswith("launcher submit: error:")]
    assert errors == lines[-1:] and errors[0].startswith(f"launcher submit: error: {message}"), proc.stderr
    assert json.loads(launcher(slurm_cluster, home, "list", "--json").stdout) == []
    assert not (home / "slurm").exists() or not list((home / "slurm").iterdir())
    assert not (tmp_path / "never").exists()


def test_a_local_experiment_resumed_on_slurm_finishes_there(slurm_cluster, home, tmp_path):
    """`launcher resume ID --backend slurm`: the same experiment, work dir and store row continue on Slurm at
    another world size; the local launch stays in its history and the scaling is recomputed once."""
    work = tmp_path / "moved"
    iters = 40
    exp = launcher(slurm_cluster, home, "submit", SHAPES, "--nproc", "1", "--detach", "--work-dir", str(work),
                   *tiny(iters, 4)).stdout.strip()
    deadline = time.monotonic() + 240  # 1 worker: the schedule (checkpoints every 4 -> 8) is scaled x2
    while not (work / "last_checkpoint").exists():
        assert time.monotonic() < deadline, f"no checkpoint in {work}"
        time.sleep(0.3)
    assert launcher(slurm_cluster, home, "cancel", exp).stdout.strip() == f"{exp}: cancelled"
    saved = int((work / "last_checkpoint").read_text().strip().removeprefix("iter_").removesuffix(".pth"))
    out = launcher(slurm_cluster, home, "resume", exp, "--backend", "slurm", "--nproc", "2", "--time", "15",
                   "--detach")
    assert "on the slurm backend (was local)" in out.stderr and "world size changed 1 -> 2" in out.stderr
    rec = wait_for(slurm_cluster, home, exp, done, what="the end on Slurm")
    assert rec["state"] == "succeeded" and rec["backend"] == "slurm" and rec["world_size"] == 2, rec["reason"]
    assert [(h["backend"], h["state"]) for h in rec["history"]] == [("local", "cancelled")]
    rank0 = (work / "logs" / "rank0.log").read_text()
    # the same images seen: iteration 8 of 1 worker is iteration 4 of 2 (the scaled schedule, recomputed once)
    assert f"resumed from {work}/iter_{saved}.pth at iteration {saved // 2}" in rank0
    assert any("rank 1/2" in line for line in launcher_lines(work, 1))
    assert rec["last_iter"] is not None and (work / "last_checkpoint").exists()


def test_a_hung_rank_is_named_and_the_job_requeued_from_its_checkpoint(slurm_cluster, home, tmp_path):
    """A worker stopped with SIGSTOP: the shims' watchdog records the hang (rank 1 stopped), rank 0 requeues
    the job (within --max-restarts) and the requeued run resumes from the newest checkpoint to the end."""
    work = tmp_path / "hung"
    iters = 30
    exp = submit(slurm_cluster, home, "--nproc", "2", "--time", "15", "--hang-timeout", "12", "--max-restarts", "1",
                 "--work-dir", str(work), *tiny(iters, 4))
    job = wait_for(slurm_cluster, home, exp, lambda r: r["state"] == "running", what="running")["backend_job_id"]
    while not (work / "last_checkpoint").exists():
        time.sleep(0.3)
    (victim,) = [p for p in worker_processes(exp) if p.environ().get("RANK") == "1"]
    victim.suspend()
    rec = wait_for(slurm_cluster, home, exp, lambda r: r["restarts"] >= 1 or r["state"] == "preempted", timeout=120,
                   what="the requeue after the hang")
    slurm_cluster.release(job)
    rec = wait_for(slurm_cluster, home, exp, done, what="the end")
    assert rec["state"] == "succeeded" and rec["restarts"] == 1, rec["reason"]
    assert rec["reason"] == "finished after 1 requeue(s), the last after a hang (rank 1 is stopped)"
    assert sorted(set(train_iters(work))) == list(range(1, iters + 1))
    events = [json.loads(x) for x in open(work / "runs" / rec["run_id"] / "events.jsonl")]
    assert {(e["rank"], e["state"]) for e in events if e["event"] == "hang"} >= {(1, "stopped")}
    assert [e["cause"] for e in events if e["event"] == "requeue"] == ["hang"]  # rank 0 said why it requeued
    assert any("requeueing job" in n for n in launcher_lines(work, 0))


def test_a_killed_rank_1_is_named_as_rank_1(slurm_cluster, home, tmp_path):
    """SIGKILL of rank 1's detcore worker: rank 0's worker then fails on its own (gloo lost its peer, exit code 1)
    and its task ends the job, but the rank that ended first is named, from the ranks' end facts."""
    work = tmp_path / "killed rank"
    exp = submit(slurm_cluster, home, "--nproc", "2", "--time", "15", "--work-dir", str(work), *tiny(300))
    wait_for(slurm_cluster, home, exp, lambda r: r["state"] == "running", what="running")
    wait_iters(work, 2)
    (victim,) = [p for p in worker_processes(exp) if p.environ().get("RANK") == "1"]
    victim.kill()
    rec = wait_for(slurm_cluster, home, exp, done, timeout=180, what="the end")
    assert rec["state"] == "failed", rec
    assert rec["reason"].startswith(f"Slurm job {rec['backend_job_id']} failed") and \
        rec["reason"].endswith(": rank 1 killed by SIGKILL"), rec["reason"]
    assert any("after rank 1 killed by SIGKILL" in line for line in launcher_lines(work, 0)), launcher_lines(work, 0)
