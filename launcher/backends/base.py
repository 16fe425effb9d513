"""The one interface every backend implements, and the pieces they share.

A backend is a small object with six methods (TorchX's scheduler API is the model):

``dryrun(spec) -> DryRun``
    Pure: render exactly what would run (command lines, environment, files such as an sbatch
    script, resources, scaling). No cluster calls, no processes, no files written. It may raise
    :class:`~launcher.errors.LauncherError` for a request the backend can never meet.
``submit(spec) -> JobHandle``
    Dry run, then execute. Must not return before the job is durably handed over (a
    supervisor started, an sbatch accepted). May raise LauncherError (nothing is left behind:
    the caller deletes the experiment row and the work dir it created).
``status(handle) -> JobStatus``
    The backend's view right now (squeue/sacct, Ray job status, local pid and status files).
    Called by :mod:`launcher.reconcile` whenever a non-terminal row is read.
``logs(handle, rank=0, follow=False) -> Iterator[str]``
    Lines of one rank's stdout/stderr; with ``follow``, keeps yielding until the job ends.
``cancel(handle) -> None``
    Idempotent; stops every process of the job and frees what it held.
``list() -> list[JobHandle]``
    The jobs the backend itself knows about (for finding orphans).

Optional, for sweeps: ``dryrun_array(specs) -> DryRun`` and ``submit_array(specs) ->
list[JobHandle]`` (one handle per spec, in order) submit a whole sweep as one array job;
without them ``launcher sweep`` submits the specs one by one.

A backend *module* (``launcher/backends/<name>.py``) exposes, besides its backend class:

``Options``
    A frozen dataclass of its own options (or None), stored in ``JobSpec.backend_options``.
``add_arguments(group: argparse._ArgumentGroup) -> None``
    Its ``submit``/``sweep`` options, each prefixed with the backend's name
    (``--slurm-partition``) or otherwise unique. Keep module-level imports light: the CLI
    imports every backend module to build ``submit --help``.
``options_from_args(args: argparse.Namespace) -> Options | None``
``resources_from_args(args, resources: Resources) -> Resources`` (optional)
    Adjust the generic resources (``--nproc --gpus --nodes --cpus-per-task --mem-gb --time``,
    which backends must not redefine) from the backend's own options.
``create(home: pathlib.Path) -> Backend``

Shared helpers for all backends: :func:`worker_args`, :func:`worker_command`,
:func:`shim_command`, :func:`thread_env`, :func:`import_path_env`; the scaling rule is
:func:`launcher.scaling.scale_for_world` (already applied in ``spec.scaling``); store updates
go through :func:`mirror_to_store` (a job's own process copying its status file and metrics)
or, for backends that only answer ``status``, through :func:`launcher.reconcile.refresh`.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Protocol, runtime_checkable

from launcher.scaling import ScaledSchedule
from launcher.spec import JobHandle, JobSpec, JobState, JobStatus, Mode, Resources

if TYPE_CHECKING:
    from launcher.store import ExperimentStore

logger = logging.getLogger(__name__)

REPO_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class DryRun:
    """What a submit would do, as a value. ``render()`` is what ``--dry-run`` prints."""

    backend: str
    commands: tuple[tuple[str, ...], ...]
    env: tuple[tuple[str, str], ...]
    resources: Resources
    world_size: int
    scaling: ScaledSchedule | None
    work_dir: str
    cwd: str
    files: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = field(default=())

    def render(self) -> str:
        lines = [f"backend: {self.backend}", f"work dir: {self.work_dir}", f"cwd: {self.cwd}",
                 f"resources: {_resources_text(self.resources)} (world size {self.world_size})"]
        if self.scaling is not None:
            lines.append(f"scaling: {self.scaling.describe()}")
            if self.scaling.lr is not None:
                lines.append(f"scaled lr: {self.scaling.lr:g}")
        lines.append("environment:")
        lines += [f"  {k}={shlex.quote(v)}" for k, v in self.env]
        for i, cmd in enumerate(self.commands):
            lines.append("command:" if len(self.commands) == 1 else f"command {i + 1}:")
            lines.append("  " + shlex.join(cmd))
        for name, text in self.files:
            lines.append(f"file {name}:")
            lines += ["  " + line for line in text.splitlines()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"backend": self.backend, "commands": [list(c) for c in self.commands], "env": dict(self.env),
                "resources": _resources_dict(self.resources), "world_size": self.world_size,
                "scaling": self.scaling.to_dict() if self.scaling else None,
                "lr": self.scaling.lr if self.scaling else None, "work_dir": self.work_dir, "cwd": self.cwd,
                "files": dict(self.files), "notes": list(self.notes)}


def _resources_dict(r: Resources) -> dict:
    return {k: getattr(r, k) for k in ("nproc", "gpus", "nodes", "cpus_per_task", "mem_gb", "time_min")}


def _resources_text(r: Resources) -> str:
    return " ".join(f"{k}={v}" for k, v in _resources_dict(r).items() if v is not None)


@runtime_checkable
class Backend(Protocol):
    name: str

    def dryrun(self, spec: JobSpec) -> DryRun: ...

    def submit(self, spec: JobSpec) -> JobHandle: ...

    def status(self, handle: JobHandle) -> JobStatus: ...

    def logs(self, handle: JobHandle, rank: int = 0, follow: bool = False) -> Iterator[str]: ...

    def cancel(self, handle: JobHandle) -> None: ...

    def list(self) -> list[JobHandle]: ...


# ---- shared rendering helpers ------------------------------------------------------------

def worker_args(spec: JobSpec, device: str | None = None) -> tuple[str, ...]:
    """The worker contract's arguments (after ``python -m detcore.tools.cli``) for ``spec``.

    ``train CONFIG --work-dir D --device cuda|cpu [--resume auto|PATH] [--seed N] [--amp]
    [--deterministic] [--cfg-options USER... SCALING...]`` or ``test CONFIG CHECKPOINT --work-dir D
    --out D/results.json --device cuda|cpu [--eval M...] [--cfg-options ...]``. The device is
    always explicit: ``cuda`` (the rank's leased GPU) for a GPU job, else ``cpu`` (a CPU job never
    lands on a GPU no lease covers; a GPU job without usable CUDA fails with one line). ``device``
    overrides the choice (Ray's ``--gpus-per-worker``). ``--cfg-options`` comes last because it
    takes every following word.
    """
    device = device or ("cuda" if spec.resources.gpus else "cpu")
    overrides = list(spec.overrides) + (list(spec.scaling.overrides) if spec.scaling else [])
    if spec.mode is Mode.TEST:
        args = ["test", spec.config, str(spec.checkpoint), "--work-dir", spec.work_dir,
                "--out", os.path.join(spec.work_dir, "results.json"), "--device", device]
        if spec.eval_metrics:
            args += ["--eval", *spec.eval_metrics]
    else:
        args = ["train", spec.config, "--work-dir", spec.work_dir, "--device", device]
        if spec.resume != "never":
            args += ["--resume", spec.resume]
        if spec.seed is not None:
            args += ["--seed", str(spec.seed)]
        if spec.amp:
            args.append("--amp")
        if spec.deterministic:
            args.append("--deterministic")
    if overrides:
        args += ["--cfg-options", *overrides]
    return tuple(args)


def worker_command(spec: JobSpec, python: str = sys.executable) -> tuple[str, ...]:
    """``python -m detcore.tools.cli ...``: the plain worker command line."""
    return (python, "-m", spec.worker_module, *worker_args(spec))


def shim_command(spec: JobSpec, log_dir: str | None, attempts_file: str | None,
                 python: str | None = None, device: str | None = None) -> tuple[str, ...]:
    """The worker behind :mod:`launcher.worker` (per-rank logs, attempt records, resume on restart).

    With ``python=None`` the result starts at ``-m`` (for ``torchrun -m`` style launchers that add
    the interpreter themselves, drop the leading ``-m`` too).
    """
    head: list[str] = [python] if python else []
    head += ["-m", "launcher.worker"]
    if log_dir:
        head += ["--log-dir", log_dir]
    if attempts_file:
        head += ["--attempts-file", attempts_file]
    return (*head, "--", spec.worker_module, *worker_args(spec, device))


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


def mirror_to_store(store: "ExperimentStore", experiment_id: str, status: Mapping | None = None,
                    work_dir: str | os.PathLike | None = None) -> None:
    """Copy a ``status.json`` mapping and/or the last metrics of ``work_dir`` into the
    experiment's store row. The store is a view of those files, which stay the record, so a
    failure (a locked or vanished database) is logged, not raised."""
    try:
        if status is not None:
            store.record_status(experiment_id, JobStatus(
                JobState(status["state"]), exit_code=status["exit_code"], restarts=status["restarts"],
                reason=status["reason"], ports=tuple(status["ports"]), started=status["started"],
                ended=status["ended"]))
        if work_dir is not None:
            store.record_work_dir_metrics(experiment_id, work_dir)
    except Exception as exc:
        logger.warning("could not update the experiment store for %s: %s", experiment_id, exc)


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON object from a file written atomically, or None when it is missing."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_json_atomic(path: str | os.PathLike, data: Mapping) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(dict(data), f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
