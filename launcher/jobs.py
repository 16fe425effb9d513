"""From a request to a stored, running experiment: the flow every backend shares.

``build_spec`` loads the config once (through detcore's ``load_config``, so a bad config or
override fails here with detcore's message), predicts the scaling the worker will apply at the
world size and resolves every path. ``submit_spec`` inserts the row, hands the spec to the backend and
removes the row again if the backend refuses: a user error never leaves a half-made
experiment. ``resume_spec`` rebuilds a finished experiment's spec for another run in the
same work dir, recomputing the scaling when the world size changed.

This module holds every user-intent write (submit, a sweep's submits, resume, cancel): the CLI's
commands parse flags and print, and call these.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from detcore.contract import DIST_TIMEOUT_MIN, WorkerArgs, seed_error
from detcore.pretrained.names import is_weights_name
from launcher.errors import LauncherError
from launcher.scaling import predict_scaling
from launcher.spec import (JobSpec, JobState, Mode, Resources, SlotPool, new_experiment_id, new_run_id,
                           timeout_problem)
from launcher.store import Experiment, ExperimentStore, experiment_from_spec

if TYPE_CHECKING:
    from launcher.backends.protocol import Backend, DryRun

logger = logging.getLogger(__name__)

# The hang watchdog: 30 minutes, the collective timeout Ray Train uses, is longer than any healthy gap between
# two iterations (an evaluation or a checkpoint to slow storage heartbeats as it goes). A run shorter than a few
# thousand iterations ends before a hang would be noticed at that limit, so it is off there by default.
HANG_TIMEOUT_DEFAULT_S = 1800.0
LONG_RUN_ITERS = 5000


@dataclass(frozen=True)
class SubmitRequest:
    """What the user typed, before anything is resolved."""

    config: str
    backend: str = "local"
    overrides: tuple[str, ...] = ()
    resources: Resources = dataclasses.field(default_factory=Resources)
    name: str | None = None
    work_dir: str | None = None
    resume: str | None = None  # None: auto, unless the work dir holds a run (then the user must say so)
    checkpoint: str | None = None
    eval_metrics: tuple[str, ...] = ()
    max_restarts: int = 0
    backend_options: Any = None
    worker_module: str = "detcore.tools.cli"
    slots: SlotPool | None = None
    hang_timeout_s: float | None = None  # None: default_hang_timeout
    worker: WorkerArgs = WorkerArgs()  # the worker flags as typed (--seed, --amp, --load-from, ...; paths relative)


def default_hang_timeout(cfg: dict, mode: Mode) -> float:
    """On (30 min) for long training runs (epoch-based, or at least 5000 iterations), off otherwise."""
    runner = cfg.get("runner") or {}
    if mode is not Mode.TRAIN or not isinstance(runner, dict):
        return 0.0
    long_run = runner.get("type") == "EpochBasedRunner" or int(runner.get("max_iters") or 0) >= LONG_RUN_ITERS
    return HANG_TIMEOUT_DEFAULT_S if long_run else 0.0


def default_name(config: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", Path(config).stem).lstrip("._-=+")[:80] or "job"


def config_hash(cfg: dict) -> str:
    from detcore.config import dump_config

    view = {k: v for k, v in cfg.items() if k != "filename"}
    return hashlib.sha256(dump_config(view).encode()).hexdigest()[:16]


def build_spec(req: SubmitRequest, cwd: str | None = None, exp_id: str | None = None) -> JobSpec:
    """Validate ``req`` and resolve it into a :class:`JobSpec` (no files written, nothing started)."""
    from detcore.config import load_config

    cwd = os.path.abspath(cwd or os.getcwd())
    exp_id = exp_id or new_experiment_id()
    config = os.path.join(cwd, req.config)
    if not os.path.lexists(config):  # a link loop, a dangling link or a folder: load_config names which
        raise LauncherError(f"config {req.config!r} not found (looked in {cwd}); pass the path to a .yaml config")
    cfg = load_config(config, req.overrides, import_custom=False)
    mode = Mode.TEST if req.checkpoint else Mode.TRAIN
    checkpoint = None
    if req.checkpoint:
        checkpoint = req.checkpoint if is_weights_name(req.checkpoint) else os.path.join(cwd, req.checkpoint)
        if checkpoint != req.checkpoint and not os.path.isfile(checkpoint):
            raise LauncherError(f"checkpoint {req.checkpoint!r} not found; pass an existing .pth file to --test (or "
                                f"a torchvision detector such as torchvision://fasterrcnn_resnet50_fpn)")
    unused = req.worker.set_outside(mode.value)
    if unused:
        raise LauncherError(f"{', '.join(unused)}: {'applies' if len(unused) == 1 else 'apply'} to training; a --test "
                            f"job does not use {'it' if len(unused) == 1 else 'them'}: drop "
                            f"{'it' if len(unused) == 1 else 'them'} (or submit without --test)")
    if req.worker.seed is not None and seed_error(req.worker.seed):
        raise LauncherError(f"--seed: {seed_error(req.worker.seed)}")
    resume = req.resume or "auto"
    if resume not in ("auto", "never"):
        resume = os.path.join(cwd, resume)
        if not os.path.isfile(resume):
            raise LauncherError(f"--resume {req.resume!r}: expected auto, never or an existing checkpoint file")
    load_from = None
    asked_from = req.worker.load_from
    if asked_from and is_weights_name(asked_from):  # a torchvision name: checked by detcore, fetched by the job
        load_from = asked_from
    elif asked_from:
        load_from = os.path.join(cwd, asked_from)
        if not os.path.isfile(load_from):
            raise LauncherError(f"--load-from {asked_from!r}: no such checkpoint file; pass an existing .pth "
                                f"(or a work dir's latest.pth)")
    check_before_start(cfg, req, mode, load_from, cwd)
    name = req.name or default_name(config)
    work_dir = os.path.join(cwd, req.work_dir) if req.work_dir else os.path.join(cwd, "work_dirs", f"{name}-{exp_id}")
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise LauncherError(f"work dir {work_dir} exists and is not a folder; pass another --work-dir")
    from detcore.ownership import earlier_run, in_use

    refusal = in_use(work_dir, exp_id) or (mode is Mode.TRAIN and earlier_run(work_dir, resume if req.resume else None))
    if refusal:  # a new experiment continues a run only when asked (--resume auto; `launcher resume ID`)
        raise LauncherError(refusal)
    scaling = None
    if mode is Mode.TRAIN:
        scaling = predict_scaling(cfg, req.resources.world_size)  # shown and stored; the worker applies it
    return JobSpec(id=exp_id, name=name, config=config, work_dir=os.path.normpath(work_dir), cwd=cwd, mode=mode,
                   overrides=tuple(req.overrides), checkpoint=checkpoint, eval_metrics=tuple(req.eval_metrics),
                   resources=req.resources, backend=req.backend, backend_options=req.backend_options,
                   worker=dataclasses.replace(req.worker, resume=None if resume == "never" else resume,
                                              load_from=load_from),
                   max_restarts=req.max_restarts, scaling=scaling, config_hash=config_hash(cfg),
                   worker_module=req.worker_module, slots=req.slots,
                   loader_workers=loader_workers(cfg, mode), dist_timeout_min=dist_timeout_min(cfg, req.config),
                   run_id=new_run_id(),
                   hang_timeout_s=(default_hang_timeout(cfg, mode) if req.hang_timeout_s is None
                                   else float(req.hang_timeout_s)))


def check_before_start(cfg: dict, req: SubmitRequest, mode: Mode, load_from: str | None, cwd: str) -> None:
    """detcore's own pre-start check (:func:`detcore.config_check.check_config`), before any row, work dir or job.

    Paths are checked on this node; for a remote backend each such line says so.
    """
    from detcore.config_check import ConfigProblems, config_problems, weights_notes

    problems = config_problems(cfg, test=mode is Mode.TEST, validate=req.worker.validate, load_from=load_from,
                               eval_metrics=(list(req.eval_metrics) or None) if mode is Mode.TEST else None, cwd=cwd,
                               resume=req.resume)
    if req.backend != "local":
        node = os.uname().nodename
        problems = [f"{p} (checked on this node, {node}; the {req.backend} job reads it on its own nodes)"
                    if "does not exist" in p else p for p in problems]
    if problems:
        raise ConfigProblems([f"{req.config}: {p}" for p in problems])
    if req.backend != "local" and mode is Mode.TRAIN:  # its nodes may have no internet to download weights
        for note in weights_notes(cfg, load_from):
            logger.warning("%s: %s", req.config, note)


def loader_workers(cfg: dict, mode: Mode = Mode.TRAIN) -> int:
    """The DataLoader workers per rank of the split the job reads (``data.train`` or ``data.test``'s own
    ``workers_per_gpu``, else ``data.workers_per_gpu``, detcore's default 2)."""
    from detcore.engine.scaling import split_workers

    value = split_workers(cfg, "test" if mode is Mode.TEST else "train")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LauncherError(f"data.workers_per_gpu must be an integer >= 0, got {value!r}")
    return value


def dist_timeout_min(cfg: dict, source: str) -> float:
    """The config's ``dist_params.timeout_min``, detcore's default when unset; a LauncherError naming ``source``
    (the config file) when it is not a number of minutes > 0."""
    params = cfg.get("dist_params")
    value = params.get("timeout_min") if isinstance(params, dict) else None
    if value is None:
        return DIST_TIMEOUT_MIN
    if timeout_problem(value):
        raise LauncherError(f"{source}: {timeout_problem(value)}")
    return value


def submit_spec(store: ExperimentStore, backend: Backend, spec: JobSpec, sweep: str | None = None,
                grid: dict[str, str] | None = None, dry: DryRun | None = None) -> Experiment:
    """Claim ``spec``'s work dir, record ``spec`` as a pending experiment and hand it to ``backend`` with the
    dry run the caller computed (``dry``; the backend computes it when None); undo the row and the claim if
    that fails."""
    from launcher.resources.work_dirs import claimed

    with claimed(store, [spec]):
        store.insert(experiment_from_spec(spec, JobState.PENDING, sweep=sweep, grid=grid))
        try:
            handle = backend.submit(spec, dry)
        except BaseException:
            store.delete(spec.id)
            raise
    store.set_backend_job(spec.id, handle.job_id, dict(handle.extra))
    return store.get(spec.id)


def submit_specs(store: ExperimentStore, backend: Backend, specs: list[JobSpec], sweep: str | None = None,
                 grids: list[dict[str, str]] | None = None, dries: list[DryRun] | None = None) -> list[Experiment]:
    """Submit a sweep (``grids[i]``: spec i's grid values, shown by ``launcher list``; ``dries``: the dry runs
    the caller computed, one per spec, or for an :class:`ArrayBackend` the one ``dryrun_array(specs)``): as one
    array job (``submit_array``) when the backend can, else one ``submit`` per spec. All or nothing: on an error the rows are removed (array)
    or the jobs already started are cancelled (one by one), and the error is raised."""
    from launcher.backends.protocol import ArrayBackend

    if isinstance(backend, ArrayBackend):
        from launcher.resources.work_dirs import claimed

        with claimed(store, specs):
            for spec, grid in zip(specs, grids or [None] * len(specs)):
                store.insert(experiment_from_spec(spec, JobState.PENDING, sweep=sweep, grid=grid))
            try:
                handles = backend.submit_array(specs, dries[0] if dries else None)
            except BaseException:
                for spec in specs:
                    store.delete(spec.id)
                raise
        for handle in handles:
            store.set_backend_job(handle.experiment_id, handle.job_id, dict(handle.extra))
        return [store.get(spec.id) for spec in specs]
    done: list[Experiment] = []
    try:
        for spec, grid, dry in zip(specs, grids or [None] * len(specs), dries or [None] * len(specs)):
            done.append(submit_spec(store, backend, spec, sweep=sweep, grid=grid, dry=dry))
    except BaseException:
        from launcher.store.reconcile import handle_of, refresh

        for exp in done:
            backend.cancel(handle_of(exp))
        refresh(store, [store.get(e.id) for e in done])
        raise
    return done


def request_from_spec(spec: JobSpec) -> SubmitRequest:
    """The request that rebuilds ``spec`` (same name, work dir, overrides)."""
    return SubmitRequest(config=spec.config, backend=spec.backend, overrides=spec.overrides, resources=spec.resources,
                         name=spec.name, work_dir=spec.work_dir, resume=spec.worker.resume or "never",
                         checkpoint=spec.checkpoint, eval_metrics=spec.eval_metrics, max_restarts=spec.max_restarts,
                         backend_options=spec.backend_options, worker_module=spec.worker_module, slots=None,
                         hang_timeout_s=spec.hang_timeout_s, worker=spec.worker)


def resume_spec(old: JobSpec, resources: Resources | None = None, max_restarts: int | None = None,
                backend: str | None = None, backend_options: Any = None,
                hang_timeout_s: float | None = None) -> tuple[JobSpec, str]:
    """A new launch continuing ``old`` in its work dir (``--resume auto``), possibly on another backend,
    and a line saying what changed. The scaling is recomputed for the new world size."""
    req = request_from_spec(old)
    moved = backend is not None and backend != old.backend
    req = dataclasses.replace(req, resume="auto" if old.mode is Mode.TRAIN else req.resume,
                              resources=resources or old.resources, backend=backend or old.backend,
                              max_restarts=old.max_restarts if max_restarts is None else max_restarts,
                              backend_options=backend_options if (backend_options is not None or moved)
                              else old.backend_options,
                              hang_timeout_s=old.hang_timeout_s if hang_timeout_s is None else hang_timeout_s)
    new = build_spec(req, cwd=old.cwd, exp_id=old.id)
    note = f"resuming {old.id} in {old.work_dir} from its newest checkpoint"
    if moved:
        note += f" on the {new.backend} backend (was {old.backend})"
    if new.world_size != old.world_size and new.scaling is not None:
        note += (f"; world size changed {old.world_size} -> {new.world_size}, scaling recomputed: "
                 f"{new.scaling.describe()}")
    return new, note


@dataclass(frozen=True)
class Resumed:
    """A resume that started: the experiment's new run, its backend, and the lines of rank 0's log that the
    launches before it wrote (a follower shows only this launch's)."""

    experiment: Experiment
    backend: Backend
    shown_from: int


# (the old spec, the new backend's module) -> (the resources asked for now or None: the old ones, the backend options)
Adjust = Callable[[JobSpec, ModuleType], "tuple[Resources | None, Any]"]


def resume(store: ExperimentStore, exp_id: str, backend: str | None = None, adjust: Adjust | None = None,
           max_restarts: int | None = None, hang_timeout_s: float | None = None,
           say: Callable[[str], None] = logger.info) -> Resumed:
    """A new launch of finished experiment ``exp_id`` in its work dir, on ``backend`` (default: its own), under
    the experiment's lock so that two resumes at once start one run. ``say`` gets the line saying what
    changed, once the new spec is known to be valid."""
    from launcher.backends import BACKENDS, backend_module, require_installed
    from launcher.resources.locking import experiment_lock
    from launcher.resources.work_dirs import claimed
    from launcher.runtime.detached import kill_marked
    from launcher.runtime.files import line_count
    from launcher.spec import spec_from_dict
    from launcher.store.reconcile import refresh
    from detcore.contract import rank_log

    with experiment_lock(store.home, exp_id):
        exp = refresh(store, [store.get(exp_id)])[0]
        if not exp.state.is_terminal():
            raise LauncherError(f"experiment {exp.id} is {exp.state.value}; cancel it first or wait for it to end")
        name = backend or exp.backend
        module = backend_module(name)
        require_installed(name)
        old = spec_from_dict(exp.spec_dict, backend_module(exp.backend).Options)
        resources, options = adjust(old, module) if adjust else (None, None)
        nodes = (resources or old.resources).nodes
        if nodes > 1 and not BACKENDS[name].multi_node:
            raise LauncherError(f"experiment {exp.id} ran on {nodes} nodes and the {name} backend runs on one: add "
                                f"--nodes 1 (with --nproc N or --gpus N for this machine's workers; the scaling is "
                                f"recomputed for the new world size)")
        spec, note = resume_spec(old, resources=resources, max_restarts=max_restarts, backend=name,
                                 backend_options=options, hang_timeout_s=hang_timeout_s)
        runner = module.create(store.home)
        dry = runner.dryrun(spec)
        say(note)
        kill_marked(exp.id)  # whatever the previous launch left on this node must not write the work dir too
        with claimed(store, [spec]):  # the same experiment continues its claim; another run's is refused
            shown_from = line_count(rank_log(spec.work_dir, 0))
            handle = runner.submit(spec, dry)
            try:
                store.start_run(spec.id, spec, handle.job_id, dict(handle.extra))
            except BaseException:  # never leave a job running that no row points to
                runner.cancel(handle)
                raise
    return Resumed(store.get(spec.id), runner, shown_from)


def cancel(store: ExperimentStore, exp_id: str) -> tuple[Experiment, bool]:
    """Stop experiment ``exp_id`` under its lock (idempotent): its record afterwards, and whether it had already
    ended (then nothing was asked of its backend)."""
    from launcher.backends import get_backend
    from launcher.resources.locking import experiment_lock
    from launcher.store.reconcile import handle_of, refresh

    with experiment_lock(store.home, exp_id):
        exp = refresh(store, [store.get(exp_id)])[0]
        if exp.state.is_terminal():
            return exp, True
        get_backend(exp.backend, store.home).cancel(handle_of(exp))
        return refresh(store, [exp])[0], False
