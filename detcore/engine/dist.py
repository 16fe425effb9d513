"""Process-group set-up that works single-process, under torchrun, Slurm and Ray Train.

A launcher may have initialised the default process group already (Ray Train does); then
it is used as it is. Otherwise ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` from
the environment decide (torchrun and the launcher's backends set them).
"""
from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

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


_OWN_GROUP = False  # the default group was created by init_distributed (not by Ray Train or a caller)


def init_distributed(device: str | None = None) -> DistInfo:
    """Join (or create) the default process group; pick the device for this rank."""
    global _OWN_GROUP
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    elif int(os.environ.get("WORLD_SIZE", 1)) > 1:
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        store = attempt_store()
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]),
                                    world_size=int(os.environ["WORLD_SIZE"]))
        _OWN_GROUP = True
        rank, world = dist.get_rank(), dist.get_world_size()
        logger.info("joined process group: backend=%s rank=%d world=%d master=%s:%s", backend, rank, world,
                    os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"))
    else:
        rank, world = 0, 1
    dev = torch.device(f"cuda:{local_rank % max(1, torch.cuda.device_count())}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    return DistInfo(rank, world, local_rank, dev)


def shutdown_distributed() -> None:
    """Destroy the process group :func:`init_distributed` created, while the interpreter is whole.

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
        gc.collect()
        dist.destroy_process_group()
    _OWN_GROUP = False


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
        self._work.wait()
        return dict(zip(self._keys, (self._tensor / dist.get_world_size()).tolist()))


def all_reduce_mean_async(values: dict[str, float], device: torch.device) -> PendingMean:
    """Start averaging ``values`` over all ranks and return at once.

    The trainer starts it between forward and backward: the collective joins the queue before
    DDP's gradient buckets, so the ranks meet once per step (in backward) instead of twice.
    """
    if not is_distributed() or not values:
        return PendingMean([], None, None, values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    return PendingMean(keys, t, dist.all_reduce(t, async_op=True), values)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class MainRankFilter(logging.Filter):
    """Lets INFO and below through on rank 0 only; warnings and errors pass on every rank."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or get_rank() == 0
