"""The Ray backend: detcore training under Ray Train's ``TorchTrainer`` on a Ray cluster.

Ray places the workers and sets up their process group (gloo, or NCCL on GPUs); every worker
runs detcore's trainer in-process on that group and reports detcore's checkpoints to Ray
(:mod:`launcher.backends.ray_train.train_loop`), so Ray Train's ``FailureConfig(max_failures=K)``
restarts a crashed worker group from the newest one (``--resume auto``).

``dryrun`` is the pure :func:`~launcher.backends.ray_train.plan.trainer_plan` rendered: the
``ray.init`` call and the trainer's ``ScalingConfig``, ``RunConfig``, ``FailureConfig`` and
``CheckpointConfig``, plus the worker command. ``submit`` is that plan executed by a driver
(:mod:`launcher.backends.ray_train.driver`) that owns the job's ``$LAUNCHER_HOME/ray/<id>/status.json``:
a Ray job submitted through the head's job API for a dashboard address (:mod:`.jobs_api`, which also
serves ``status``/``logs``/``cancel`` for it), else a process detached on this machine. So ``status``,
``logs``, ``cancel`` and ``list`` work from any later process, as for the local backend:

* ``status`` is :func:`~launcher.runtime.monitor.observed_status`, as for the local backend: a
  driver that died without recording an ending is "monitor lost" (Ray kills a dead driver's
  non-detached actors, the worker group among them), and the experiment can be resumed;
* ``logs`` reads ``WORK_DIR/logs/rank{R}.log``;
* ``cancel`` touches ``cancel`` and sends the driver SIGINT, Ray Train's graceful abort; if the
  driver has not ended after a grace period it is killed, and any process of the job still
  alive on this node (found by ``DETLAUNCH_EXPERIMENT_ID`` in its environment: the driver's
  runtime env puts it into every Ray worker of the job) is killed too. Ray's cluster-wide
  singleton actors inherit that variable from the job that created them and are left alone.

Process starts and address checks go through :meth:`RayTrainBackend._start_driver` and
:meth:`RayTrainBackend._check_address`, the seams unit tests replace.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Iterator, Mapping

from launcher.backends.protocol import DryRun
from launcher.backends.ray_train.jobs_api import (API_JOBS, API_KEY, RayJobs, job_api_address, stop_env,
                                                  submission_id)
from launcher.backends.ray_train.plan import (LOOPBACK_ENV, MARKER_ENV, Address, RayOptions, TrainerPlan, cpu_note,
                                              driver_env, parse_address, render_plan, resolve_address, timeout_note,
                                              trainer_plan)
from launcher.errors import LauncherError
from launcher.runtime import detached
from launcher.runtime.command import import_path_env, worker_command
from launcher.runtime.job_folder import JobFolder
from launcher.spec import JobHandle, JobSpec, JobStatus, Mode, Resources

__all__ = ["Options", "RayOptions", "RayTrainBackend", "add_arguments", "options_from_args", "resources_from_args", "create"]

CANCEL_GRACE_S = 45.0
LEFTOVER_WAIT_S = 15.0


Options = RayOptions  # the name the backend protocol looks up (launcher.backends.protocol)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--address", dest="ray_address", metavar="auto|HOST:PORT|ray://HOST:PORT",
                       help="ray: the cluster (default auto: RAY_ADDRESS, else the head last started on this "
                            "machine); a head on 127.0.0.1 keeps all traffic on loopback")
    group.add_argument("--workers", dest="ray_workers", type=int, metavar="N",
                       help="ray: Ray Train workers (same as --nproc, or --gpus with one GPU each)")
    group.add_argument("--gpus-per-worker", dest="ray_gpus_per_worker", type=float, metavar="G",
                       help="ray: GPUs per worker (default 1 with --gpus, else 0)")
    group.add_argument("--cpus-per-worker", dest="ray_cpus_per_worker", type=int, metavar="C",
                       help="ray: CPUs per worker (same as --cpus-per-task; default 1 + data.workers_per_gpu: "
                            "the worker and its DataLoader processes)")
    group.add_argument("--max-failures", dest="ray_max_failures", type=int, metavar="K",
                       help="ray: FailureConfig(max_failures=K), restarts of the worker group from the newest "
                            "checkpoint (default: --max-restarts; -1 for unlimited)")
    group.add_argument("--storage", dest="ray_storage", metavar="PATH",
                       help="ray: Ray Train's storage_path, reachable by every worker (default WORK_DIR/ray)")


def options_from_args(args: argparse.Namespace) -> RayOptions:
    storage = getattr(args, "ray_storage", None)
    if storage and "://" not in storage:
        storage = os.path.abspath(storage)
    return RayOptions(address=getattr(args, "ray_address", None) or "auto",
                   gpus_per_worker=getattr(args, "ray_gpus_per_worker", None),
                   max_failures=getattr(args, "ray_max_failures", None), storage=storage)


def resources_from_args(args: argparse.Namespace, resources: Resources) -> Resources:
    """``--workers N`` is ``--nproc N`` (``--gpus N`` when GPUs are asked for); ``--cpus-per-worker`` is
    ``--cpus-per-task``."""
    workers, cpus = getattr(args, "ray_workers", None), getattr(args, "ray_cpus_per_worker", None)
    gpw = getattr(args, "ray_gpus_per_worker", None)
    if cpus is not None:
        if getattr(args, "cpus_per_task", None) not in (None, cpus):
            raise LauncherError("--cpus-per-worker is --cpus-per-task under another name; pass only one of them")
        resources = dataclasses.replace(resources, cpus_per_task=cpus)
    if workers is not None:
        given = getattr(args, "nproc", None) or getattr(args, "gpus", None)
        if given not in (None, workers):
            raise LauncherError(f"--workers {workers} and --nproc/--gpus {given} disagree; --workers is --nproc "
                                f"under another name, pass only one of them")
        resources = dataclasses.replace(resources, nproc=workers, gpus=workers if resources.gpus else 0)
    if gpw is not None and gpw > 0 and not resources.gpus:
        resources = dataclasses.replace(resources, gpus=resources.nproc)
    if gpw == 0 and resources.gpus:
        raise LauncherError("--gpus-per-worker 0 contradicts --gpus; use --nproc (or --workers) for CPU workers")
    return resources


def create(home: Path) -> RayTrainBackend:
    return RayTrainBackend(home)


class RayTrainBackend(detached.DetachedBackend):
    name = "ray"
    FOLDER, START_KEY, MONITOR, OPTIONS = "ray", "driver_start", "the Ray driver", RayOptions

    def __init__(self, home: Path, environ: Mapping[str, str] | None = None) -> None:
        self.home = Path(home)
        self.environ = dict(os.environ if environ is None else environ)

    # ---- seams -------------------------------------------------------------------------------
    def _check_address(self, plan: TrainerPlan) -> Address:
        """Resolve ``--address`` and fail within seconds when nothing listens there."""
        from launcher.backends.ray_train.driver import check_reachable, current_cluster

        address = resolve_address(plan.address, self.environ, lambda: current_cluster(self.environ))
        check_reachable(address)
        return address

    def _start_driver(self, cmd: tuple[str, ...], env: Mapping[str, str], cwd: str, log: Path) -> tuple[int, int]:
        """Start the detached driver; its pid and start tick."""
        return detached.start(cmd, env, cwd, log)

    # ---- rendering ------------------------------------------------------------------------------
    def driver_command(self, spec: JobSpec) -> tuple[str, ...]:
        return (sys.executable, "-m", "launcher.backends.ray_train.driver", "--home", str(self.home), spec.id)

    def dryrun(self, spec: JobSpec) -> DryRun:
        """The dry run; its ``plan`` is the :class:`TrainerPlan` the driver executes (``plan.json``)."""
        plan = trainer_plan(spec, spec.backend_options, self.environ)
        api = job_api_address(plan.address, self.environ)
        address = api or parse_address(plan.address)
        env = {**driver_env(address), **import_path_env(self.environ), MARKER_ENV: spec.id}
        if api:
            env.update(stop_env(CANCEL_GRACE_S))
        notes = (self.driver_note(spec, api),
            f"each of the {plan.num_workers} Ray Train workers runs the worker command in-process "
            f"({spec.worker_module}.main) on the process group Ray Train set up; output in "
            f"{plan.worker.log_dir}/rank{{R}}.log",
            ("checkpoints: detcore's own in the work dir; each new one is reported to Ray as a pointer "
             "(ray.train.report), and a restarted worker group resumes with --resume auto") if spec.mode is Mode.TRAIN
            else (f"a test job: the {plan.num_workers} workers evaluate {spec.checkpoint} on their shares of the test "
                  f"split; rank 0 writes the detections to results.json and the metrics to test_metrics.json in "
                  f"{spec.work_dir}"),
            "an unreachable --address fails within seconds (a TCP check before ray.init)",
        )
        notes += (cpu_note(spec), timeout_note(plan), *plan.notes)
        if address.loopback:
            notes += (f"{LOOPBACK_ENV}=0 (before import ray) keeps the driver, Ray and MASTER_ADDR on 127.0.0.1",)
        return DryRun(backend=self.name, commands=(worker_command(spec),), env=tuple(sorted(env.items())),
                      resources=spec.resources, world_size=spec.world_size, scaling=spec.scaling,
                      work_dir=spec.work_dir, cwd=spec.cwd, files=(("ray_driver", render_plan(plan)),), notes=notes,
                      plan=plan.to_json())

    def driver_note(self, spec: JobSpec, api: Address | None) -> str:
        """Which path the driver takes and why (the dry run's first note)."""
        cmd = " ".join(self.driver_command(spec))
        if api:
            sid = submission_id(spec)
            return (f"driver: a Ray job through the job API at {api.text} (submission id {sid}), because --address "
                    f"is the dashboard's: Ray runs `{cmd}` on the cluster, so it outlives this process and machine; "
                    f"`ray job status/logs {sid} --address {api.text}` work beside launcher status/logs")
        return (f"driver: {cmd} (detached, on this machine, output in {JobFolder(self.job_dir(spec.id)).driver_log}), because "
                f"--address is not a job-API (dashboard) address; --address http://HEAD:8265 runs it on the cluster "
                f"as a Ray job")

    def _jobs(self, address: str) -> RayJobs:
        """The job-API client seam."""
        return RayJobs(address)

    # ---- submit -------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, dry: DryRun | None = None) -> JobHandle:
        if dry is None or dry.plan is None:  # the plan travels with this backend's dry run
            dry = self.dryrun(spec)
        plan = TrainerPlan.from_json(dry.plan or {})
        api = job_api_address(plan.address, self.environ)
        if api:
            return self.submit_job(spec, dry, plan, api)
        address = self._check_address(plan)
        job_dir = self.job_dir(spec.id)
        with detached.launch_folder(job_dir, spec, dry):
            env = {**self.environ, **dict(dry.env), **driver_env(address)}
            pid, start = self._start_driver(self.driver_command(spec), env, spec.cwd, JobFolder(job_dir).driver_log)
        return JobHandle(spec.id, self.name, str(pid), (("address", address.text), ("driver_start", str(start)),
                                                        ("job_dir", str(job_dir)), ("run_dir", plan.worker.run_dir)))

    def submit_job(self, spec: JobSpec, dry: DryRun, plan: TrainerPlan, api: Address) -> JobHandle:
        """The driver as a Ray job (:mod:`.jobs_api`); the handle's job id is the Ray job's submission id."""
        from launcher.backends.ray_train.driver import check_reachable

        check_reachable(api)
        jobs = self._jobs(api.text)
        job_dir = self.job_dir(spec.id)
        with detached.launch_folder(job_dir, spec, dry):
            stops = stop_env(CANCEL_GRACE_S)
            env = {k: v for k, v in dry.env if k not in stops}
            sid = jobs.submit(self.driver_command(spec), spec.cwd, env, stops, submission_id(spec))
        return JobHandle(spec.id, self.name, sid, (("address", api.text), (API_KEY, API_JOBS),
                                                   ("job_dir", str(job_dir)), ("run_dir", plan.worker.run_dir)))

    def status(self, handle: JobHandle) -> JobStatus:
        if handle.get(API_KEY) == API_JOBS:
            return self._jobs(handle.get("address")).status(handle.job_id, self.job_dir(handle.experiment_id),
                                                            handle.get("run_dir"))
        return super().status(handle)

    # ---- logs ---------------------------------------------------------------------------------
    def logs(self, handle: JobHandle, rank: int = 0, follow: bool = False) -> Iterator[str]:
        if handle.get(API_KEY) == API_JOBS and rank == 0 and not follow and \
                not self.log_path(handle.experiment_id, rank).exists():  # no worker yet: the driver's output
            yield from self._jobs(handle.get("address")).logs(handle.job_id).splitlines()
            return
        yield from super().logs(handle, rank, follow)

    def not_started(self, handle: JobHandle) -> str:
        where = (f"`ray job logs {handle.job_id} --address {handle.get('address')}`" if handle.get(API_KEY) == API_JOBS
                 else str(JobFolder(self.job_dir(handle.experiment_id)).driver_log))
        return f"Ray has not started that worker (the driver's log is {where})"

    def cancel(self, handle: JobHandle) -> None:
        """SIGINT is Ray Train's graceful abort (workers and placement group go); Ray ends a finished driver's
        workers asynchronously, so whatever of the job is left on this node after a while is killed. A Ray job
        is stopped through the job API (its runtime env makes that SIGINT, SIGKILL after the same grace)."""
        if handle.get(API_KEY) == API_JOBS:
            current = self.status(handle)
            if not current.state.is_terminal():
                JobFolder(self.job_dir(handle.experiment_id)).cancel.touch()
                self._jobs(handle.get("address")).stop(handle.job_id, CANCEL_GRACE_S + LEFTOVER_WAIT_S)
                detached.kill_marked(handle.experiment_id)  # what Ray left of the job on this node, if any
            return
        detached.cancel(self.job_dir(handle.experiment_id), handle, self.START_KEY, signal.SIGINT, CANCEL_GRACE_S,
                        LEFTOVER_WAIT_S, self.status(handle))
