"""Batch samplers for distributed detection training and inference.

``TrainBatchSampler``: every rank computes the same global list of batches for an epoch (a
permutation seeded by ``(seed, epoch)``, batched within aspect-ratio groups, batch order
shuffled) and takes every ``world_size``-th batch from ``rank``. Padding policy: nothing is
dropped; a group whose size is not a multiple of the batch size has its last batch filled
with samples from the start of that group, and the batch list is filled up to a multiple
of ``world_size`` by repeating its first batches. So every sample is seen at least once per
epoch, every rank gets the same number of full batches, and the ranks' shards are disjoint
apart from those padding repeats.

``InferenceBatchSampler``: contiguous shards (sizes differ by at most one), order preserved,
no padding, no duplicates; the last batch of a shard may be smaller.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from detcore.errors import ConfigError


def _check_rank(rank: int, world_size: int, batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"samples_per_gpu must be a positive int, got {batch_size!r}")
    if not isinstance(world_size, int) or world_size < 1 or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size) with world_size >= 1; got rank={rank!r}, "
                          f"world_size={world_size!r}")


class TrainBatchSampler(Sampler[list[int]]):
    """Seeded, grouped, padded batches; ``set_epoch(epoch, skip_batches)`` before each epoch.

    ``group_ids[i]`` is the aspect-ratio group of sample ``i`` (all zeros: no grouping).
    """

    def __init__(self, group_ids: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size, batch_size)
        if len(group_ids) == 0:
            raise ConfigError("cannot sample batches from an empty dataset")
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self._skip = 0, 0
        groups = np.unique(self.group_ids, return_counts=True)[1]
        self._num_global = int(sum(math.ceil(n / batch_size) for n in groups))

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """The next ``iter()`` yields this epoch's batches of this rank from ``skip_batches`` on.

        Pass the number of batches this rank has consumed in the epoch (counted by the trainer,
        not by the loader, whose workers prefetch) to resume exactly at the next batch.
        ``skip_batches`` applies to the next iteration only.
        """
        if not 0 <= skip_batches <= len(self):
            raise ConfigError(f"skip_batches must be in [0, {len(self)}] (batches per epoch), got {skip_batches}")
        self.epoch, self._skip = int(epoch), int(skip_batches)

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of ``epoch`` (padded to a multiple of world_size), rank r takes [r::world_size]."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.group_ids)) if self.shuffle else np.arange(len(self.group_ids))
        batches: list[list[int]] = []
        for group in np.unique(self.group_ids):
            idx = order[self.group_ids[order] == group]
            full = math.ceil(len(idx) / self.batch_size) * self.batch_size
            batches.extend(np.resize(idx, full).reshape(-1, self.batch_size).tolist())
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        total = math.ceil(len(batches) / self.world_size) * self.world_size
        return [batches[j % len(batches)] for j in range(total)]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        return iter(self.global_batches(self.epoch)[self.rank::self.world_size][skip:])

    def __len__(self) -> int:
        """Batches per epoch for this rank (the same on every rank)."""
        return math.ceil(self._num_global / self.world_size)


class InferenceBatchSampler(Sampler[list[int]]):
    """This rank's contiguous shard of ``range(num_samples)`` in order, in batches."""

    def __init__(self, num_samples: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size, batch_size)
        per, extra = divmod(num_samples, world_size)
        self.start = rank * per + min(rank, extra)
        self.stop = self.start + per + (1 if rank < extra else 0)
        self.batch_size = batch_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """No-op (inference order does not depend on the epoch); present for a uniform interface."""

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(self.start, self.stop, self.batch_size):
            yield list(range(start, min(start + self.batch_size, self.stop)))

    def __len__(self) -> int:
        return math.ceil((self.stop - self.start) / self.batch_size)
