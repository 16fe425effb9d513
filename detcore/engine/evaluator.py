"""Batch inference over a loader, sharded across ranks, and COCO evaluation on rank 0."""
from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from detcore.engine.dist import get_rank
from detcore.engine.heartbeat import beating
from detcore.evaluation.coco_eval import DEFAULT_BACKEND

logger = logging.getLogger(__name__)


@torch.no_grad()
def run_inference(model: nn.Module, loader: DataLoader, device: torch.device, *, progress: bool = False,
                  desc: str = "inference", keep_images: int = 0, keepalive: Callable[[], object] | None = None,
                  convert: Callable[[int, dict], Any] | None = None,
                  ) -> tuple[list[tuple[int, Any]], list[tuple[torch.Tensor, dict, dict]]]:
    """``[(image_id, output), ...]`` for this rank's shard, plus the first ``keep_images`` ``(input,
    target, output)``.

    ``keepalive()`` is called after every batch (a rate-limited heartbeat for a hang watchdog).
    ``progress``: on rank 0, a tqdm bar on a terminal, else a few log lines (:func:`progress_logger`).
    With ``convert``, each output is replaced by ``convert(image_id, output)`` as soon as its
    batch is done (e.g. COCO results with RLE masks), so full-size mask tensors live for one
    batch instead of the whole shard (a Mask R-CNN output at 800x1333 with 100 detections is
    about 400 MB). Only the ``keep_images`` kept predictions keep their tensors.
    """
    model.eval()
    outputs: list[tuple[int, Any]] = []
    kept: list[tuple[torch.Tensor, dict, dict]] = []
    show = progress and get_rank() == 0
    bar = tqdm(loader, desc=desc, unit="batch", disable=not show or not sys.stderr.isatty())
    log_progress = progress_logger(desc, loader) if show and bar.disable else None
    for done, (images, targets) in enumerate(bar, 1):
        preds = model([img.to(device, non_blocking=True) for img in images])
        for img, target, pred in zip(images, targets, preds):
            pred = {k: v.cpu() for k, v in pred.items()}
            image_id = int(target["image_id"])
            if len(kept) < keep_images:
                kept.append((img, target, pred))
            outputs.append((image_id, pred if convert is None else convert(image_id, pred)))
        del preds, pred
        if keepalive is not None:
            keepalive()
        if log_progress is not None:
            log_progress(done)
    return outputs, kept


def progress_logger(desc: str, loader: Any, lines: int = 4) -> Callable[[int], None] | None:
    """``log(done)``: where no terminal shows a bar (a log file), about ``lines`` INFO lines per pass
    (``evaluation 25/100 batches, 0:00:03 elapsed, eta 0:00:09``); None for a loader without a length."""
    try:
        total = len(loader)
    except TypeError:
        return None
    every, t0 = max(1, -(-total // lines)), time.perf_counter()

    def log(done: int) -> None:
        if done % every and done != total:
            return
        elapsed = time.perf_counter() - t0
        eta = elapsed / done * (total - done)
        logger.info("%s %d/%d batches, %s elapsed, eta %s", desc, done, total, timedelta(seconds=round(elapsed)),
                    timedelta(seconds=round(eta)))

    return log


def coco_converter(dataset: Any, label_ids: str = "classes") -> Callable[[int, dict], list[dict]]:
    """``convert`` for :func:`run_inference`: one image's output -> its COCO results (RLE masks).
    ``label_ids``: what the model's labels mean (:mod:`detcore.evaluation.label_ids`)."""
    from detcore.evaluation import results_to_coco

    return lambda image_id, output: results_to_coco([(image_id, output)], dataset, label_ids)


def flatten_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``{"bbox": {"AP": ..}, "bbox_per_class": {"cat": ..}}`` -> ``{"bbox_AP": .., "bbox_AP_cat": ..}``."""
    flat: dict[str, float] = {}
    for metric, values in results.items():
        if not isinstance(values, dict):
            continue
        if metric.endswith("_per_class"):
            base = metric[: -len("_per_class")]
            flat.update({f"{base}_AP_{name}": float(v) for name, v in values.items()})
        else:
            flat.update({k if k == metric else f"{metric}_{k}": float(v) for k, v in values.items()})  # VOC: mAP
    return flat


HEADLINE_SUFFIXES = ("_AP", "_AP50", "_AP75")


def headline_metrics(flat: dict[str, float]) -> list[str]:
    """The keys of ``flat`` a progress log shows: each family's AP, AP50 and AP75, and VOC's mAP
    (every metric is in ``metrics.jsonl`` and TensorBoard)."""
    return [k for k in flat if k == "mAP" or k.endswith(HEADLINE_SUFFIXES)]


def gather_coco_results(outputs: list[tuple[int, Any]], dataset: Any, converted: bool = False) -> list[dict]:
    """COCO results of every rank's outputs, each image exactly once, on rank 0 (``[]`` elsewhere).

    ``converted``: ``outputs`` already hold COCO results per image (``run_inference(convert=...)``).
    """
    from detcore.evaluation import gather_predictions, results_to_coco

    per_image = outputs if converted else [(image_id, results_to_coco([(image_id, out)], dataset))
                                           for image_id, out in outputs]
    return [r for _, results in gather_predictions(per_image) for r in results]


def evaluate_loader(model: nn.Module, loader: DataLoader, device: torch.device, metrics: Sequence[str], *,
                    classes: Sequence[str], num_images: int = 0, progress: bool = False,
                    backend: str = DEFAULT_BACKEND, voc_method: str = "area",
                    keepalive: Callable[[], object] | None = None,
                    ) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Evaluate ``model`` on ``loader``'s dataset; flat metrics on rank 0 (``{}`` elsewhere) and drawings.

    ``keepalive()`` runs after each inference batch and, once a second, during COCOeval on rank 0
    (local work only; never around the gather, so a rank stuck in a collective still looks hung).
    """
    from detcore.apis.visualize import draw_comparison
    from detcore.evaluation.metrics import evaluate_detections

    dataset = loader.dataset
    outputs, kept = run_inference(model, loader, device, progress=progress, desc="evaluation",
                                  keep_images=num_images, keepalive=keepalive, convert=coco_converter(dataset))
    everything = gather_coco_results(outputs, dataset, converted=True)
    drawn = [draw_comparison(img, target, pred, classes) for img, target, pred in kept]
    if get_rank() != 0:
        return {}, drawn
    with beating(keepalive):
        results = evaluate_detections(dataset.coco, everything, metrics=tuple(metrics), classwise=True,
                                      class_names=classes, backend=backend, voc_method=voc_method,
                                      table_level=logging.DEBUG)
    flat = flatten_metrics(results)
    logger.info("evaluation: %s", " ".join(f"{k}={flat[k]:.4f}" for k in headline_metrics(flat)))
    logger.debug("evaluation, every metric: %s", " ".join(f"{k}={v:.4f}" for k, v in flat.items()))
    return flat, drawn
