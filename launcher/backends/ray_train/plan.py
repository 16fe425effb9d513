"""What a Ray job is, as plain data: the options, the trainer plan and the rules over them (all pure).

:func:`trainer_plan` turns a :class:`~launcher.spec.JobSpec` into a :class:`TrainerPlan`: the
arguments of Ray Train's ``ScalingConfig``, ``RunConfig``, ``FailureConfig``,
``CheckpointConfig`` and ``TorchConfig``, the ``ray.init`` call and what every Ray Train
worker runs (:class:`WorkerPlan`). The dry run prints :func:`render_plan`; the detached
driver (:mod:`launcher.backends.ray_train.driver`) builds the real Ray objects from the same plan,
so what is printed is what runs. Nothing here imports Ray, starts a process or opens a socket.

Also here, because they are policy over plain data: address parsing and the loopback rule
(:func:`parse_address`, :func:`driver_env`). Restarts, ports and failure reasons come from the
facts the workers record (:mod:`launcher.runtime.facts`), as for every backend.
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from detcore.contract import BACKEND_ENV, EXPERIMENT_ENV as MARKER_ENV, logger_settings_env
from detcore.net import is_loopback
from launcher.errors import LauncherError
from launcher.runtime.command import cpus_per_worker, import_path_env, log_dir, run_dir, worker_args
from launcher.spec import JobSpec

# Ray rewrites 127.0.0.1 to the machine's routable IP unless this is 0 before `import ray` (see
# cluster/ray/start.sh); a client that rewrites connects where nothing listens and hangs for minutes.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
DEFAULT_DASHBOARD_PORT = 8265
DEFAULT_CLIENT_PORT = 10001
CHECKPOINTS_TO_KEEP = 2
REPORT_POLL_S = 2.0


@dataclass(frozen=True)
class RayOptions:
    """Ray-backend options (``--address --gpus-per-worker --max-failures --storage``).

    ``address``: ``auto`` (``RAY_ADDRESS``, else the cluster last started on this machine),
    ``HOST:PORT`` (the head's GCS port, for drivers on a cluster node), ``ray://HOST:PORT``
    (Ray Client) or ``http(s)://HOST:PORT`` (the dashboard: the driver is submitted as a Ray job).
    ``gpus_per_worker``: None means one GPU per worker when ``--gpus`` was given, else none.
    ``max_failures``: None means the job's ``--max-restarts``. ``storage``: Ray Train's ``storage_path``
    (default ``WORK_DIR/ray``), reachable by every worker. The number of workers and CPUs per worker
    are the generic ``Resources`` (``--workers`` is ``--nproc``).
    """

    address: str = "auto"
    gpus_per_worker: float | None = None
    max_failures: int | None = None
    storage: str | None = None

    def __post_init__(self) -> None:
        parse_address(self.address)
        g = self.gpus_per_worker
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or g < 0):
            raise LauncherError(f"--gpus-per-worker must be a number >= 0, got {g!r}")
        m = self.max_failures
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < -1):
            raise LauncherError(f"--max-failures must be an integer >= 0 (or -1 for unlimited), got {m!r}")
        if self.storage is not None and "://" not in self.storage and not os.path.isabs(self.storage):
            raise LauncherError(f"--storage must be an absolute path or a URI such as s3://bucket/dir, "
                                f"got {self.storage!r}")


@dataclass(frozen=True)
class Address:
    """A parsed ``--address``: ``auto``, or a host and port, reached directly, through Ray Client or (``jobs``,
    an ``http(s)://`` dashboard address) through Ray's job-submission API."""

    text: str
    host: str | None = None
    port: int | None = None
    client: bool = False
    jobs: bool = False

    @property
    def is_auto(self) -> bool:
        return self.host is None

    @property
    def loopback(self) -> bool:
        return self.host is not None and is_loopback(self.host)


def parse_address(text: str) -> Address:
    """``auto``, ``HOST:PORT`` or ``ray://HOST[:PORT]``; a LauncherError naming the forms otherwise."""
    if text == "auto":
        return Address(text)
    scheme = next((s for s in ("ray://", "http://", "https://") if text.startswith(s)), "")
    client, jobs = scheme == "ray://", scheme.startswith("http")
    rest = text[len(scheme):].rstrip("/") if jobs else text[len(scheme):]
    m = re.fullmatch(r"\[?([A-Za-z0-9_.:-]+?)\]?(?::(\d{1,5}))?", rest)
    default = DEFAULT_CLIENT_PORT if client else (DEFAULT_DASHBOARD_PORT if jobs else None)
    port = int(m.group(2)) if m and m.group(2) else default
    if not m or port is None or not 0 < port < 65536 or "://" in rest:
        raise LauncherError(f"--address {text!r}: expected auto, HOST:PORT (the head's GCS port, e.g. "
                            f"127.0.0.1:6379), ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001) or "
                            f"http://HOST:PORT (the dashboard's job API, e.g. http://10.0.0.5:8265)")
    return Address(text.rstrip("/") if jobs else text, m.group(1), port, client, jobs)


def resolve_address(text: str, environ: Mapping[str, str], current_cluster: Callable[[], str | None]) -> Address:
    """``auto`` becomes ``RAY_ADDRESS`` or what ``current_cluster()`` reads from Ray's ``ray_current_cluster``
    file (what ``ray.init(address="auto")`` would pick; the file is read only then); other addresses are
    returned parsed."""
    addr = parse_address(text)
    if not addr.is_auto:
        return addr
    found = (environ.get("RAY_ADDRESS") or "").strip() or (current_cluster() or "").strip()
    if not found or found == "auto":
        raise LauncherError(f"--address auto: no Ray cluster found on this machine (RAY_ADDRESS is unset and "
                            f"{ray_address_file(environ)} is missing); start one with cluster/ray/start.sh or "
                            f"pass --address HOST:PORT")
    return parse_address(found)


def ray_address_file(environ: Mapping[str, str]) -> str:
    """Where Ray records the cluster last started on this machine: ``$RAY_TMPDIR``, else ``$TMPDIR`` (Linux),
    else ``/tmp``, then ``ray/ray_current_cluster``. The rule of ``ray._common.utils.get_ray_address_file``,
    restated because importing Ray costs the CLI a second."""
    root = environ.get("RAY_TMPDIR") or (environ.get("TMPDIR") if sys.platform.startswith("linux") else None) or "/tmp"
    return os.path.join(root, "ray", "ray_current_cluster")


def address_file_problem(file: os.stat_result, folder: os.stat_result, uid: int) -> str | None:
    """Why the address file (``lstat`` of it and of its folder) cannot be trusted to choose where this user's
    jobs go, or None (pure). Ray's protocol has no authentication and ships pickles, so the file must be
    a regular file of this user that only this user can write, in a folder of this user or root that no
    one else can write into, or only with the sticky bit set (then others cannot replace this user's
    file). Ray itself makes its temp folder world-writable without the sticky bit."""
    if stat.S_ISLNK(file.st_mode) or not stat.S_ISREG(file.st_mode):
        return "is not a regular file"
    if file.st_uid != uid:
        return f"belongs to uid {file.st_uid}, not to you (uid {uid})"
    if file.st_mode & 0o022:
        return f"can be written by others (mode {stat.S_IMODE(file.st_mode):o})"
    if stat.S_ISLNK(folder.st_mode) or not stat.S_ISDIR(folder.st_mode):
        return "is not in a real folder (its folder is a symlink)"
    if folder.st_uid not in (uid, 0):
        return f"is in a folder of uid {folder.st_uid}"
    if folder.st_mode & 0o022 and not folder.st_mode & stat.S_ISVTX:
        return (f"is in a folder others can write without the sticky bit (mode {stat.S_IMODE(folder.st_mode):o}): "
                f"anyone could replace it")
    return None


def driver_env(address: Address) -> dict[str, str]:
    """Environment the driver needs before ``import ray``: keep a loopback head on loopback."""
    env = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    if address.loopback:
        env[LOOPBACK_ENV] = "0"
    return env


@dataclass(frozen=True)
class WorkerPlan:
    """What every Ray Train worker runs, in its own process: ``MODULE.main(ARGS)`` (detcore's CLI)
    with ``cwd``, its output appended to ``LOG_DIR/rank{R}.log``, its start and end facts in
    ``run_dir``, and ``--resume auto`` on a restart (see :mod:`launcher.backends.ray_train.train_loop`)."""

    module: str
    args: tuple[str, ...]
    cwd: str
    work_dir: str
    log_dir: str
    run_dir: str
    hang_timeout_s: float = 0.0
    report_poll_s: float = REPORT_POLL_S

    def to_config(self) -> dict[str, Any]:
        """The ``train_loop_config`` handed to Ray."""
        d = dataclasses.asdict(self)
        d["args"] = list(self.args)
        return d

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WorkerPlan:
        d = dict(config)
        d["args"] = tuple(d["args"])
        return cls(**d)


@dataclass(frozen=True)
class TrainerPlan:
    """Everything the driver passes to Ray, as plain values."""

    address: str
    run_name: str
    storage_path: str
    num_workers: int
    use_gpu: bool
    resources_per_worker: tuple[tuple[str, float], ...]
    placement_strategy: str
    max_failures: int
    checkpoints_to_keep: int
    torch_backend: str
    timeout_s: int
    env_vars: tuple[tuple[str, str], ...]
    worker: WorkerPlan
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (``plan.json``: the driver executes the plan ``submit`` computed)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainerPlan:
        d = dict(data)
        d["resources_per_worker"] = tuple((str(k), v) for k, v in d["resources_per_worker"])
        d["env_vars"] = tuple((str(k), str(v)) for k, v in d["env_vars"])
        d["notes"] = tuple(d.get("notes") or ())
        d["worker"] = WorkerPlan.from_config(d["worker"])
        return cls(**d)


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def trainer_plan(spec: JobSpec, options: RayOptions | None, environ: Mapping[str, str]) -> TrainerPlan:
    """The Ray Train set-up for ``spec`` (pure: ``environ`` only feeds the workers' ``PYTHONPATH``)."""
    opts = options or RayOptions()
    r = spec.resources
    if spec.slots:
        raise LauncherError(f"--max-parallel {spec.slots.size}: the ray backend does not limit a sweep's parallel "
                            f"experiments; Ray starts each one when the cluster has room for its workers (drop "
                            f"--max-parallel, or use --backend local or slurm)")
    gpus = opts.gpus_per_worker if opts.gpus_per_worker is not None else (1 if r.gpus else 0)
    backend, notes = torch_backend(gpus, spec.world_size)
    per_worker: dict[str, float] = {"CPU": _number(cpus_per_worker(spec))}
    if gpus:
        per_worker["GPU"] = _number(gpus)
    if r.mem_gb:
        per_worker["memory"] = int(r.mem_gb * 2 ** 30 / max(1, r.nproc))
    worker = WorkerPlan(module=spec.worker_module, args=worker_args(spec, device="cuda" if gpus else "cpu"),
                        cwd=spec.cwd, work_dir=spec.work_dir, log_dir=log_dir(spec), run_dir=run_dir(spec),
                        hang_timeout_s=spec.hang_timeout_s)
    # Ray workers do not inherit this shell: pass on the loggers' settings (contract.LOGGER_SETTINGS_ENV)
    env = {**logger_settings_env(environ), **import_path_env(environ), "PYTHONUNBUFFERED": "1", MARKER_ENV: spec.id,
           BACKEND_ENV: "ray"}
    return TrainerPlan(
        address=opts.address, run_name=f"detlaunch-{spec.id}",
        storage_path=opts.storage or os.path.join(spec.work_dir, "ray"),
        num_workers=spec.world_size, use_gpu=bool(gpus), resources_per_worker=tuple(sorted(per_worker.items())),
        placement_strategy="SPREAD" if r.nodes > 1 else "PACK",
        max_failures=opts.max_failures if opts.max_failures is not None else spec.max_restarts,
        checkpoints_to_keep=CHECKPOINTS_TO_KEEP, torch_backend=backend, timeout_s=max(1, round(spec.dist_timeout_min * 60)),
        env_vars=tuple(sorted(env.items())), worker=worker, notes=notes)


def timeout_note(plan: TrainerPlan) -> str:
    return (f"process-group timeout: {plan.timeout_s / 60:g} min (dist_params.timeout_min) for every collective, "
            f"through Ray Train's TorchConfig(timeout_s)")


def cpu_note(spec: JobSpec) -> str:
    """Why each worker asks for the CPUs it does (the dry run's line)."""
    n = cpus_per_worker(spec)
    if spec.resources.cpus_per_task is not None:
        return f"CPUs per worker: {n} (--cpus-per-worker)"
    return (f"CPUs per worker: {n} (1 for the worker + {spec.loader_workers} for its DataLoader processes, "
            f"data.workers_per_gpu; --cpus-per-worker to change)")


def torch_backend(gpus_per_worker: float, world_size: int) -> tuple[str, tuple[str, ...]]:
    """The process-group backend for workers with ``gpus_per_worker`` GPUs each, and why.

    NCCL refuses two ranks on one GPU, which is what a fraction (``--gpus-per-worker 0.5``) lets
    Ray do; such jobs use gloo (slower collectives; the tensors stay on the GPU). More than one
    GPU per worker is refused: a detcore rank trains on one device.
    """
    if not gpus_per_worker:
        return "gloo", ()
    if gpus_per_worker > 1:
        raise LauncherError(f"--gpus-per-worker {gpus_per_worker:g}: a detcore rank trains on one GPU; use "
                            f"--gpus-per-worker 1 (or a fraction to share GPUs) and more workers instead")
    if gpus_per_worker < 1 and world_size > 1:
        return "gloo", (f"--gpus-per-worker {gpus_per_worker:g}: Ray may place several ranks on one GPU, which "
                        f"NCCL refuses, so the process group uses gloo (slower gradient all-reduce); use "
                        f"--gpus-per-worker 1 for NCCL",)
    return "nccl", ()


def render_plan(plan: TrainerPlan) -> str:
    """The driver's Ray calls as Python text (what ``--dry-run`` shows under ``file ray_driver``)."""
    res = "{" + ", ".join(f"{k!r}: {v!r}" for k, v in plan.resources_per_worker) + "}"
    env = "{" + ", ".join(f"{k!r}: {v!r}" for k, v in plan.env_vars) + "}"
    w = plan.worker
    return "\n".join([
        f"ray.init(address={plan.address!r}, runtime_env={{'env_vars': {env}}})",
        "TorchTrainer(",
        "    train_loop_per_worker=launcher.backends.ray_train.train_loop.train_loop_per_worker,",
        f"    train_loop_config={{'module': {w.module!r}, 'cwd': {w.cwd!r}, 'work_dir': {w.work_dir!r}, "
        f"'log_dir': {w.log_dir!r}, "
        f"'run_dir': {w.run_dir!r}, 'hang_timeout_s': {w.hang_timeout_s!r}, 'report_poll_s': {w.report_poll_s!r}, "
        f"'args': [worker command]}},",
        f"    scaling_config=ScalingConfig(num_workers={plan.num_workers}, use_gpu={plan.use_gpu}, "
        f"resources_per_worker={res}, placement_strategy={plan.placement_strategy!r}),",
        f"    run_config=RunConfig(name={plan.run_name!r}, storage_path={plan.storage_path!r},",
        f"        failure_config=FailureConfig(max_failures={plan.max_failures}),",
        f"        checkpoint_config=CheckpointConfig(num_to_keep={plan.checkpoints_to_keep})),",
        f"    torch_config=BoundTorchConfig(backend={plan.torch_backend!r}, timeout_s={plan.timeout_s}),"
        f"  # rank 0's store on MASTER_ADDR only",
        ").fit()",
    ])
