"""The one interface every backend implements, and the pieces they share.

A backend is a :class:`Backend`: five methods (TorchX's scheduler API is the model):

``dryrun(spec) -> DryRun``
    Pure: render exactly what would run (command lines, environment, files such as an sbatch
    script, resources, scaling). No cluster calls, no processes, no files written. It may raise
    :class:`~launcher.errors.LauncherError` for a request the backend can never meet.
``submit(spec, dry=None) -> JobHandle``
    Execute the dry run (``dry``: the one the caller already computed for ``spec``, else computed
    here), so that what ``--dry-run`` printed is what runs: a detached backend stores it in the
    job folder (``plan.json``) and its monitor executes the stored plan instead of deriving it
    again; the Slurm backend stores it too and hands ``sbatch`` the script it shows. Must not return before the job is durably handed over (a supervisor started, an
    sbatch accepted). May raise LauncherError (nothing is left behind: the caller deletes the
    experiment row and the work dir it created).
``status(handle) -> JobStatus``
    The backend's view right now (squeue/sacct, Ray job status, local pid and status files).
    Called by :mod:`launcher.store.reconcile` whenever a non-terminal row is read.
``logs(handle, rank=0, follow=False) -> Iterator[str]``
    Lines of one rank's stdout/stderr; with ``follow``, keeps yielding until the job ends.
``cancel(handle) -> None``
    Idempotent; stops every process of the job and frees what it held.

An :class:`ArrayBackend` (Slurm) also has ``dryrun_array(specs) -> DryRun`` and
``submit_array(specs, dry=None) -> list[JobHandle]`` (one handle per spec, in order; ``dry``: their
``dryrun_array``, executed as ``submit`` executes its dry run): a whole sweep as one array job; ``launcher sweep`` submits the specs of any other backend one by one. The local and
Ray backends subclass :class:`~launcher.runtime.detached.DetachedBackend`: a monitor process on the
submitting side, one job folder per experiment.

A backend *package* (``launcher/backends/<name>/``) exposes, besides its backend class:

``Options``
    Its options class (``LocalOptions``, ``SlurmOptions``, ``RayOptions``: a frozen dataclass, or None),
    stored in ``JobSpec.backend_options``.
``add_arguments(group: argparse._ArgumentGroup) -> None``
    Its ``submit``/``sweep`` options, each prefixed with the backend's name
    (``--slurm-partition``) or otherwise unique. Keep module-level imports light: the CLI
    imports every backend module to build ``submit --help``.
``options_from_args(args: argparse.Namespace) -> Options | None``
``resources_from_args(args, resources: Resources) -> Resources``
    Adjust the generic resources (``--nproc --gpus --nodes --cpus-per-task --mem-gb --time``,
    which backends must not redefine) from the backend's own options.
``create(home: pathlib.Path) -> Backend``

What every backend shares lives outside the backends: the worker command line and its
environment (:mod:`launcher.runtime.command`), the worker shim and its facts
(:mod:`launcher.runtime.shim`, :mod:`launcher.runtime.facts`), the run monitor
(:mod:`launcher.runtime.monitor`). A backend never writes the experiment store: the store is
derived from ``status`` by :func:`launcher.store.reconcile.refresh`, its one writer. No backend
imports another.
"""
from __future__ import annotations

import abc
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from launcher.views.printable import printable
from launcher.scaling import ScaledSchedule
from launcher.spec import JobHandle, JobSpec, JobStatus, Resources


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
    plan: Mapping[str, Any] | None = field(default=None, compare=False)  # the backend's own plan, JSON values

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
        return "\n".join(printable(line) for line in lines)  # overrides and paths are user text

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


class Backend(abc.ABC):
    """Where jobs run (see the module docstring for what each method promises)."""

    name: str

    @abc.abstractmethod
    def dryrun(self, spec: JobSpec) -> DryRun: ...

    @abc.abstractmethod
    def submit(self, spec: JobSpec, dry: DryRun | None = None) -> JobHandle: ...

    @abc.abstractmethod
    def status(self, handle: JobHandle) -> JobStatus: ...

    @abc.abstractmethod
    def logs(self, handle: JobHandle, rank: int = 0, follow: bool = False) -> Iterator[str]: ...

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> None: ...


class ArrayBackend(Backend):
    """A backend that submits a sweep as one array job (one handle per spec, in order)."""

    @abc.abstractmethod
    def dryrun_array(self, specs: Sequence[JobSpec]) -> DryRun: ...

    @abc.abstractmethod
    def submit_array(self, specs: Sequence[JobSpec], dry: DryRun | None = None) -> list[JobHandle]: ...
