"""CPU-core leases with real jobs: two one-worker jobs on this 2-core machine each run on a core
of their own, read back from the kernel (``/proc/PID/status``); a third queues (or fails at once
with --no-wait) until a core is free again, and every ending gives the cores back."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from launcher.resources.leases import LeaseBook
from tests.integration.launcher_cli import PROBE, SHAPES, done, job_processes, launcher, record, tiny, wait_until

# the probe worker, long: it runs until cancelled (the test ends it, never a clock) and, unlike a training run,
# leaves the two cores to the test's own commands; the cores are the point here, not training
LONG = ["--worker-module", PROBE, *tiny(10_000, 1000)]


def cpus_allowed(pid: int) -> set[int]:
    """The CPUs the kernel lets ``pid`` run on (``Cpus_allowed_list``, e.g. ``0-1,3``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            out: set[int] = set()
            for part in line.split(":", 1)[1].strip().split(","):
                lo, _, hi = part.partition("-")
                out.update(range(int(lo), int(hi or lo) + 1))
            return out
    raise AssertionError(f"no Cpus_allowed_list in /proc/{pid}/status")


def rank_processes(exp_id: str) -> list[psutil.Process]:
    """The job's worker processes (its ranks; not the supervisor, torchrun or the shims)."""
    return [p for p in job_processes({exp_id}) if p.cmdline()[1:3] == ["-m", PROBE]]


def running_ranks(home: Path, exp_id: str) -> dict:
    return wait_until(home, exp_id, lambda r: done(r) or (r["state"] == "running" and bool(rank_processes(exp_id))),
                      poll=0.5)


def test_concurrent_jobs_get_disjoint_cores_and_a_third_queues_until_one_frees(home):
    machine = sorted(os.sched_getaffinity(0))
    assert len(machine) == 2, "this test is sized for a 2-core machine (the CI box)"
    a, b = (launcher(home, "submit", SHAPES, "--detach", "--name", n, *LONG).stdout.strip() for n in ("a", "b"))
    for exp_id in (a, b):
        assert running_ranks(home, exp_id)["state"] == "running"
    cores = {e: set().union(*(cpus_allowed(p.pid) for p in rank_processes(e))) for e in (a, b)}
    assert sorted(map(sorted, cores.values())) == [[machine[0]], [machine[1]]], cores  # one core each, disjoint
    torchrun = [p for p in job_processes({a}) if "launcher.backends.local.agent" in " ".join(p.cmdline())]
    assert [cpus_allowed(p.pid) for p in torchrun] == [cores[a]]  # pinned before torchrun started: inherited
    assert "leases: cpu " in launcher(home, "status", a).stdout

    busy = launcher(home, "submit", SHAPES, "--no-wait", *tiny(2), check=False)
    error = [line for line in busy.stderr.splitlines() if "error" in line]
    assert busy.returncode == 2 and len(error) == 1 and error[0].startswith("launcher submit: error: "), busy.stderr
    assert "1 CPU cores but only 0 of 2 are free now" in error[0] and "--oversubscribe" in error[0]

    c = launcher(home, "submit", SHAPES, "--detach", "--name", "c", *LONG).stdout.strip()
    queued = wait_until(home, c, lambda r: r["state"] != "pending", poll=0.5)
    assert queued["state"] == "queued" and "CPU cores" in queued["reason"], queued
    assert not rank_processes(c)

    # a's supervisor is SIGKILLed: once its workers are gone, its core goes to the queued job
    os.kill(int(record(home, a)["backend_job_id"]), signal.SIGKILL)
    assert running_ranks(home, c)["state"] == "running"
    assert set().union(*(cpus_allowed(p.pid) for p in rank_processes(c))) == cores[a]

    for exp_id in (b, c):
        assert f"{exp_id}: cancelled" in launcher(home, "cancel", exp_id).stdout
    assert record(home, a)["state"] == "failed"
    assert not job_processes({a, b, c})
    assert not any(LeaseBook(home).held().values())  # killed, cancelled: every core is free again
