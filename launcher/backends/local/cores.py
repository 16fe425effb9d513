"""How many CPU cores a local job leases, and pinning its processes to them (the policy is pure).

Cores are counted from what the launcher itself may use (:func:`detcore.engine.cores.usable_cores`:
its affinity, cgroup quota and ``SLURM_CPUS_ON_NODE``), never ``os.cpu_count()``.

The default size, when ``--cpus-per-task`` is not given:

* a CPU job: **one core per worker**, Slurm's own default of one CPU per task. It is the only
  default that does not depend on which job asks first: N one-worker jobs submitted together on
  an N-core node all run at once, each on a core of its own, and their total is the node's
  ceiling (a job that grabbed every free core would make the next one queue behind it). A job
  that can use more says so: ``--cpus-per-task K`` (K cores per worker) or more workers.
* a GPU job: the node's cores divided among its GPUs, per leased GPU (a ``--gpus 1`` job on a
  4-GPU, 16-core node gets 4), so one job's data loading never starves another's GPU.

``--oversubscribe`` leases no cores and pins nothing: the job shares every core, with the
threads it would have had before core leases (cores // workers).
"""
from __future__ import annotations

import os
from typing import Sequence

from launcher.errors import LauncherError
from launcher.spec import Resources


def cores_per_worker(res: Resources, node_cores: int, node_gpus: int) -> int:
    """Cores each worker of a job with ``res`` leases on a node with ``node_cores`` usable cores."""
    if res.cpus_per_task is not None:
        return res.cpus_per_task
    if res.gpus:
        return max(1, node_cores // max(1, node_gpus))
    return 1


def core_request(res: Resources, node_cores: int, node_gpus: int) -> int:
    """The cores a job leases in all; LauncherError when the node can never give that many."""
    per = cores_per_worker(res, node_cores, node_gpus)
    want = per * res.nproc
    if want > node_cores:
        how = f"--cpus-per-task {per} x " if res.cpus_per_task is not None else "1 core per worker x "
        raise LauncherError(f"the job needs {want} CPU cores ({how}{res.nproc} workers) but this launcher may use "
                            f"{node_cores} on this node; ask for fewer (--nproc, --cpus-per-task) or pass "
                            f"--oversubscribe to share the cores without a lease")
    return want


def describe_cores(cores: Sequence[str]) -> str:
    """``0-3,6``: core ids as ``Cpus_allowed_list`` writes them."""
    ids = sorted(int(c) for c in cores)
    runs: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        runs.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(runs)


def pin_to(cores: Sequence[str]):
    """A ``preexec_fn`` body: bind the child (and everything it starts) to ``cores``."""
    ids = {int(c) for c in cores}

    def pin() -> None:
        os.sched_setaffinity(0, ids)
    return pin
