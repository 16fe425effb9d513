"""Ray Train's process group, with rank 0's store listening only on the address Ray gave it.

Ray Train sets ``MASTER_ADDR`` to worker 0's node address and calls ``init_process_group("env://")``,
whose rank-0 TCPStore listens on every interface. :class:`BoundTorchConfig` is Ray's
``TorchConfig`` with one change: each worker joins through :func:`setup_process_group`, which
builds the same store with detcore's :func:`~detcore.engine.dist.bound_store` (rank 0 binds the
address ``MASTER_ADDR`` names: 127.0.0.1 on a loopback head, the node's address on a cluster).
Everything else (backend choice, addresses, environment, shutdown) stays Ray's own.

Imported by the driver and, through Ray, by the controller and the workers (never by the CLI: it
imports Ray and torch).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import ray.train.torch.config as ray_torch_config
from ray.train.torch import TorchConfig

_RAY_SETUP = ray_torch_config._setup_torch_process_group


def setup_process_group(backend: str, world_rank: int, world_size: int, init_method: str,
                        timeout_s: int = 1800) -> None:
    """What Ray's ``_setup_torch_process_group`` does for gloo and NCCL over ``env://``, with a bound store."""
    if init_method != "env://" or backend not in ("gloo", "nccl"):
        return _RAY_SETUP(backend, world_rank, world_size, init_method, timeout_s)
    import torch.distributed as dist

    from detcore.engine.dist import bound_store

    if backend == "nccl" and not {"TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCH_NCCL_BLOCKING_WAIT"} & set(os.environ):
        os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"  # as Ray: fail on a timed-out collective
    timeout = timedelta(seconds=timeout_s)
    dist.init_process_group(backend=backend, store=bound_store(timeout), rank=world_rank, world_size=world_size,
                            timeout=timeout)
    return None


class BoundTorchBackend(ray_torch_config._TorchBackend):
    """Ray's torch backend, joining each worker through :func:`setup_process_group`."""

    def on_start(self, worker_group, backend_config) -> None:
        ray_torch_config._setup_torch_process_group = setup_process_group  # looked up by name in on_start
        try:
            super().on_start(worker_group, backend_config)
        finally:
            ray_torch_config._setup_torch_process_group = _RAY_SETUP


@dataclass
class BoundTorchConfig(TorchConfig):
    """``TorchConfig`` whose rank-0 store listens only on ``MASTER_ADDR``'s address."""

    @property
    def backend_cls(self):
        return BoundTorchBackend
