"""The Ray backend: detcore training under Ray Train's ``TorchTrainer`` on a Ray cluster.

Ray places the workers and sets up their process group (gloo, or NCCL on GPUs); every worker
runs detcore's trainer in-process on that group and reports detcore's checkpoints to Ray
(:mod:`launcher.backends.ray_worker`), so Ray Train's ``FailureConfig(max_failures=K)``
restarts a crashed worker group from the newest one (``--resume auto``).

``dryrun`` is the pure :func:`~launcher.backends.ray_plan.trainer_plan` rendered: the
``ray.init`` call and the trainer's ``ScalingConfig``, ``RunConfig``, ``FailureConfig`` and
``CheckpointConfig``, plus the worker command. ``submit`` is that plan executed by a detached
driver (:mod:`launcher.backends.ray_driver`, why detached is explained there) that owns the
job's ``$LAUNCHER_HOME/ray/<id>/status.json``. So ``status``, ``logs``, ``cancel`` and
``list`` work from any later process, as for the local backend:

* ``status`` trusts ``status.json`` while the driver (pid + start tick) lives; a driver that
  died without a terminal status is reported failed (Ray kills a dead driver's non-detached
  actors, the worker group among them);
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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

from launcher.backends.base import DryRun, import_path_env, read_json, worker_command, write_json_atomic
from launcher.backends.ray_plan import (LOOPBACK_ENV, MARKER_ENV, Address, Options, TrainerPlan, driver_env,
                                        parse_address, render_plan, resolve_address, trainer_plan)
from launcher.errors import LauncherError
from launcher.procinfo import is_alive, process_start
from launcher.spec import JobHandle, JobSpec, JobState, JobStatus, Resources, spec_from_dict, spec_to_dict

__all__ = ["Options", "RayTrainBackend", "add_arguments", "options_from_args", "resources_from_args", "create",
           "status_from_json"]

CANCEL_GRACE_S = 45.0
LEFTOVER_WAIT_S = 15.0
RUN_FILES = ("spec.json", "status.json", "cancel")  # one run's state in ray/<id>/; driver.log is kept
SHARED_ACTORS = ("ray::_AutoscalingCoordinatorActor",)  # created by the first Ray Train run, used by all


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--address", dest="ray_address", metavar="auto|HOST:PORT|ray://HOST:PORT",
                       help="ray: the cluster (default auto: RAY_ADDRESS, else the head last started on this "
                            "machine); a head on 127.0.0.1 keeps all traffic on loopback")
    group.add_argument("--workers", dest="ray_workers", type=int, metavar="N",
                       help="ray: Ray Train workers (same as --nproc, or --gpus with one GPU each)")
    group.add_argument("--gpus-per-worker", dest="ray_gpus_per_worker", type=float, metavar="G",
                       help="ray: GPUs per worker (default 1 with --gpus, else 0)")
    group.add_argument("--cpus-per-worker", dest="ray_cpus_per_worker", type=int, metavar="C",
                       help="ray: CPUs per worker (same as --cpus-per-task; default 1)")
    group.add_argument("--max-failures", dest="ray_max_failures", type=int, metavar="K",
                       help="ray: FailureConfig(max_failures=K), restarts of the worker group from the newest "
                            "checkpoint (default: --max-restarts; -1 for unlimited)")
    group.add_argument("--storage", dest="ray_storage", metavar="PATH",
                       help="ray: Ray Train's storage_path, reachable by every worker (default WORK_DIR/ray)")


def options_from_args(args: argparse.Namespace) -> Options:
    storage = getattr(args, "ray_storage", None)
    if storage and "://" not in storage:
        storage = os.path.abspath(storage)
    return Options(address=getattr(args, "ray_address", None) or "auto",
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


def create(home: Path) -> "RayTrainBackend":
    return RayTrainBackend(home)


def status_from_json(st: Mapping) -> JobStatus:
    return JobStatus(JobState(st["state"]), exit_code=st.get("exit_code"), restarts=int(st.get("restarts", 0)),
                     reason=st.get("reason", ""), ports=tuple(st.get("ports", ())), started=st.get("started"),
                     ended=st.get("ended"))


def job_status(st: Mapping | None, driver_alive: bool, run_dir: Path) -> JobStatus:
    """The job's state from its ``status.json`` (or None) and whether its driver still runs (pure)."""
    if st is not None and JobState(st["state"]).is_terminal():
        return status_from_json(st)
    if driver_alive:
        return status_from_json(st) if st else JobStatus(JobState.PENDING)
    restarts = int(st.get("restarts", 0)) if st else 0
    return JobStatus(JobState.FAILED, restarts=restarts, ended=time.time(),
                     reason=f"the Ray driver died without recording a result (Ray stops a dead driver's workers; "
                            f"see {run_dir / 'driver.log'})")


class RayTrainBackend:
    name = "ray"

    def __init__(self, home: Path, environ: Mapping[str, str] | None = None) -> None:
        self.home = Path(home)
        self.environ = dict(os.environ if environ is None else environ)

    def run_dir(self, exp_id: str) -> Path:
        return self.home / "ray" / exp_id

    # ---- seams -------------------------------------------------------------------------------
    def _check_address(self, plan: TrainerPlan) -> Address:
        """Resolve ``--address`` and fail within seconds when nothing listens there."""
        from launcher.backends.ray_driver import check_reachable, current_cluster

        address = resolve_address(plan.address, self.environ, current_cluster())
        check_reachable(address)
        return address

    def _start_driver(self, cmd: tuple[str, ...], env: Mapping[str, str], cwd: str, log: Path) -> tuple[int, int]:
        """Start the detached driver; its pid and start tick."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        for _ in range(200):
            start = process_start(proc.pid)
            if start is not None:
                return proc.pid, start
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        raise LauncherError(f"the Ray driver (pid {proc.pid}) exited at once; see {log}")

    # ---- rendering ------------------------------------------------------------------------------
    def driver_command(self, spec: JobSpec) -> tuple[str, ...]:
        return (sys.executable, "-m", "launcher.backends.ray_driver", "--home", str(self.home), spec.id)

    def dryrun(self, spec: JobSpec) -> DryRun:
        plan = trainer_plan(spec, spec.backend_options, self.environ)
        address = parse_address(plan.address)
        env = {**driver_env(address), **import_path_env(self.environ), MARKER_ENV: spec.id}
        notes = (
            f"driver: {' '.join(self.driver_command(spec))} (detached, output in {self.run_dir(spec.id)}/driver.log)",
            f"each of the {plan.num_workers} Ray Train workers runs the worker command in-process "
            f"({spec.worker_module}.main) on the process group Ray Train set up; output in "
            f"{plan.worker.log_dir}/rank{{R}}.log",
            "checkpoints: detcore's own in the work dir; each new one is reported to Ray as a pointer "
            "(ray.train.report), and a restarted worker group resumes with --resume auto",
            "an unreachable --address fails within seconds (a TCP check before ray.init)",
        )
        notes += plan.notes
        if address.loopback:
            notes += (f"{LOOPBACK_ENV}=0 (before import ray) keeps the driver, Ray and MASTER_ADDR on 127.0.0.1",)
        return DryRun(backend=self.name, commands=(worker_command(spec),), env=tuple(sorted(env.items())),
                      resources=spec.resources, world_size=spec.world_size, scaling=spec.scaling,
                      work_dir=spec.work_dir, cwd=spec.cwd, files=(("ray_driver", render_plan(plan)),), notes=notes)

    # ---- submit -------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> JobHandle:
        dry = self.dryrun(spec)
        plan = trainer_plan(spec, spec.backend_options, self.environ)
        address = self._check_address(plan)
        run_dir = self.run_dir(spec.id)
        created = not run_dir.exists()
        if not created:  # a resume: the previous run must be over
            previous = read_json(run_dir / "status.json")
            if previous is not None and not JobState(previous["state"]).is_terminal():
                raise LauncherError(f"experiment {spec.id} still has a {previous['state']} run; cancel it first")
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
        run_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        try:
            write_json_atomic(run_dir / "spec.json", spec_to_dict(spec))
            env = {**self.environ, **dict(dry.env), **driver_env(address)}
            pid, start = self._start_driver(self.driver_command(spec), env, spec.cwd, run_dir / "driver.log")
        except BaseException:
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for name in RUN_FILES:
                    (run_dir / name).unlink(missing_ok=True)
            raise
        return JobHandle(spec.id, self.name, str(pid), (("address", address.text), ("driver_start", str(start)),
                                                        ("run_dir", str(run_dir))))

    # ---- status -------------------------------------------------------------------------------
    def _driver(self, handle: JobHandle) -> tuple[int, int | None]:
        start = handle.get("driver_start")
        return int(handle.job_id or 0), int(start) if start else None

    def status(self, handle: JobHandle) -> JobStatus:
        run_dir = self.run_dir(handle.experiment_id)
        st = read_json(run_dir / "status.json")
        if st is not None and JobState(st["state"]).is_terminal():
            return status_from_json(st)
        pid, start = self._driver(handle)
        alive = bool(pid) and is_alive(pid, start)
        if not alive:
            st = read_json(run_dir / "status.json")  # it may have finished between the two reads
            if not run_dir.exists():
                return JobStatus(JobState.FAILED, reason=f"job folder {run_dir} is gone; the job cannot be tracked")
        return job_status(st, alive, run_dir)

    # ---- logs ---------------------------------------------------------------------------------
    def load_spec(self, exp_id: str) -> JobSpec:
        data = read_json(self.run_dir(exp_id) / "spec.json")
        if data is None:
            raise LauncherError(f"experiment {exp_id} has no Ray job folder in {self.home / 'ray'}")
        return spec_from_dict(data, Options)

    def log_path(self, exp_id: str, rank: int) -> Path:
        return Path(self.load_spec(exp_id).work_dir) / "logs" / f"rank{rank}.log"

    def logs(self, handle: JobHandle, rank: int = 0, follow: bool = False) -> Iterator[str]:
        from launcher.backends.local import follow_file

        path = self.log_path(handle.experiment_id, rank)
        if not follow and not path.exists():
            raise LauncherError(f"no log for rank {rank} yet ({path}); Ray has not started that worker (the driver's "
                                f"log is {self.run_dir(handle.experiment_id) / 'driver.log'})")
        yield from follow_file(path, (lambda: self.status(handle).state.is_terminal()) if follow else None)

    # ---- cancel -------------------------------------------------------------------------------
    def cancel(self, handle: JobHandle) -> None:
        run_dir = self.run_dir(handle.experiment_id)
        if self.status(handle).state.is_terminal():
            return
        (run_dir / "cancel").touch()
        pid, start = self._driver(handle)
        if pid and is_alive(pid, start):
            os.kill(pid, signal.SIGINT)  # Ray Train: abort the run gracefully (workers and placement group go)
            deadline = time.monotonic() + CANCEL_GRACE_S
            while is_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.2)
            if is_alive(pid, start):
                os.killpg(pid, signal.SIGKILL)
        # Ray ends a finished driver's workers asynchronously; whatever of the job is left here is killed.
        deadline = time.monotonic() + LEFTOVER_WAIT_S
        while job_processes(handle.experiment_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        kill_job_processes(handle.experiment_id)
        st = read_json(run_dir / "status.json") or {}
        if not JobState(st.get("state", "pending")).is_terminal():
            write_json_atomic(run_dir / "status.json",
                              {**st, "state": JobState.CANCELLED.value, "reason": "cancelled", "ended": time.time()})

    def list(self) -> list[JobHandle]:
        handles = []
        for run_dir in sorted((self.home / "ray").glob("*")):
            st = read_json(run_dir / "status.json") or {}
            extra = (("address", str(st.get("address") or "")), ("driver_start", str(st.get("driver_start", ""))),
                     ("run_dir", str(run_dir)))
            handles.append(JobHandle(run_dir.name, self.name, str(st.get("driver_pid") or ""), extra))
        return handles


def job_processes(exp_id: str) -> list:
    """This node's processes of the job: those with ``DETLAUNCH_EXPERIMENT_ID=exp_id`` in their environment,
    except Ray's cluster-wide singleton actors, which inherit the environment of the job that happened to
    create them and serve every later job (see ``SHARED_ACTORS``)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == os.getpid() or proc.environ().get(MARKER_ENV) != exp_id:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE or " ".join(proc.cmdline()).startswith(SHARED_ACTORS):
                continue
            found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_job_processes(exp_id: str) -> None:
    import psutil

    for proc in job_processes(exp_id):
        try:
            proc.kill()
        except psutil.Error:
            pass
