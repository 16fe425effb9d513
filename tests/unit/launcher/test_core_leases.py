"""CPU-core leases: the pure sizing policy, all-or-nothing leasing with GPUs, reclaiming, rendering."""
from __future__ import annotations

import subprocess
import sys

import pytest

from launcher.backends.local import LocalBackend, LocalOptions
from launcher.backends.local.cores import core_request, cores_per_worker, describe_cores
from launcher.errors import LauncherError
from launcher.resources.leases import CPU_POOL, GPU_POOL, Lease, LeaseBook, choose_units
from launcher.resources.procinfo import current_process, process_start
from launcher.spec import JobSpec, Resources

CORES = ("0", "1")


def test_default_size_one_core_per_cpu_worker_and_gpus_divide_the_node():
    assert cores_per_worker(Resources(nproc=1), 16, 0) == 1  # N one-worker jobs fit on N cores
    assert core_request(Resources(nproc=3), 16, 0) == 3
    assert cores_per_worker(Resources(nproc=1, gpus=1), 16, 4) == 4  # a --gpus 1 job on a 4-GPU 16-core node
    assert core_request(Resources(nproc=2, gpus=2), 16, 4) == 8
    assert core_request(Resources(nproc=2, gpus=2), 2, 4) == 2  # never below one core per GPU
    assert core_request(Resources(nproc=2, cpus_per_task=3), 16, 0) == 6
    with pytest.raises(LauncherError, match=r"needs 3 CPU cores .* may use 2 on this node.*--oversubscribe"):
        core_request(Resources(nproc=3), 2, 0)


def test_which_cores_two_one_core_jobs_get_disjoint_ones_the_third_waits():
    held: dict[str, Lease] = {}
    for job in ("a", "b"):
        got = choose_units(CORES, held, 1, job)
        held.update({u: Lease(job, 1, 1) for u in got})
    assert {u: lease.holder for u, lease in held.items()} == {"0": "a", "1": "b"}
    assert choose_units(CORES, held, 1, "c") is None
    assert describe_cores(("0", "1", "2", "5", "7", "8")) == "0-2,5,7-8"


def test_gpus_and_cores_are_leased_together_or_not_at_all(tmp_path):
    book = LeaseBook(tmp_path)
    pid, start = current_process()
    assert book.acquire(CPU_POOL, CORES, 2, "cpu-hog", pid, start) == CORES
    both = [(GPU_POOL, ("0", "1"), 1), (CPU_POOL, CORES, 1)]
    assert book.acquire_all(both, "gpu-job", pid, start) is None
    assert GPU_POOL not in book.held()  # the free GPU was not taken while the cores were busy
    book.release("cpu-hog")
    assert book.acquire_all(both, "gpu-job", pid, start) == {GPU_POOL: ("0",), CPU_POOL: ("0",)}
    assert book.held_by("gpu-job") == {GPU_POOL: ("0",), CPU_POOL: ("0",)}


def test_a_dead_keepers_cores_are_reclaimed_like_its_gpus(tmp_path):
    book = LeaseBook(tmp_path, marked=set)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = process_start(dead.pid) or 1
    dead.wait()
    assert book.acquire_all([(GPU_POOL, ("0",), 1), (CPU_POOL, CORES, 2)], "killed", dead.pid, dead_start)
    pid, start = current_process()
    assert book.acquire(CPU_POOL, CORES, 2, "next", pid, start) == CORES  # SIGKILLed keeper: all freed
    assert book.held() == {CPU_POOL: {c: Lease("next", pid, start, book.host) for c in CORES}}


def test_cores_are_keyed_by_host(tmp_path):
    pid, start = current_process()
    assert LeaseBook(tmp_path, host="n1").acquire(CPU_POOL, CORES, 2, "a", pid, start) == CORES
    assert LeaseBook(tmp_path, host="n2").acquire(CPU_POOL, CORES, 2, "b", pid, start) == CORES
    held = LeaseBook(tmp_path, host="n1").held()
    assert set(held) == {CPU_POOL, f"{CPU_POOL}@n2"}


def _spec(**kw) -> JobSpec:
    return JobSpec(id="0123abcd", name="x", config="/c.yaml", work_dir="/w", cwd="/", **kw)


def test_dry_run_shows_the_core_lease_and_threads_match_it(tmp_path):
    backend = LocalBackend(tmp_path, cores=16, gpus=("0", "1", "2", "3"), fake_gpus=False)
    dry = backend.dryrun(_spec(resources=Resources(nproc=1, gpus=1), loader_workers=1))
    assert dict(dry.env)["OMP_NUM_THREADS"] == "3"  # 4 cores for its GPU, one of them for the loader
    assert any("CPU cores: 4 of the 16" in n and "0-15" in n for n in dry.notes)
    dry = backend.dryrun(_spec(resources=Resources(nproc=2, cpus_per_task=3)))
    assert dict(dry.env)["OMP_NUM_THREADS"] == "3" and "CPU cores: 6 of the 16" in dry.render()
    over = backend.dryrun(_spec(resources=Resources(nproc=2), backend_options=LocalOptions(oversubscribe=True)))
    assert dict(over.env)["OMP_NUM_THREADS"] == "8" and "none leased (--oversubscribe)" in over.render()
    assert backend.lease_wants(_spec(backend_options=LocalOptions(oversubscribe=True))) == []
