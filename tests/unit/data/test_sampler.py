"""Samplers and loaders: disjoint padded shards, exact resume, grouping, inference shards."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from detcore.data import build_dataloader, collate
from detcore.data.sampler import InferenceBatchSampler, TrainBatchSampler
from detcore.errors import ConfigError


class Toy(Dataset):
    """Sample i is (i, {"noise": numpy random draw}); every third sample is portrait."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def get_aspect_ratio(self, i: int) -> float:
        return 0.75 if i % 3 == 0 else 1.5

    def __getitem__(self, i: int):
        return i, {"noise": float(np.random.random()), "torch": float(torch.rand(()))}


def _rank_batches(n: int, batch: int, world: int, epoch: int = 0, groups=None) -> list[list[list[int]]]:
    groups = [0] * n if groups is None else groups
    out = []
    for rank in range(world):
        s = TrainBatchSampler(groups, batch, seed=1, rank=rank, world_size=world)
        s.set_epoch(epoch)
        out.append(list(s))
        assert len(out[-1]) == len(s)
    return out


def test_shards_are_disjoint_and_cover_the_epoch():
    ranks = _rank_batches(24, 3, 2)
    flat = [[i for b in batches for i in b] for batches in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert not set(flat[0]) & set(flat[1]) and sorted(flat[0] + flat[1]) == list(range(24))


def test_padding_gives_equal_full_batches_and_sees_everything():
    groups = [0 if i % 3 else 1 for i in range(23)]
    ranks = _rank_batches(23, 4, 3, groups=groups)
    assert len({len(r) for r in ranks}) == 1
    flat = [i for r in ranks for b in r for i in b]
    assert set(flat) == set(range(23))
    assert len(flat) - 23 < 4 * 2 + 4 * 3  # repeats only from padding groups and ranks
    for r in ranks:
        for b in r:
            assert len(b) == 4 and len({groups[i] for i in b}) == 1  # one aspect-ratio group per batch


def test_epochs_reshuffle_and_seed_reproduces():
    a, b = _rank_batches(30, 2, 2, epoch=0), _rank_batches(30, 2, 2, epoch=1)
    assert a != b and a == _rank_batches(30, 2, 2, epoch=0)


def test_set_epoch_skip_resumes_with_the_same_next_batch():
    s = TrainBatchSampler([0, 1] * 10, 2, seed=5, rank=1, world_size=2)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, skip_batches=2)
    assert list(s) == full[2:]
    assert list(s) == full  # the skip applies to one iteration only
    with pytest.raises(ConfigError, match="skip_batches"):
        s.set_epoch(3, skip_batches=len(s) + 1)


def test_inference_shards_contiguous_without_duplicates():
    shards = [list(InferenceBatchSampler(7, 2, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[[0, 1], [2]], [[3, 4]], [[5, 6]]]
    assert [len(InferenceBatchSampler(7, 2, rank=r, world_size=3)) for r in range(3)] == [2, 1, 1]
    assert list(InferenceBatchSampler(1, 4, rank=1, world_size=2)) == []


def test_loader_resume_in_workers_and_grouping():
    ds = Toy(18)
    loader = build_dataloader(ds, 3, 1, seed=2)
    assert len(loader.batch_sampler) == 6 and loader.persistent_workers
    loader.batch_sampler.set_epoch(1)
    first = [ids for ids, _ in loader]
    loader.batch_sampler.set_epoch(1, skip_batches=4)
    assert [ids for ids, _ in loader] == first[4:]
    for ids in first:
        assert len({ds.get_aspect_ratio(i) for i in ids}) == 1


def test_worker_augmentation_deterministic_given_torch_seed():
    def run(seed: int) -> list:
        torch.manual_seed(seed)
        loader = build_dataloader(Toy(6), 2, 1, test_mode=True)
        return [t for _, targets in loader for t in targets]

    a, b, c = run(11), run(11), run(12)
    assert a == b and len({t["noise"] for t in a}) == 6
    assert [t["noise"] for t in a] != [t["noise"] for t in c]  # numpy in workers follows torch's seed


def test_test_mode_loader_and_collate():
    loader = build_dataloader(Toy(5), 2, 0, rank=1, world_size=2, test_mode=True)
    assert [ids for ids, _ in loader] == [[3, 4]] and not loader.persistent_workers
    assert collate([("a", {"x": 1}), ("b", {"x": 2})]) == (["a", "b"], [{"x": 1}, {"x": 2}])
    with pytest.raises(ConfigError, match="rank"):
        build_dataloader(Toy(5), 2, 0, rank=2, world_size=2)
