"""GPU (and sweep-slot) leases: the pure choice, the lease file, reclaiming dead keepers, no collisions."""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from launcher.backends.local import LocalBackend, detect_gpus
from launcher.errors import LauncherError
from launcher.resources.leases import GPU_POOL, Lease, LeaseBook, choose_units, marked_experiments
from launcher.resources.locking import blocking_flock
from launcher.resources.procinfo import current_process, process_start

INV = ("0", "1", "2", "3")


def test_choose_units_policy():
    assert choose_units(INV, {}, 2, "a") == ("0", "1")
    held = {"0": Lease("a", 1, 1), "2": Lease("b", 2, 2)}
    assert choose_units(INV, held, 2, "c") == ("1", "3")
    assert choose_units(INV, held, 3, "c") is None
    assert choose_units(INV, held, 1, "a") == ("0",)  # idempotent: a keeps its GPU
    assert choose_units(INV, held, 2, "a") == ("0", "1")
    assert choose_units(INV, held, 0, "c") == ()


def test_fake_inventory_and_cpu_only_error(tmp_path):
    assert detect_gpus({"LAUNCHER_FAKE_GPUS": "3"}) == ("0", "1", "2")
    assert detect_gpus({"LAUNCHER_FAKE_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}) == ()
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}) == ("2", "5")
    with pytest.raises(LauncherError, match="number of fake GPUs"):
        detect_gpus({"LAUNCHER_FAKE_GPUS": "two"})


def test_acquire_release_and_reclaim_dead_keeper(tmp_path):
    book = LeaseBook(tmp_path)
    pid, start = current_process()
    assert book.acquire(GPU_POOL, INV, 3, "job-a", pid, start) == ("0", "1", "2")
    assert book.acquire(GPU_POOL, INV, 2, "job-b", pid, start) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = process_start(dead.pid) or 1
    dead.wait()
    assert book.acquire(GPU_POOL, INV, 1, "job-dead", dead.pid, dead_start) == ("3",)
    # job-dead's keeper is gone: its GPU is reclaimed by the next caller
    assert book.acquire(GPU_POOL, INV, 1, "job-b", pid, start) == ("3",)
    book.release("job-a")
    assert book.acquire(GPU_POOL, INV, 3, "job-c", pid, start) == ("0", "1", "2")
    assert {u: lease.holder for u, lease in book.held()[GPU_POOL].items()} == {"0": "job-c", "1": "job-c", "2": "job-c",
                                                                         "3": "job-b"}


def test_pid_reuse_is_not_liveness(tmp_path):
    book = LeaseBook(tmp_path)
    pid, start = current_process()
    assert book.acquire(GPU_POOL, INV, 4, "old", pid, start + 1) == INV  # same pid, other start tick
    assert book.acquire(GPU_POOL, INV, 4, "new", pid, start) == INV


def _grab(args):
    home, holder, barrier = args
    barrier.wait()
    pid, start = os.getppid(), process_start(os.getppid())  # the test process keeps every lease alive
    return holder, LeaseBook(home).acquire(GPU_POOL, tuple(str(i) for i in range(60)), 1, holder, pid, start)


def test_100_simultaneous_allocations_never_collide(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Manager().Barrier(100)
    with ctx.Pool(100) as pool:
        results = pool.map(_grab, [(str(tmp_path), f"job{i}", barrier) for i in range(100)])
    granted = [units for _, units in results if units is not None]
    assert len(granted) == 60  # 60 GPUs, 100 askers: exactly 60 succeed
    flat = [u for units in granted for u in units]
    assert len(set(flat)) == 60
    held = LeaseBook(tmp_path).held()[GPU_POOL]
    assert sorted(held, key=int) == [str(i) for i in range(60)]
    assert {lease.holder for lease in held.values()} == {h for h, units in results if units is not None}


def test_gpus_on_cpu_only_node_is_one_line_error(tmp_path):
    from launcher.spec import JobSpec, Resources

    spec = JobSpec(id="0123abcd", name="x", config="/c.yaml", work_dir="/w", cwd="/", resources=Resources(nproc=2, gpus=2))
    with pytest.raises(LauncherError, match=r"^asked for 2 GPUs but this node has 0 "):
        LocalBackend(tmp_path, cores=2, gpus=()).dryrun(spec)


def _hold_lock(path, locked, release):
    with blocking_flock(path, 5):
        locked.set()
        release.wait(30)


@contextlib.contextmanager
def lock_held_by_child(path):
    """A forked process holds ``path``'s lock until ``release`` is set (or it is killed)."""
    ctx = mp.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, locked, release))
    holder.start()
    try:
        assert locked.wait(10)
        yield holder, release
    finally:
        if holder.is_alive():  # a killed waiter never acknowledges Event.set(), which would then block
            release.set()
        holder.join(10)


def test_lock_wait_times_out_with_one_line_naming_the_file(tmp_path):
    with lock_held_by_child(tmp_path / "leases.lock"):
        t0 = time.monotonic()
        with pytest.raises(LauncherError, match=r"leases\.lock: another launcher process has held this lock for over 0 s"):
            with blocking_flock(tmp_path / "leases.lock", 0.3):
                pass
        assert 0.25 < time.monotonic() - t0 < 5
        assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # the handler is put back
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_lock_waiter_gets_it_when_the_holder_dies(tmp_path):
    got = threading.Event()

    def waiter():  # a thread: no deadline, it waits in the kernel
        with blocking_flock(tmp_path / "leases.lock", 60):
            got.set()

    with lock_held_by_child(tmp_path / "leases.lock") as (holder, _):
        t = threading.Thread(target=waiter)
        t.start()
        assert not got.wait(0.3)  # still held
        holder.kill()  # SIGKILL: the kernel drops the lock with the holder's descriptor
        holder.join(10)
        t.join(10)
        assert got.is_set()


def test_lock_deadline_keeps_an_outer_timer(tmp_path):
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        with lock_held_by_child(tmp_path / "leases.lock") as (_, release):
            threading.Timer(0.3, release.set).start()
            signal.setitimer(signal.ITIMER_REAL, 5.0)
            with blocking_flock(tmp_path / "leases.lock", 2):  # waits ~0.3 s under its own 2 s deadline
                pass
            remaining, _ = signal.getitimer(signal.ITIMER_REAL)
            assert 3.5 < remaining < 4.9  # the caller's timer runs on, less the time waited
            assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---- issue 19 (8 and 11): a $LAUNCHER_HOME shared by cluster nodes; workers outliving their keeper ----
def _gone_pid() -> tuple[int, int]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(proc.pid) or 1
    proc.wait()
    return proc.pid, start


def test_two_hosts_sharing_one_home_neither_reclaims_nor_blocks_the_other(tmp_path):
    node_a = LeaseBook(tmp_path, host="node-a")
    node_b = LeaseBook(tmp_path, host="node-b")
    a_pid, a_start = _gone_pid()  # node-a's supervisor: a pid that means nothing in this (node-b's) /proc
    assert node_a.acquire(GPU_POOL, INV, 4, "job-a", a_pid, a_start) == INV
    me, my_start = current_process()
    # node-b's GPUs are its own: all four are free there, and node-a's live lease is not reclaimed
    assert node_b.acquire(GPU_POOL, INV, 4, "job-b", me, my_start) == INV
    held_b = node_b.held()
    assert {lease.holder for lease in held_b[GPU_POOL].values()} == {"job-b"}
    assert {lease.holder for lease in held_b["gpu@node-a"].values()} == {"job-a"}
    node_b.release("job-a")  # a cancel on the wrong node frees nothing of node-a
    assert "gpu@node-a" in node_b.held()
    # only node-a judges its own leases: there the keeper is dead, so they are reclaimed
    assert node_a.acquire(GPU_POOL, INV, 2, "job-c", me, my_start) == ("0", "1")
    assert {lease.holder for lease in node_a.held()[GPU_POOL].values()} == {"job-c"}


def test_a_dead_keeper_lease_waits_for_its_experiment_processes_to_leave(tmp_path):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**os.environ, "DETLAUNCH_EXPERIMENT_ID": "job-orphan"})
    try:
        for _ in range(100):  # the child's environment is readable once it has exec'd
            if "job-orphan" in marked_experiments():
                break
            time.sleep(0.05)
        book = LeaseBook(tmp_path)
        pid, start = _gone_pid()  # the supervisor died (SIGKILL); its worker still runs on the GPU
        assert book.acquire(GPU_POOL, INV, 4, "job-orphan", pid, start) == INV
        me, my_start = current_process()
        assert book.acquire(GPU_POOL, INV, 1, "job-next", me, my_start) is None
    finally:
        worker.kill()
        worker.wait()
    assert book.acquire(GPU_POOL, INV, 1, "job-next", me, my_start) == ("0",)


def test_leases_of_an_earlier_release_are_this_hosts(tmp_path):
    import json

    (tmp_path / "leases.json").write_text(json.dumps({"gpu": {"1": {"holder": "old", "pid": os.getpid(),
                                                                    "start": process_start(os.getpid())}}}))
    book = LeaseBook(tmp_path, host="here")
    assert book.acquire(GPU_POOL, INV, 3, "new", *current_process()) == ("0", "2", "3")


def test_cuda_visible_devices_set_by_the_user_or_scheduler_is_the_inventory():
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d"}) == ("GPU-1a2b", "GPU-3c4d")
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == ()  # hidden: no GPU, never nvidia-smi's list
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == ()
