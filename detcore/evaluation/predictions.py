"""Model outputs -> COCO results, and gathering them across ranks.

Sizes flow like this: a detector returns boxes (and masks) in the coordinates of the image
tensor it was given, i.e. ``target["img_shape"]``. ``results_to_coco`` maps them back to the
file's size ``orig_size``. Both come from the output dict when present (``output["img_shape"]``,
``output["orig_size"]``, which the trainer can copy from the targets), else from
``dataset.get_img_info(image_id)``: ``orig_size`` from the json and ``img_shape`` from the
dataset's pipeline when its output size is deterministic (a test pipeline).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils

from detcore.errors import DataError
from detcore.evaluation.label_ids import category_of_label


# --- model outputs -> COCO results ------------------------------------------------------------
def _sizes(image_id: int, output: Mapping[str, Any], dataset: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    orig, shape = output.get("orig_size"), output.get("img_shape")
    if orig is None or shape is None:
        info = dataset.get_img_info(image_id)
        orig = orig if orig is not None else info.orig_size
        shape = shape if shape is not None else info.img_shape
    if shape is None:
        raise DataError(f"image id {image_id}: the dataset pipeline has a random output size, so img_shape is "
                        f"unknown; put output['img_shape'] = target['img_shape'] before results_to_coco")
    return (int(orig[0]), int(orig[1])), (int(shape[0]), int(shape[1]))


def _encode_masks(masks: torch.Tensor, keep: list[int], orig: tuple[int, int], chunk_size: int = 16) -> list[dict]:
    """RLEs of ``masks[keep]`` ([N, 1, H, W] probabilities) at the original size (bilinear resize, then >= 0.5).

    Masks already at the original size (torchvision pastes them there) are thresholded in one
    pass, and only the kept ones are copied, as bytes, for ``encode``: no float copy of every
    full-size mask (100 masks at 800x1333 are 400 MB). Masks to resize go ``chunk_size`` at a time."""
    if tuple(masks.shape[-2:]) == orig:
        binary = (masks[:, 0] >= 0.5).numpy().view(np.uint8)
        return [_rle(binary[k]) for k in keep]
    rles = []
    for start in range(0, len(keep), chunk_size):
        chunk = masks[keep[start:start + chunk_size]].float()
        chunk = torch.nn.functional.interpolate(chunk, size=orig, mode="bilinear", align_corners=False)
        rles += [_rle(m) for m in (chunk[:, 0] >= 0.5).numpy().view(np.uint8)]
    return rles


def _rle(binary: np.ndarray) -> dict:
    """The compressed RLE of one [H, W] uint8 mask, its counts as text (as a results file holds them)."""
    rle = mask_utils.encode(np.asfortranarray(binary))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def results_to_coco(outputs: Iterable[tuple[int, Mapping[str, Any]]], dataset: Any,
                    label_ids: str = "classes") -> list[dict]:
    """Convert ``[(image_id, output), ...]`` of torchvision detectors to COCO result dicts.

    ``output``: ``boxes`` [N, 4] xyxy in the model's input image, ``scores`` [N], ``labels`` [N],
    optionally ``masks`` [N, 1, H, W] probabilities, ``img_shape``/``orig_size``. ``dataset``
    supplies ``cat_ids`` and ``get_img_info(image_id)``. ``label_ids``
    (:mod:`detcore.evaluation.label_ids`): ``classes``, labels are 1..K and label k is
    ``cat_ids[k-1]``; ``coco``, labels are COCO category ids, kept when the dataset has that category.
    """
    category = category_of_label(label_ids, dataset.cat_ids)
    results: list[dict] = []
    for image_id, output in outputs:
        image_id = int(image_id)
        orig, shape = _sizes(image_id, output, dataset)
        boxes = torch.as_tensor(output["boxes"]).detach().float().cpu().reshape(-1, 4).clone()
        scores = torch.as_tensor(output["scores"]).detach().float().cpu().tolist()
        labels = torch.as_tensor(output["labels"]).detach().cpu().tolist()
        try:
            cats = [category(label) for label in labels]
        except DataError as exc:
            raise DataError(f"image id {image_id}: {exc}") from None
        boxes[:, 0::2] = (boxes[:, 0::2] * (orig[1] / shape[1])).clamp(0, orig[1])
        boxes[:, 1::2] = (boxes[:, 1::2] * (orig[0] / shape[0])).clamp(0, orig[0])
        rles = None
        if output.get("masks") is not None and len(labels):
            masks = torch.as_tensor(output["masks"]).detach().cpu()
            masks = masks.reshape(len(labels), 1, *masks.shape[-2:])
            keep = [k for k, cat in enumerate(cats) if cat is not None]
            encoded = _encode_masks(masks, keep, orig)
            rles = dict(zip(keep, encoded))
        for k, ((x1, y1, x2, y2), score, cat) in enumerate(zip(boxes.tolist(), scores, cats)):
            if cat is None:
                continue
            res = {"image_id": image_id, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            if rles is not None:
                res["segmentation"] = rles[k]
            results.append(res)
    return results


# --- distributed ------------------------------------------------------------------------------
def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _union(parts: Iterable[list]) -> list:
    seen: dict[int, Any] = {}
    for part in parts:
        for image_id, payload in part:
            seen.setdefault(int(image_id), payload)
    return [(image_id, seen[image_id]) for image_id in sorted(seen)]


def gather_predictions(local: list[tuple[int, Any]], dst: int | None = 0) -> list[tuple[int, Any]]:
    """Union of every rank's ``[(image_id, payload), ...]`` by ``all_gather_object``.

    Each image id appears once (the lowest rank's payload wins), sorted by image id. Rank ``dst``
    gets the union and the other ranks ``[]``; ``dst=None`` gives it to every rank. Tensors are
    moved to the CPU first; converting outputs with ``results_to_coco`` per rank and gathering
    ``(image_id, results)`` pairs keeps the traffic small. With NCCL, call
    ``torch.cuda.set_device`` first. Not distributed: the local list, deduplicated and sorted.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return _union([local])
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, _to_cpu(list(local)))
    if dst is not None and dist.get_rank() != dst:
        return []
    return _union(parts)
