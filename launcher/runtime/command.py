"""The worker command line and its environment, the same for every backend (pure)."""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Mapping

from detcore import contract
from launcher.spec import JobSpec

REPO_ROOT = str(Path(__file__).resolve().parents[2])


def worker_args(spec: JobSpec, device: str | None = None) -> tuple[str, ...]:
    """The worker contract's arguments (after ``python -m detcore.tools.cli``) for ``spec``:
    ``spec.worker.to_argv()`` (:class:`detcore.contract.WorkerArgs`) with the device made explicit.

    The device is always explicit: ``cuda`` (the rank's leased GPU) for a GPU job, else ``cpu`` (a CPU
    job never lands on a GPU no lease covers; a GPU job without usable CUDA fails with one line).
    ``device`` overrides the choice (Ray's ``--gpus-per-worker``).
    """
    device = device or ("cuda" if spec.resources.gpus else "cpu")
    return dataclasses.replace(spec.worker, device=device).to_argv()


def worker_command(spec: JobSpec, python: str = sys.executable) -> tuple[str, ...]:
    """``python -m detcore.tools.cli ...``: the plain worker command line."""
    return (python, "-m", spec.worker_module, *worker_args(spec))


def log_dir(spec: JobSpec) -> str:
    return os.path.join(spec.work_dir, contract.LOGS_DIR)


def run_dir(spec: JobSpec) -> str:
    """``WORK_DIR/runs/<run id>``: where this launch's ranks append their facts."""
    return str(contract.run_dir(spec.work_dir, spec.run_id or "default"))


def shim_command(spec: JobSpec, python: str | None = None, device: str | None = None) -> tuple[str, ...]:
    """The worker behind :mod:`launcher.runtime.shim` (rank log, start/end facts, hang watchdog, resume on restart).

    With ``python=None`` the result starts at ``-m`` (for ``torchrun -m`` style launchers that add
    the interpreter themselves, drop the leading ``-m`` too).
    """
    head: list[str] = [python] if python else []
    head += ["-m", "launcher.runtime.shim", "--log-dir", log_dir(spec), "--run-dir", run_dir(spec)]
    if spec.hang_timeout_s:
        head += ["--hang-timeout", f"{spec.hang_timeout_s:g}"]
    return (*head, "--", spec.worker_module, *worker_args(spec, device))


def cpus_per_worker(spec: JobSpec) -> int:
    """CPUs each worker asks for: ``--cpus-per-task`` when given, else the worker itself plus its DataLoader
    processes (``data.workers_per_gpu``); one CPU would starve the loaders of a GPU job."""
    r = spec.resources
    return r.cpus_per_task if r.cpus_per_task is not None else 1 + spec.loader_workers


def thread_env(cores: int, workers_on_node: int, loader_workers: int = 0) -> dict[str, str]:
    """Intra-op threads per worker so ``workers_on_node`` workers share ``cores`` without oversubscribing.

    ``loader_workers``: DataLoader processes per worker that need a core each (GPU jobs, where
    the loaders are busy and the trainer's own CPU work is small); they come off each share.
    """
    threads = str(max(1, cores // max(1, workers_on_node) - loader_workers))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def import_path_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``PYTHONPATH`` with the checkout holding ``launcher`` and ``detcore`` first (no-op when installed)."""
    parts = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if REPO_ROOT in parts:
        return {"PYTHONPATH": os.pathsep.join(parts)}
    return {"PYTHONPATH": os.pathsep.join([REPO_ROOT, *parts])}
