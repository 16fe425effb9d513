"""The cores a detcore process may use: cgroup quota files (recorded contents), affinity, Slurm."""
from __future__ import annotations

import os

import torch

from detcore.engine.cores import (cgroup_cpu_limit, default_threads, parse_cfs_quota, parse_cpu_max,
                                  parse_proc_cgroup, usable_cores, usable_cpu_ids)


def test_cgroup_v2_cpu_max_and_v1_cfs_quota_parse():
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("200000 100000\n") == 2.0
    assert parse_cpu_max("150000 100000") == 1.5
    assert parse_cfs_quota("-1\n", "100000\n") is None
    assert parse_cfs_quota("50000\n", "100000\n") == 0.5
    assert parse_proc_cgroup("0::/user.slice/job.scope\n") == ("/user.slice/job.scope", None)
    v1 = "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n"
    assert parse_proc_cgroup(v1) == (None, "/docker/abc")


def test_cgroup_limit_is_the_tightest_on_the_path_up(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "a" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "a" / "b" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/a/b\n") == 3.0  # the parent's quota binds the child
    assert cgroup_cpu_limit(tmp_path, "0::/\n") is None
    v1 = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path, "4:cpu,cpuacct:/docker/abc\n") == 1.0


def test_usable_cpu_ids_take_the_smallest_of_affinity_quota_and_slurm():
    assert usable_cpu_ids([3, 1, 2, 0], None, {}) == [0, 1, 2, 3]
    assert usable_cpu_ids([4, 5, 6, 7], 2.5, {}) == [4, 5]  # a fractional quota rounds down
    assert usable_cpu_ids([0, 1], 0.5, {}) == [0]  # never below one
    assert usable_cpu_ids(range(16), None, {"SLURM_CPUS_ON_NODE": "6"}) == list(range(6))
    assert usable_cpu_ids(range(4), 8.0, {"SLURM_CPUS_ON_NODE": "junk"}) == [0, 1, 2, 3]


def test_this_process_affinity_is_respected():
    mine = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, {mine[0]})
        assert usable_cores() == [mine[0]]  # not os.cpu_count()
    finally:
        os.sched_setaffinity(0, set(mine))


def test_default_threads_share_usable_cores_among_local_workers(monkeypatch):
    assert default_threads({}, 8) == 8
    assert default_threads({"LOCAL_WORLD_SIZE": "4"}, 8) == 2
    assert default_threads({"LOCAL_WORLD_SIZE": "4"}, 2) == 1
    assert default_threads({"OMP_NUM_THREADS": "3"}, 8) is None  # the user's choice stands
    from detcore.engine.dist import set_default_threads

    before = torch.get_num_threads()
    mine = sorted(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    try:
        os.sched_setaffinity(0, {mine[0]})
        set_default_threads()
        assert torch.get_num_threads() == 1  # what standalone `detcore train` runs with under taskset -c 0
    finally:
        os.sched_setaffinity(0, set(mine))
        torch.set_num_threads(before)
