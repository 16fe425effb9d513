"""The baseline of the training-throughput benchmark: a plain loop the way torchvision trains.

Written after torchvision's ``references/detection`` (``train.py`` + ``engine.train_one_epoch``):
``CocoDetection`` wrapped for transforms v2, a random sampler in fixed-size batches, a
``DataLoader`` with a tuple-of-lists collate, SGD with momentum and weight decay, a linear
warm-up, and per iteration ``model(images, targets)`` -> summed loss -> ``item()`` ->
``zero_grad`` / ``backward`` / ``step``. The only addition is gradient clipping when the config
asks for it, so both sides do the same arithmetic. It reads the detcore config only as data:
which images (with masks when the split has ``with_mask``), which batch size, which optimizer
settings, and with ``--model config`` which network: ``detcore.models.build_detector`` returns
torchvision's own detector classes (``FasterRCNN``, ``MaskRCNN``, ``RetinaNet``, ``FCOS``; detcore's
``CascadeRCNN`` is built on torchvision's R-CNN parts), and this loop builds it with torchvision's
own RoI pooling (``roi_head.roi_align_backward: torchvision``), so the network is the plain one.

    python -m benchmarks.plain_train --model config|mobilenet --config CFG --iters N --out OUT.json

writes per-iteration end times (``time.perf_counter``) and data/step times to OUT.json.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


MODELS = ("config", "mobilenet")


def build_model(kind: str, model_cfg: dict):
    if kind == "config":
        from detcore.models import build_detector  # returns torchvision's own detector classes

        if model_cfg["type"] in ("FasterRCNN", "MaskRCNN", "CascadeRCNN"):  # torchvision's MultiScaleRoIAlign
            model_cfg = {**model_cfg, "roi_head": {**(model_cfg.get("roi_head") or {}),
                                                   "roi_align_backward": "torchvision"}}
        return build_detector(model_cfg)
    if kind == "mobilenet":
        from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

        return fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                     num_classes=int(model_cfg["num_classes"]) + 1,
                                                     min_size=model_cfg["min_size"], max_size=model_cfg["max_size"])
    raise SystemExit(f"plain_train: unknown --model {kind!r}; choose {' or '.join(MODELS)}")


def build_loader(train_cfg: dict, batch: int, workers: int, seed: int):
    import torch
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
    from torchvision.transforms import v2 as T

    from detcore.data.shapes import ensure_shapes  # the same generated files detcore reads

    root = ensure_shapes(num_train=train_cfg["num_train"], num_val=train_cfg["num_val"], size=train_cfg["size"],
                         seed=train_cfg["seed"])
    transforms = T.Compose([T.ToImage(), T.RandomHorizontalFlip(0.5), T.ToDtype(torch.float, scale=True),
                            T.SanitizeBoundingBoxes(), T.ToPureTensor()])
    dataset = CocoDetection(str(root / "images" / "train"), str(root / "annotations" / "instances_train.json"),
                            transforms=transforms)
    keys = ("boxes", "labels", "masks", "image_id") if train_cfg.get("with_mask") else ("boxes", "labels", "image_id")
    dataset = wrap_dataset_for_transforms_v2(dataset, target_keys=keys)
    sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    batches = torch.utils.data.BatchSampler(sampler, batch, drop_last=True)
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                                       collate_fn=lambda b: tuple(zip(*b)))


def train(args: argparse.Namespace) -> dict:
    import torch

    from detcore.config import load_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(args.model, cfg["model"])
    model.train()
    opt_cfg = dict(cfg.get("optimizer") or {})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=opt_cfg.get("lr", 0.02), momentum=opt_cfg.get("momentum", 0.9),
                                weight_decay=opt_cfg.get("weight_decay", 1e-4))
    lr_cfg = cfg.get("lr_config") or {}
    warmup_iters, warmup_ratio = int(lr_cfg.get("warmup_iters", 0)), float(lr_cfg.get("warmup_ratio", 0.001))
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=warmup_ratio, total_iters=warmup_iters) \
        if warmup_iters else None
    clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    loader = build_loader(cfg["data"]["train"], args.batch, args.workers, seed=0)

    ends, data_times, iter_times = [], [], []
    done, epoch = 0, 0
    while done < args.iters:
        it = iter(loader)
        while done < args.iters:
            t0 = time.perf_counter()
            try:
                images, targets = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            images = [img.to("cpu") for img in images]
            targets = [{k: v.to("cpu") if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
            loss_value = losses.item()
            if not math.isfinite(loss_value):
                raise SystemExit(f"plain_train: loss is {loss_value} at iteration {done + 1}")
            optimizer.zero_grad()
            losses.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, **clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            done += 1
            t2 = time.perf_counter()
            ends.append(t2)
            data_times.append(t1 - t0)
            iter_times.append(t2 - t0)
        epoch += 1
    return {"ends": ends, "data_times": data_times, "iter_times": iter_times, "threads": torch.get_num_threads(),
            "batch": args.batch, "workers": args.workers, "epochs_started": epoch,
            "params": sum(p.numel() for p in model.parameters())}


def throughput(result: dict, warmup: int) -> tuple[float, float]:
    """``(wall images/s, data+step images/s)`` over the iterations after ``warmup``."""
    ends, batch = result["ends"], result["batch"]
    n = len(ends) - warmup
    wall = batch * n / (ends[-1] - ends[warmup - 1])
    step = batch * n / sum(result["iter_times"][warmup:])
    return wall, step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plain_train", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--config", required=True)
    p.add_argument("--cfg-options", nargs="*", default=[])
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    Path(args.out).write_text(json.dumps(train(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
