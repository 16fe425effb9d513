"""2. Data pipeline: the training loader alone against the training step rate (goal: >= 3x).

The loader is the one the trainer builds (``detcore.engine.setup.build_split_loader(cfg,
"train", ...)``: seeded samples, the aspect-ratio batch sampler, the configured
``workers_per_gpu``, persistent workers) for the shapes config. Its figure is images/s over
``batches`` batches after the first ``warmup`` (worker start-up excluded), crossing epoch
boundaries the way the trainer does (``set_epoch`` per epoch).

The step rate is images/s of the training step alone on batches already in memory (the
same model, optimizer and thread count as ``detcore train``), i.e. how fast the trainer
would consume batches if data were free. When ``train_throughput`` ran in the same
invocation, its measured detcore images/s and data-time share are reported too.
"""
from __future__ import annotations

import time

from benchmarks import jobs
from benchmarks.harness import Context, Goal, Result, Row, compared, log, measured, summarize

TITLE = "data pipeline: training loader alone vs the training step rate"
GOAL = Goal("ratio", ">=", 3.0)


def loader_rate(cfg: dict, warmup: int, batches: int) -> float:
    """Images/s of the trainer's loader over ``batches`` batches after ``warmup``."""
    import torch

    from detcore.engine.dist import DistInfo
    from detcore.engine.setup import build_split_loader

    loader = build_split_loader(cfg, "train", DistInfo(0, 1, 0, torch.device("cpu")), seed=0, train=True)
    per_epoch = len(loader.batch_sampler)
    seen = images = 0
    t0 = None
    epoch = 0
    while seen < warmup + batches:
        loader.batch_sampler.set_epoch(epoch)
        for imgs, _ in loader:
            seen += 1
            if seen == warmup:
                t0 = time.perf_counter()
            elif seen > warmup:
                images += len(imgs)
            if seen >= warmup + batches:
                break
        epoch += 1
        if per_epoch == 0:
            raise RuntimeError("the training split yields no batch")
    elapsed = time.perf_counter() - t0
    del loader  # stops the persistent workers
    return images / elapsed


def step_rate(cfg: dict, warmup: int, steps: int) -> float:
    """Images/s of forward + backward + SGD step on pre-loaded batches (no data loading)."""
    import torch

    from detcore.engine.dist import DistInfo
    from detcore.engine.optim import build_optimizer
    from detcore.engine.setup import build_split_loader
    from detcore.models import build_detector

    torch.manual_seed(0)
    loader = build_split_loader({**cfg, "data": {**cfg["data"], "workers_per_gpu": 0}}, "train",
                                DistInfo(0, 1, 0, torch.device("cpu")), seed=0, train=True)
    loader.batch_sampler.set_epoch(0)
    it = iter(loader)
    batches = [next(it) for _ in range(min(8, len(loader.batch_sampler)))]
    model = build_detector(cfg["model"]).train()
    optimizer = build_optimizer(model, cfg["optimizer"])
    clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    images = 0
    t0 = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            t0, images = time.perf_counter(), 0
        imgs, targets = batches[i % len(batches)]
        loss = sum(model(list(imgs), list(targets)).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), **clip)
        optimizer.step()
        images += len(imgs)
    return images / (time.perf_counter() - t0)


def run(ctx: Context) -> Result:
    from detcore.config import load_config

    cfg = load_config(jobs.SHAPES_CONFIG)
    repeats = ctx.pick(2, 3)
    warmup_batches, batches = ctx.pick((2, 40), (4, 250))
    warmup_steps, steps = ctx.pick((2, 8), (5, 40))
    loader, step = [], []
    for r in range(repeats):
        log(f"data_pipeline: run {r + 1}/{repeats}")
        loader.append(loader_rate(cfg, warmup_batches, batches))
        step.append(step_rate(cfg, warmup_steps, steps))
    workers = cfg["data"]["workers_per_gpu"]
    rows: list[Row] = [
        compared(f"train loader, {workers} worker(s)", loader, step, "img/s", GOAL,
                 note="ratio vs the step rate below"),
        measured("training step rate (data in memory)", step, "img/s", note="same model/optimizer, torch default threads"),
    ]
    trained = ctx.shared.get("shapes_train_images_per_s")
    if trained:
        ratio = summarize(loader).median / summarize(trained).median
        rows.append(Row("train loader vs detcore train images/s", summarize(loader).median, "img/s", ratio=ratio,
                        note="ratio vs train_throughput's measured detcore rate (shapes)"))
        share = ctx.shared.get("shapes_data_time_share")
        if share:
            rows.append(measured("data_time share of iter_time in detcore train", [100 * s for s in share], "%",
                                 note="from train_throughput's metrics.jsonl"))
    settings = {"config": str(jobs.SHAPES_CONFIG), "loader_workers": workers, "batch": cfg["data"]["samples_per_gpu"],
                "repeats": repeats, "loader_warmup_batches": warmup_batches, "loader_batches": batches,
                "step_warmup": warmup_steps, "steps": steps}
    return Result(rows, settings)
