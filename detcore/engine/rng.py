"""Random state per rank: seeding, saving every rank's state in a checkpoint, restoring it.

Each rank seeds its global generators with :func:`rank_seed` (so ranks draw different RPN/ROI
sampling permutations; data order and augmentations have their own explicit seeds). A
checkpoint holds one state per rank (``rng_per_rank``, gathered to rank 0 by
:func:`gather_rng_states`) and rank 0's again under ``rng`` for older readers. A state holds
Python's, NumPy's and torch's CPU generator and, on a GPU, the generator of *this rank's* device
only, so it restores on a machine that shows another number of GPUs.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)
RANK_STRIDE = 1_000_003  # rank r of a run seeded s uses s + r * RANK_STRIDE


def rank_seed(seed: int, rank: int) -> int:
    """The global-generator seed of ``rank`` in a run seeded ``seed`` (rank 0 keeps ``seed``)."""
    return (int(seed) + int(rank) * RANK_STRIDE) % 2 ** 63


def configure_determinism(deterministic: bool) -> None:
    """What ``--deterministic`` sets, before CUDA is used: deterministic algorithms (warning, not
    failing, on an op that has none), no cuDNN autotuning, deterministic cuDNN kernels and the
    cuBLAS workspace setting that makes its GEMMs reproducible. Known nondeterministic CUDA ops
    of the detectors are listed in docs/training.md ("Determinism on CUDA")."""
    if not deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def rng_state(device: torch.device | None = None) -> dict:
    """This process's generator states; with a CUDA ``device``, that device's generator too."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {"python": random.getstate(),
                             "numpy": {"key": torch.from_numpy(np_state[1].copy()), "pos": np_state[2],
                                       "has_gauss": np_state[3], "cached": np_state[4]},
                             "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore :func:`rng_state`'s output. The CUDA state goes to ``device`` only; an old
    checkpoint's per-device list gives ``device`` its own entry when it has one (a run saved while
    seeing 8 GPUs resumes under 1 without an ``IndexError``)."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy(), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or device is None or device.type != "cuda":
        return
    if isinstance(cuda, (list, tuple)):
        index = device.index or 0
        if index >= len(cuda):
            logger.warning("the checkpoint holds CUDA generator states of %d device(s), none for %s; its generator "
                           "keeps its seed", len(cuda), device)
            return
        cuda = cuda[index]
    torch.cuda.set_rng_state(cuda.cpu(), device)


def gather_rng_states(device: torch.device | None) -> list[dict] | None:
    """Every rank's :func:`rng_state`, in rank order, on rank 0 (None on the others). Collective."""
    mine = rng_state(device)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    parts: list[Any] = [None] * dist.get_world_size()
    # as NumPy arrays: tensors inside all_gather_object fail to unpickle in this torch release
    dist.all_gather_object(parts, _map_tensors(mine, lambda t: t.numpy()))
    if dist.get_rank() != 0:
        return None
    return [_map_tensors(p, lambda a: torch.from_numpy(a), np.ndarray) for p in parts]


def _map_tensors(obj: Any, fn, kind: type = torch.Tensor) -> Any:
    if isinstance(obj, kind):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn, kind) for k, v in obj.items()}
    return obj


def restore_rank_state(ckpt: dict, rank: int, world_size: int, device: torch.device | None) -> bool:
    """Restore this rank's generators from a checkpoint saved at the same world size; False when
    the world size differs (the generators then keep this run's seeds)."""
    if int(ckpt.get("meta", {}).get("world_size", 1)) != world_size:
        return False
    states = ckpt.get("rng_per_rank")
    if states is not None and rank < len(states):
        set_rng_state(states[rank], device)
    else:  # a checkpoint of an older release: rank 0's state only
        set_rng_state(ckpt["rng"], device)
    return True


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
