"""Sharded evaluation on 2 real gloo processes equals single-process evaluation."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detcore.data import ShapesDataset, build_dataloader
from detcore.evaluation import evaluate_coco, gather_predictions, results_to_coco
from tests.integration.helpers import free_port

WORLD_SIZE = 2
DATA = {"split": "val", "num_train": 1, "num_val": 9, "size": 64, "seed": 2, "test_mode": True,
        "pipeline": [{"type": "Resize", "scale": [96, 96]}]}


def _fake_output(target: dict) -> dict:
    """Deterministic per image id: jittered ground truth plus one false positive."""
    rng = np.random.default_rng(target["image_id"])
    boxes = target["boxes"].as_subclass(torch.Tensor).clone()
    boxes += torch.from_numpy(rng.normal(0, 2, boxes.shape)).float()
    boxes = torch.cat([boxes, torch.tensor([[5.0, 5.0, 40.0, 30.0]])])
    labels = torch.cat([target["labels"], torch.tensor([1])])
    scores = torch.from_numpy(rng.random(len(labels))).float()
    return {"boxes": boxes, "labels": labels, "scores": scores}


def _predict(dataset: ShapesDataset, rank: int, world_size: int) -> list[tuple[int, list[dict]]]:
    loader = build_dataloader(dataset, 2, 0, rank=rank, world_size=world_size, test_mode=True)
    per_image = []
    for _, targets in loader:
        for target in targets:
            per_image.append((target["image_id"], results_to_coco([(target["image_id"], _fake_output(target))],
                                                                  dataset)))
    return per_image


def _worker(rank: int, port: int, cache: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        dataset = ShapesDataset(root=cache, **DATA)  # both ranks generate the cache at once: one does, under a lock
        local = _predict(dataset, rank, WORLD_SIZE)
        Path(out_dir, f"local{rank}.json").write_text(json.dumps([image_id for image_id, _ in local]))
        gathered = gather_predictions(local)
        if rank == 0:
            results = [r for _, rs in gathered for r in rs]
            metrics = evaluate_coco(dataset.coco, results, metrics=["bbox"])
            Path(out_dir, "rank0.json").write_text(json.dumps({
                "image_ids": [image_id for image_id, _ in gathered], "metrics": metrics}))
        else:
            assert gathered == []
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_sharded_eval_equals_single_process(tmp_path):
    cache = tmp_path / "cache"
    mp.spawn(_worker, args=(free_port(), str(cache), str(tmp_path)), nprocs=WORLD_SIZE, join=True)

    shards = [json.loads((tmp_path / f"local{r}.json").read_text()) for r in range(WORLD_SIZE)]
    sharded = json.loads((tmp_path / "rank0.json").read_text())
    dataset = ShapesDataset(root=cache, **DATA)
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])
    assert sharded["image_ids"] == sorted(dataset.img_ids) and len(dataset) == 9

    single = _predict(dataset, 0, 1)
    expected = evaluate_coco(dataset.coco, [r for _, rs in single for r in rs], metrics=["bbox"])
    assert sharded["metrics"] == json.loads(json.dumps(expected))
    assert 0.2 < expected["bbox"]["AP"] < 1.0
