"""Per-sample seeding of the training loader: the same samples for a seed whatever the number of
loader workers, the stream a plain ``torch.manual_seed(sample seed)`` gives, and the training
process's own RNG streams left alone."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from detcore.config import load_config
from detcore.engine.dist import DistInfo
from detcore.engine.setup import build_split_loader

ROOT = Path(__file__).resolve().parents[3]
PIPELINE = [{"type": "RandomFlip", "prob": 0.5}, {"type": "RandomFlip", "prob": 0.5, "direction": "vertical"},
            {"type": "PhotoMetricDistortion", "prob": 0.5}]


def _batches(workers: int, seed: int, epochs: tuple[int, ...] = (0, 1), count: int = 3) -> list:
    cfg = load_config(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml",
                      [f"data.workers_per_gpu={workers}", "data.samples_per_gpu=2"])
    cfg["data"]["train"]["pipeline"] = PIPELINE
    loader = build_split_loader(cfg, "train", DistInfo(0, 1, 0, torch.device("cpu")), seed, train=True)
    out = []
    for epoch in epochs:
        loader.batch_sampler.set_epoch(epoch)
        for n, (images, targets) in enumerate(loader):
            out.append([(img.clone(), t["boxes"].clone(), t["labels"].clone()) for img, t in zip(images, targets)])
            if n + 1 == count:
                break
    return out


def _same(a: list, b: list) -> bool:
    return all(torch.equal(x, y) for batch_a, batch_b in zip(a, b, strict=True)
               for sample_a, sample_b in zip(batch_a, batch_b, strict=True) for x, y in zip(sample_a, sample_b))


def test_the_same_seed_gives_the_same_samples_with_any_number_of_workers() -> None:
    in_process = _batches(0, seed=7)
    assert _same(in_process, _batches(2, seed=7))
    assert _same(in_process, _batches(0, seed=7))
    assert not _same(in_process, _batches(0, seed=8))


def test_a_sample_is_the_pipeline_under_torch_manual_seed_of_its_seed() -> None:
    """The stream a plain ``torch.manual_seed`` (plus ``random.seed``, ``np.random.seed``) of the
    sample's seed gives: the augmentation stream runs before this loader existed reproduce."""
    cfg = load_config(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml", ["data.workers_per_gpu=0"])
    cfg["data"]["train"]["pipeline"] = PIPELINE
    loader = build_split_loader(cfg, "train", DistInfo(0, 1, 0, torch.device("cpu")), 5, train=True)
    loader.batch_sampler.set_epoch(3)
    epoch, index = next(iter(loader.batch_sampler))[0]  # the first sample of the first batch
    images, targets = next(iter(loader))
    sample_seed = (5 * 1_000_003 + epoch * 100_003 + index) % 2 ** 63
    torch.manual_seed(sample_seed)
    random.seed(sample_seed)
    np.random.seed(sample_seed % 2 ** 32)
    image, target = loader.dataset.dataset[index]
    assert epoch == 3 and torch.equal(images[0], image) and torch.equal(targets[0]["boxes"], target["boxes"])


def test_loading_in_process_leaves_the_training_rng_alone() -> None:
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    _batches(0, seed=1, epochs=(0,), count=2)
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
