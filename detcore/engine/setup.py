"""Seeding and data-loader construction for the trainer and the test runner.

Augmentations draw from a random stream seeded by ``(seed, epoch, sample index)`` rather than
from whatever state a loader worker happens to be in. That is what makes a resumed run
(which skips part of an epoch) see exactly the same augmented batches as an uninterrupted one,
whatever the number of loader workers.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detcore.engine.dist import DistInfo
from detcore.engine.scaling import split_batch_size, split_workers

logger = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False, rank: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) with rank ``rank``'s seed of ``seed``.

    Ranks get different seeds (:func:`~detcore.engine.rng.rank_seed`), so their RPN/ROI sampling
    differs; model weights still agree (DDP broadcasts rank 0's at start).
    """
    from detcore.engine.rng import configure_determinism, rank_seed

    seed = rank_seed(seed, rank)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    configure_determinism(deterministic)


class SeededSamples(Dataset):
    """Wraps a dataset so sample ``(epoch, index)`` is produced under its own RNG seed."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        sample_seed = (self.seed * 1_000_003 + epoch * 100_003 + index) % 2 ** 63
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only (the data pipeline's): torch.manual_seed also queues a lazy
                # seeding of every accelerator, with a formatted stack trace each, 0.7 ms per sample
                torch.default_generator.manual_seed(sample_seed)
                random.seed(sample_seed)
                np.random.seed(sample_seed % 2 ** 32)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class EpochTaggedBatches:
    """Forwards a batch sampler, tagging each index with the current epoch for SeededSamples."""

    def __init__(self, batch_sampler: Any) -> None:
        self.inner = batch_sampler
        self.epoch = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch, skip_batches=skip_batches)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        epoch = self.epoch
        for batch in self.inner:
            yield [(epoch, i) for i in batch]


LOADER_KEYS = ("samples_per_gpu", "workers_per_gpu")  # MMDetection's per-split loader keys, not the dataset's


def split_config(cfg: Mapping[str, Any], split: str) -> dict:
    """The dataset config of ``data.<split>`` (top-level ``classes`` filled in; the loader's keys,
    read by :func:`~detcore.engine.scaling.split_batch_size`/``split_workers``, left out)."""
    data = cfg.get("data") or {}
    if split not in data:
        from detcore.errors import ConfigError

        raise ConfigError(f"{cfg.get('filename', 'config')}: data.{split} is missing; add a dataset for the "
                          f"{split} split")
    split_cfg = {k: v for k, v in data[split].items() if k not in LOADER_KEYS}
    if cfg.get("classes") is not None and "classes" not in split_cfg:
        split_cfg["classes"] = list(cfg["classes"])
    return split_cfg


def build_split_loader(cfg: Mapping[str, Any], split: str, dist: DistInfo, seed: int, *, train: bool) -> DataLoader:
    from detcore.data import build_dataloader, build_dataset

    split_cfg = split_config(cfg, split)
    if not train:
        split_cfg.setdefault("test_mode", True)
    dataset = build_dataset(split_cfg)
    per_gpu, workers = int(split_batch_size(cfg, split)), int(split_workers(cfg, split))
    pin = dist.device.type == "cuda"
    loader = build_dataloader(dataset, per_gpu, workers, shuffle=train, seed=seed, rank=dist.rank,
                              world_size=dist.world_size, test_mode=not train, pin_memory=pin and not train)
    if not train:
        return loader
    return DataLoader(SeededSamples(dataset, seed), batch_sampler=EpochTaggedBatches(loader.batch_sampler),
                      collate_fn=loader.collate_fn, num_workers=workers, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed), pin_memory=pin)


def build_loaders(cfg: Mapping[str, Any], dist: DistInfo, seed: int, validate: bool):
    """``(train_loader, val_loader or None, class names)`` for the trainer."""
    from detcore.errors import ConfigError

    train_loader = build_split_loader(cfg, "train", dist, seed, train=True)
    classes = tuple(train_loader.dataset.dataset.CLASSES)
    num_classes = (cfg.get("model") or {}).get("num_classes")
    if num_classes is not None and num_classes != len(classes):
        raise ConfigError(f"model.num_classes is {num_classes} but the dataset has {len(classes)} classes "
                          f"{list(classes)}; set model.num_classes={len(classes)} or change classes")
    val_loader = build_split_loader(cfg, "val", dist, seed, train=False) if validate and "val" in cfg["data"] else None
    return train_loader, val_loader, classes
