"""``build_dataloader``: a DataLoader over a detection dataset with the project's samplers.

Augmentation randomness: transforms draw from torch's RNG. In worker processes torch seeds
each worker from the loader's base seed (drawn from the main process' torch RNG when the
iterator starts); ``seed_worker`` seeds ``random`` and ``numpy`` from it too, so the whole
pipeline is deterministic given the torch RNG state of the main process.
"""
from __future__ import annotations

import logging
import multiprocessing.util
import random
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detcore.data.sampler import InferenceBatchSampler, TrainBatchSampler
from detcore.errors import ConfigError

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def collate(batch: Sequence[tuple[Any, dict]]) -> tuple[list[Any], list[dict]]:
    """``[(image, target), ...] -> ([images], [targets])`` (detectors take lists).

    Images, boxes and masks leave as plain tensors (torchvision's ``ToPureTensor``, as its
    detection references end their pipelines): a ``tv_tensors`` subclass would send every
    operation of the model's box matching and loss through ``__torch_function__``.
    """
    images = [_plain(sample[0]) for sample in batch]
    targets = [{k: _plain(v) for k, v in sample[1].items()} for sample in batch]
    return images, targets


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def share_temp_dir_with_workers() -> None:
    """Create this process' multiprocessing temp dir (``pymp-*``) before workers fork.

    Loader workers pass tensors through sockets in that dir. A worker that finds none makes
    its own, and only removes it on a clean exit: persistent workers ended by the loader's
    shutdown (terminate) left one ``pymp-*`` per worker in ``$TMPDIR`` after every job. Forked
    workers inherit the parent's dir instead, which the parent removes when it exits.
    """
    multiprocessing.util.get_temp_dir()


def aspect_ratio_groups(dataset: Dataset) -> list[int]:
    """0 for samples with width >= height, 1 otherwise; all 0 if the dataset cannot tell cheaply."""
    ratio = getattr(dataset, "get_aspect_ratio", None)
    if ratio is None:
        logger.warning("%s has no get_aspect_ratio(i); batching without aspect-ratio grouping", type(dataset).__name__)
        return [0] * len(dataset)
    return [0 if ratio(i) >= 1.0 else 1 for i in range(len(dataset))]


def build_dataloader(dataset: Dataset, samples_per_gpu: int, workers_per_gpu: int, *, shuffle: bool = True,
                     seed: int = 0, rank: int = 0, world_size: int = 1, aspect_ratio_grouping: bool = True,
                     test_mode: bool = False, pin_memory: bool = False) -> DataLoader:
    """A DataLoader yielding ``([images], [targets])`` batches for one rank.

    Train mode (``test_mode=False``): :class:`TrainBatchSampler` (seeded per epoch, grouped by
    aspect ratio, padded so all ranks get the same number of batches); call
    ``loader.batch_sampler.set_epoch(epoch, skip_batches)`` before each epoch.
    Test mode: :class:`InferenceBatchSampler` (contiguous shard, no padding, order kept).
    ``pin_memory``: page-locked batches, so copies to a GPU can be asynchronous.
    ``len(loader.batch_sampler)`` is the number of batches per epoch of this rank.
    """
    if not isinstance(workers_per_gpu, int) or workers_per_gpu < 0:
        raise ConfigError(f"workers_per_gpu must be an int >= 0, got {workers_per_gpu!r}")
    if workers_per_gpu > 0:
        share_temp_dir_with_workers()
    if test_mode:
        batch_sampler: Any = InferenceBatchSampler(len(dataset), samples_per_gpu, rank=rank, world_size=world_size)
    else:
        groups = aspect_ratio_groups(dataset) if aspect_ratio_grouping else [0] * len(dataset)
        batch_sampler = TrainBatchSampler(groups, samples_per_gpu, shuffle=shuffle, seed=seed, rank=rank,
                                          world_size=world_size)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers_per_gpu, collate_fn=collate,
                      worker_init_fn=seed_worker, persistent_workers=workers_per_gpu > 0,
                      pin_memory=pin_memory)
