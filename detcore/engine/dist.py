"""Process-group set-up that works single-process, under torchrun, Slurm and Ray Train.

A launcher may have initialised the default process group already (Ray Train does); then
it is used as it is. Otherwise ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` from
the environment decide (torchrun and the launcher's backends set them).

Devices: ``--device cpu``, ``cuda`` (this rank's GPU: ``LOCAL_RANK`` modulo the GPUs this
process sees, so a Slurm task shown one GPU uses it whatever its local rank) or ``cuda:N``
(GPU N of those visible, on every rank). Asking for CUDA where none is usable is a one-line
:class:`~detcore.errors.ConfigError`. The process-group timeout (NCCL and gloo) is
``dist_params.timeout_min`` in the config, :data:`DEFAULT_TIMEOUT_MIN` when unset; the other
``dist_params`` keys are passed to ``DistributedDataParallel`` (:func:`ddp_options`).
"""
from __future__ import annotations

import gc
import inspect
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from detcore.contract import DIST_TIMEOUT_MIN
from detcore.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_OWN_GROUP = False  # the default group was created by start_process_group (not by Ray Train or a caller)
DEFAULT_TIMEOUT_MIN = DIST_TIMEOUT_MIN  # see detcore.contract


def resolve_device(device: str | None, local_rank: int) -> torch.device:
    """The device this rank trains on (see the module docstring); ConfigError when it cannot be had.

    ``None`` means CUDA when usable, else the CPU. Touches nothing but ``torch.cuda``'s queries.
    """
    text = (device or "").strip().lower()
    if not text:
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ConfigError(f"--device {device or 'cuda'}: no usable CUDA device in this process{shown}; check the "
                          f"driver with nvidia-smi, or train on the CPU with --device cpu")
    if index:
        if int(index) >= count:
            raise ConfigError(f"--device {device}: this process sees {count} GPU(s), numbered 0..{count - 1}; "
                              f"pick one of those (CUDA_VISIBLE_DEVICES renumbers them from 0)")
        return torch.device("cuda", int(index))
    return torch.device("cuda", local_rank % count)


def set_default_threads() -> None:
    """Intra-op threads = the cores this process may use (affinity, cgroup quota, Slurm), shared by
    this node's workers, unless ``OMP_NUM_THREADS`` chose already. Torch's own default counts the
    machine's cores, which oversubscribes a container, a taskset or a launcher's core lease."""
    from detcore.engine.cores import default_threads, usable_cores

    threads = default_threads(os.environ, len(usable_cores()))
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        logger.debug("intra-op threads: %d (the cores this process may use; OMP_NUM_THREADS overrides)", threads)


def device_binding(device: torch.device) -> dict:
    """``init_process_group``'s ``device_id`` for a rank on a CUDA device, else nothing.

    Bound to its GPU, a rank forms its NCCL communicator inside ``init_process_group`` instead
    of at the first collective, so a broken NCCL set-up fails at start (torch's documented way
    to see NCCL initialisation errors early) instead of hanging at the first barrier. gloo (the
    CPU) is left as it was, and so is a torch whose ``init_process_group`` lacks the parameter.
    """
    if device.type != "cuda":
        return {}
    params = inspect.signature(dist.init_process_group).parameters.values()
    if any(p.name == "device_id" or p.kind is p.VAR_KEYWORD for p in params):
        return {"device_id": device}
    return {}


def start_process_group(backend: str, device: torch.device, timeout: timedelta, store: dist.Store | None = None,
                        rank: int = -1, world_size: int = -1) -> None:
    """Create the default process group on ``backend`` with this rank's ``device`` bound
    (:func:`device_binding`); ``store``, ``rank`` and ``world_size`` as ``init_process_group``
    takes them (without a store: the environment's ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/
    ``WORLD_SIZE``). :func:`shutdown_distributed` ends the group."""
    global _OWN_GROUP
    kwargs: dict = {"backend": backend, "timeout": timeout, **device_binding(device)}
    if store is not None:
        kwargs.update(store=store, rank=rank, world_size=world_size)
    dist.init_process_group(**kwargs)
    _OWN_GROUP = True


def init_distributed(device: str | None = None, timeout_min: float | None = None) -> DistInfo:
    """Join (or create) the default process group; pick and select the device for this rank.

    The device is chosen and made current *before* the group exists, and passed to it
    (:func:`device_binding`), so NCCL binds each rank to its own GPU and forms its communicator
    at start. ``timeout_min`` bounds every collective (default :data:`DEFAULT_TIMEOUT_MIN`).
    """
    set_default_threads()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    elif int(os.environ.get("WORLD_SIZE", 1)) > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = timedelta(minutes=float(timeout_min if timeout_min is not None else DEFAULT_TIMEOUT_MIN))
        store = attempt_store() or bound_store(timeout)
        start_process_group(backend, dev, timeout, store, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        rank, world = dist.get_rank(), dist.get_world_size()
        logger.info("joined process group: backend=%s rank=%d world=%d master=%s:%s device=%s timeout=%s", backend,
                    rank, world, os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"), dev, timeout)
    else:
        rank, world = 0, 1
    return DistInfo(rank, world, local_rank, dev)


DDP_KEYS = {"bucket_cap_mb": (int, float), "gradient_as_bucket_view": bool, "static_graph": bool}


def ddp_options(dist_params: dict | None) -> dict:
    """``DistributedDataParallel`` keyword arguments from ``dist_params`` (``bucket_cap_mb``,
    ``gradient_as_bucket_view``, ``static_graph``; torch's defaults when unset). ``timeout_min``
    is the process group's; ``backend`` (MMDetection's ``dist_params``) is ignored: the device
    picks nccl or gloo. Any other key is a :class:`ConfigError` naming the allowed ones."""
    params = dict(dist_params or {})
    unknown = sorted(set(params) - set(DDP_KEYS) - {"timeout_min", "backend"})
    if unknown:
        raise ConfigError(f"dist_params: unknown option(s) {unknown}; allowed: timeout_min, backend, "
                          f"{', '.join(DDP_KEYS)}")
    out = {}
    for key, kind in DDP_KEYS.items():
        if key not in params:
            continue
        value = params[key]
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind) or \
                (key == "bucket_cap_mb" and value <= 0):
            want = "true or false" if kind is bool else "a positive number of megabytes"
            raise ConfigError(f"dist_params.{key} must be {want}, got {value!r}")
        out[key] = value
    return out


def ending(backend: str, failed: bool) -> str:
    """How a process ends its own group: ``"abort"`` for an NCCL group when this process failed,
    else ``"destroy"``.

    A rank that fails alone cannot finalize NCCL communicators with peers that are gone or stuck
    in a collective (``destroy_process_group`` may hang there); aborting them is local. gloo keeps
    ``destroy`` (see :func:`shutdown_distributed`), and so does a run that finished, on any backend.
    """
    return "abort" if failed and backend == "nccl" else "destroy"


def shutdown_distributed(failed: bool = False) -> None:
    """End the process group :func:`init_distributed` created, while the interpreter is whole.

    ``failed``: this process is ending on an error (perhaps alone); its NCCL group is then
    aborted instead of destroyed (:func:`ending`, :func:`abort_process_group`).

    A process that exits with its gloo group alive can abort in this torch release (SIGABRT,
    "terminate called without an active exception"): gloo's threads still hold async work
    whose tensors are freed during interpreter finalization (pytorch/pytorch#179291). Under
    Slurm that abort fails the whole job after a finished run. A group someone else created
    (Ray Train's) is left to its owner. The garbage collection first frees the finished run's
    objects that hold the group (the trainer and its hooks refer to each other, and the trainer
    holds the DDP model, whose reducer holds the group); otherwise those free it only during
    finalization, where the abort happens all the same.
    """
    global _OWN_GROUP
    if _OWN_GROUP and dist.is_initialized():
        if ending(dist.get_backend(), failed) == "abort":
            abort_process_group()
        else:
            gc.collect()
            dist.destroy_process_group()
    _OWN_GROUP = False


def abort_process_group() -> None:
    """Abort every NCCL communicator of the default group without waiting for peers, and forget it.

    torch's ``_abort_process_group`` (torch 2.5 and later: ``ncclCommAbort`` under NCCL's group
    semantics, so several communicators cannot deadlock each other); an older torch has only the
    NCCL backend's own ``abort``, after which the group is left to the ending process. An abort
    that fails (the NCCL watchdog may have aborted the communicator already) is logged: the
    process is ending on an error anyway.
    """
    c10d = dist.distributed_c10d
    try:
        if hasattr(c10d, "_abort_process_group"):
            c10d._abort_process_group()
        else:
            backend = c10d._get_default_group()._get_backend(torch.device("cuda"))
            (getattr(backend, "abort", None) or backend._abort)()
    except Exception as exc:  # noqa: BLE001 - whatever the backend raises, the process is ending
        logger.warning("could not abort the process group: %s", exc)


def attempt_store() -> dist.Store | None:
    """Under torchrun, the agent's store namespaced by restart attempt (None elsewhere).

    torchrun keeps one key-value store for the whole job and, in this torch release, hands a
    restarted worker group the same store with the previous attempt's keys still in it, so the
    new gloo group can read stale peer addresses and fail ("Connection refused") or hang.
    Prefixing the keys with the attempt number (what older torch releases did themselves)
    gives every attempt a clean rendezvous.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                           int(os.environ["WORLD_SIZE"]), is_master=False, timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"/worker/attempt_{attempt}", client)


def bound_store(timeout: timedelta) -> dist.Store:
    """The workers' store at ``MASTER_ADDR:MASTER_PORT`` when no agent serves one (Slurm tasks, ranks
    started by hand): what ``init_method="env://"`` makes, except that rank 0's server listens only on
    the address ``MASTER_ADDR`` names (:func:`detcore.net.store_bind_address`; torch's own binds
    every interface). With a loopback ``MASTER_ADDR`` gloo's sockets stay on loopback too.
    """
    from detcore.net import is_loopback, listening_socket, loopback_interface, resolve, store_bind_address

    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if is_loopback(host):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback_interface())
    fd = None
    if rank == 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE") or 0)
        bind = store_bind_address(host, resolve(host), multi_host=not local or local < world)
        if bind is not None:
            fd = listening_socket(bind, port)
        else:
            logger.info("MASTER_ADDR %s names this machine by a loopback address while ranks run on other machines "
                        "too: the store listens on every interface", host)
    return dist.TCPStore(host, port, world, is_master=rank == 0, timeout=timeout, multi_tenant=True,
                         master_listen_fd=fd)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class PendingMean:
    """The result of :func:`all_reduce_mean_async`; ``wait()`` gives the averaged dict."""

    def __init__(self, keys: list[str], tensor: torch.Tensor | None, work, values: dict[str, float]) -> None:
        self._keys, self._tensor, self._work, self._values = keys, tensor, work, values

    def wait(self) -> dict[str, float]:
        if self._tensor is None:
            return self._values
        if self._work is None:
            return dict(zip(self._keys, self._tensor.tolist()))
        self._work.wait()
        return dict(zip(self._keys, (self._tensor / dist.get_world_size()).tolist()))


def all_reduce_mean_async(values: dict[str, float | torch.Tensor], device: torch.device) -> PendingMean:
    """Start averaging ``values`` (numbers or 0-d tensors, e.g. detached losses) over all ranks.

    Returns at once and never waits for the device: tensors are stacked where they are, so
    ``wait()`` makes the one host sync of the step (``tolist``) instead of one ``.item()`` per
    value. The trainer starts it between forward and backward: the collective joins the queue
    before DDP's gradient buckets, so the ranks meet once per step (in backward), not twice.
    """
    if not values:
        return PendingMean([], None, None, {})
    on_device = sorted(k for k, v in values.items() if torch.is_tensor(v))
    numbers = sorted(k for k in values if k not in on_device)
    parts = [torch.stack([values[k].detach().reshape(()).to(device, torch.float64) for k in on_device])] \
        if on_device else []
    if numbers:
        host = torch.tensor([float(values[k]) for k in numbers], dtype=torch.float64)
        if device.type == "cuda":  # a pinned copy does not wait for the queued forward pass
            host = host.pin_memory().to(device, non_blocking=True)
        parts.append(host)
    keys = on_device + numbers
    t = torch.cat(parts)
    if not is_distributed():
        return PendingMean(keys, t, None, {})
    return PendingMean(keys, t, dist.all_reduce(t, async_op=True), {})


def all_reduce_max(value: float, device: torch.device) -> float:
    """The largest ``value`` over all ranks (the value itself when not distributed)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def barrier() -> None:
    """Wait for every rank; under NCCL on this rank's current GPU (no device guess, no warning)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


class MainRankFilter(logging.Filter):
    """Lets INFO and below through on rank 0 only; warnings and errors pass on every rank."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or get_rank() == 0
