"""The CPU cores this process may use (torch-free, stdlib only; the launcher imports it too).

``os.cpu_count()`` is the machine's count, not this process's share. What a process may use is
the smallest of

* its CPU affinity (``os.sched_getaffinity(0)``: taskset, a Slurm cgroup cpuset, a launcher's pinning);
* its cgroup CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``):
  a container limited to 1.5 CPUs gets 1 thread, never more threads than it can run at once;
* ``SLURM_CPUS_ON_NODE`` (what Slurm allocated this job on this node).

The parsers are pure functions of the files' text, so they unit-test from recorded contents.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping

CGROUP_ROOT = Path("/sys/fs/cgroup")


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``): CPUs allowed, None when unlimited."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    period = int(parts[1]) if len(parts) > 1 else 100000
    return int(parts[0]) / period if period > 0 else None


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``: CPUs allowed, None when unlimited (-1)."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """``/proc/self/cgroup`` -> (the cgroup v2 path, the v1 path of the ``cpu`` controller)."""
    v2 = v1 = None
    for line in text.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _dirs_up(base: Path, rel: str) -> Iterable[Path]:
    """``base/rel``, its parents up to ``base`` (a quota on any ancestor limits this cgroup too)."""
    here = base / rel.lstrip("/")
    while True:
        yield here
        if here == base or base not in here.parents:
            return
        here = here.parent


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota on this process's cgroup or its ancestors; None when there is none."""
    text = proc_cgroup if proc_cgroup is not None else (_read(Path("/proc/self/cgroup")) or "")
    v2, v1 = parse_proc_cgroup(text)
    limits: list[float] = []
    if v2 is not None:
        for d in _dirs_up(root, v2):
            raw = _read(d / "cpu.max")
            limit = parse_cpu_max(raw) if raw else None
            if limit is not None:
                limits.append(limit)
    if v1 is not None:
        for mount in (root / "cpu,cpuacct", root / "cpu"):
            for d in _dirs_up(mount, v1):
                quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                limit = parse_cfs_quota(quota, period) if quota and period else None
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def affinity() -> list[int]:
    """The CPU ids this process may run on (every CPU where the OS cannot say)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def usable_cpu_ids(cpus: Iterable[int], quota: float | None, environ: Mapping[str, str]) -> list[int]:
    """The first CPUs of ``cpus`` that the quota and ``SLURM_CPUS_ON_NODE`` leave usable (at least one).

    A fractional quota rounds down (1.5 CPUs: one thread at full speed beats two throttled ones).
    """
    ids = sorted(cpus)
    count = len(ids)
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    slurm = environ.get("SLURM_CPUS_ON_NODE", "")
    if slurm.isdigit() and int(slurm) > 0:
        count = min(count, int(slurm))
    return ids[:max(1, count)]


def usable_cores() -> list[int]:
    """The CPU ids this process may use: affinity, cgroup quota and ``SLURM_CPUS_ON_NODE`` together."""
    return usable_cpu_ids(affinity(), cgroup_cpu_limit(), os.environ)


def default_threads(environ: Mapping[str, str], usable: int) -> int | None:
    """Intra-op threads for one worker when nobody chose (None when ``OMP_NUM_THREADS`` is set).

    ``usable`` cores are shared by the ``LOCAL_WORLD_SIZE`` workers torchrun started on this node.
    """
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    local_world = environ.get("LOCAL_WORLD_SIZE", "1")
    workers = int(local_world) if local_world.isdigit() and int(local_world) > 0 else 1
    return max(1, usable // workers)
