"""Plain data at the edges: what a user asks for (:class:`JobSpec`) and what a backend reports.

Everything here is a frozen dataclass or an enum, validated on construction, and converts to
and from JSON-ready dicts for the experiment store. No I/O.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from detcore.contract import DIST_TIMEOUT_MIN, WorkerArgs
from launcher.errors import LauncherError
from launcher.scaling import ScaledSchedule
from launcher.state import JobState

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,99}$")


class Mode(str, Enum):
    TRAIN = "train"
    TEST = "test"


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LauncherError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Resources:
    """What one job needs. ``nproc`` workers per node; with ``gpus`` > 0 each worker gets one GPU."""

    nproc: int = 1
    gpus: int = 0
    nodes: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None

    def __post_init__(self) -> None:
        _check_int("nproc (workers per node)", self.nproc, 1)
        _check_int("gpus", self.gpus, 0)
        _check_int("nodes", self.nodes, 1)
        if self.gpus and self.nproc != self.gpus:
            raise LauncherError(f"asked for {self.gpus} GPUs and {self.nproc} workers per node; each GPU runs one "
                                f"worker, so pass only --gpus {self.gpus} (or --nproc for CPU workers)")
        if self.cpus_per_task is not None:
            _check_int("cpus_per_task", self.cpus_per_task, 1)
        if self.time_min is not None:
            _check_int("time_min", self.time_min, 1)
        if self.mem_gb is not None and (isinstance(self.mem_gb, bool) or not isinstance(self.mem_gb, (int, float))
                                        or self.mem_gb <= 0):
            raise LauncherError(f"mem_gb must be a positive number, got {self.mem_gb!r}")

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc


@dataclass(frozen=True)
class SlotPool:
    """At most ``size`` jobs naming the same pool run at once (a sweep's ``--max-parallel``)."""

    name: str
    size: int

    def __post_init__(self) -> None:
        _check_int("max parallel jobs", self.size, 1)


@dataclass(frozen=True)
class JobSpec:
    """One experiment, fully resolved: every path absolute, scaling computed, id assigned.

    ``backend_options`` is the backend's own frozen dataclass (e.g. ``LocalOptions``) or None.
    ``worker`` is what the worker is started with (:class:`detcore.contract.WorkerArgs`: ``--resume``,
    ``--seed``, ``--amp``, ...; ``worker.resume`` None: never resume). Its mode, config, checkpoint,
    work dir, results file, ``--eval`` and ``--cfg-options`` always follow this spec's own fields (set on
    construction), and its device is left for the backend to choose (:func:`launcher.runtime.command.worker_args`).
    ``scaling`` is the launcher's prediction of the linear-scaling
    decision for this world size (for display; the worker applies the rule itself).
    ``loader_workers`` is the config's ``data.workers_per_gpu`` (for sizing CPUs and threads).
    ``dist_timeout_min`` is the config's ``dist_params.timeout_min`` (detcore's default when unset), for
    launchers that create the process group themselves (Ray Train).
    """

    id: str
    name: str
    config: str
    work_dir: str
    cwd: str
    mode: Mode = Mode.TRAIN
    overrides: tuple[str, ...] = ()
    checkpoint: str | None = None
    eval_metrics: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    worker: WorkerArgs = field(default_factory=lambda: WorkerArgs(resume="auto"))
    backend: str = "local"
    backend_options: Any = None
    max_restarts: int = 0
    scaling: ScaledSchedule | None = None
    config_hash: str = ""
    worker_module: str = "detcore.tools.cli"
    slots: SlotPool | None = None
    run_id: str = ""
    hang_timeout_s: float = 0.0
    loader_workers: int = 2
    dist_timeout_min: float = DIST_TIMEOUT_MIN

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{8}", self.id):
            raise LauncherError(f"experiment id {self.id!r} must be 8 lowercase hex digits")
        if not NAME_PATTERN.match(self.name):
            raise LauncherError(f"job name {self.name!r} may only hold letters, digits and . _ = + - (at most 100, "
                                f"starting with a letter or digit); pick another --name")
        if not isinstance(self.mode, Mode):
            raise LauncherError(f"mode must be train or test, got {self.mode!r}")
        if self.mode is Mode.TEST and not self.checkpoint:
            raise LauncherError("a test job needs a checkpoint (--test CHECKPOINT)")
        if self.mode is Mode.TRAIN and (self.checkpoint or self.eval_metrics):
            raise LauncherError("--eval and a checkpoint belong to test jobs; pass --test CHECKPOINT")
        if not isinstance(self.worker, WorkerArgs):
            raise LauncherError(f"worker must be a WorkerArgs, got {type(self.worker).__name__}")
        test = self.mode is Mode.TEST
        object.__setattr__(self, "worker", dataclasses.replace(
            self.worker, mode=self.mode.value, config=self.config, checkpoint=self.checkpoint, work_dir=self.work_dir,
            out=os.path.join(self.work_dir, "results.json") if test else None,
            eval=tuple(self.eval_metrics) if test and self.eval_metrics else None,
            cfg_options=tuple(self.overrides)))  # never pre-scaled: the worker applies auto_scale_lr itself
        _check_int("max_restarts", self.max_restarts, 0)
        _check_int("data.workers_per_gpu", self.loader_workers, 0)
        if timeout_problem(self.dist_timeout_min):
            raise LauncherError(timeout_problem(self.dist_timeout_min))
        if self.backend_options is not None and not dataclasses.is_dataclass(self.backend_options):
            raise LauncherError(f"backend_options must be the backend's options dataclass, got "
                                f"{type(self.backend_options).__name__}")
        if self.run_id and not re.fullmatch(r"[0-9A-Za-z-]{1,40}", self.run_id):
            raise LauncherError(f"run id {self.run_id!r} must be letters, digits and dashes")
        if isinstance(self.hang_timeout_s, bool) or not isinstance(self.hang_timeout_s, (int, float)) \
                or not 0 <= self.hang_timeout_s < 10 ** 7:
            raise LauncherError(f"--hang-timeout must be a number of seconds >= 0 (0: off), got {self.hang_timeout_s!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", self.worker_module):
            raise LauncherError(f"worker module {self.worker_module!r} is not a Python module name")

    @property
    def world_size(self) -> int:
        return self.resources.world_size


def timeout_problem(value: Any) -> str | None:
    """Why ``value`` cannot be ``dist_params.timeout_min`` (a number of minutes > 0), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 10 ** 6:
        return (f"dist_params.timeout_min must be a number of minutes > 0 (the process-group timeout; default "
                f"{DIST_TIMEOUT_MIN:g}), got {value!r}")
    return None


def new_experiment_id() -> str:
    """8 random hex digits (collisions are caught by the store's primary key)."""
    return secrets.token_hex(4)


def new_run_id() -> str:
    """A fresh id for one launch (a submit or a resume): its time, then 4 random hex digits."""
    import time

    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class JobHandle:
    """How a backend finds a submitted job again: its own id plus a few named extras."""

    experiment_id: str
    backend: str
    job_id: str
    extra: tuple[tuple[str, str], ...] = ()

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.extra).get(key, default)


@dataclass(frozen=True)
class JobStatus:
    """What a backend knows about a job right now (``Backend.status``)."""

    state: JobState
    exit_code: int | None = None
    restarts: int = 0
    reason: str = ""
    ports: tuple[int, ...] = ()
    started: float | None = None
    ended: float | None = None


# ---- JSON round trip (the store keeps the spec so `resume` can rebuild it) -----------------

# The worker flags a spec.json held as its own fields before they became ``worker`` (read by spec_from_dict).
_FLAT_WORKER_FIELDS = ("resume", "seed", "amp", "deterministic", "load_from", "validate")


def spec_to_dict(spec: JobSpec) -> dict:
    out = dataclasses.asdict(spec)
    out["worker"] = spec.worker.to_dict()
    out["mode"] = spec.mode.value
    out["overrides"] = list(spec.overrides)
    out["eval_metrics"] = list(spec.eval_metrics)
    out["scaling"] = spec.scaling.to_dict() if spec.scaling else None
    return out


def spec_from_dict(data: Mapping[str, Any], options_type: type | None = None) -> JobSpec:
    """Inverse of :func:`spec_to_dict`; ``options_type`` rebuilds ``backend_options``."""
    d = dict(data)
    d["mode"] = Mode(d.get("mode", "train"))
    d["overrides"] = tuple(d.get("overrides") or ())
    d["eval_metrics"] = tuple(d.get("eval_metrics") or ())
    d["resources"] = Resources(**(d.get("resources") or {}))
    d["scaling"] = ScaledSchedule.from_dict(d["scaling"]) if d.get("scaling") else None
    d["slots"] = SlotPool(**d["slots"]) if d.get("slots") else None
    opts = d.get("backend_options")
    d["backend_options"] = options_type(**opts) if (opts is not None and options_type is not None) else None
    d["worker"] = worker_from_dict(d)
    for name in _FLAT_WORKER_FIELDS:
        d.pop(name, None)
    return JobSpec(**d)


def worker_from_dict(data: Mapping[str, Any]) -> WorkerArgs:
    """The :class:`WorkerArgs` of a spec as :func:`spec_to_dict` wrote it, or as a spec.json written before the
    worker's arguments were one value held them (flat ``resume``/``seed``/``amp``/... fields; ``resume: never``)."""
    if data.get("worker") is not None:
        return WorkerArgs.from_dict(data["worker"])
    flat = {k: data[k] for k in _FLAT_WORKER_FIELDS if k in data}
    resume = flat.get("resume", "auto")
    flat["resume"] = None if resume == "never" or Mode(data.get("mode") or "train") is Mode.TEST else resume
    return WorkerArgs.from_dict(flat)
