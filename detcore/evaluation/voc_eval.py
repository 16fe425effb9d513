"""Pascal VOC detection mAP, as the VOC devkit computes it.

Per class, detections over all images are sorted by score; each is matched to the
ground-truth box of its image with the highest IoU. IoU >= ``iou_thr`` with an unmatched
box is a true positive, with an already matched one a false positive (duplicate), and with
a ``difficult`` box neither (difficult boxes also do not count towards recall). AP is the
area under the precision envelope at every recall step (VOC2010 and later, the default)
or the 11-point interpolation of VOC2007 (``area_method=False`` / ``use_07_metric=True``).

Boxes are ``x1, y1, x2, y2``. With ``legacy_plus_one=True`` (the devkit's convention for
1-based inclusive pixel boxes) widths are ``x2 - x1 + 1``. COCO-frame boxes
(``[x, y, w, h]`` with ``x = xmin - 1``, as ``detcore convert voc`` writes) give exactly the
devkit's IoUs as continuous boxes ``(x, y, x + w, y + h)`` without the +1, which is what
:func:`evaluate_voc_from_coco` does.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from detcore.errors import DataError

logger = logging.getLogger(__name__)

ImageRecords = Mapping[Hashable, Mapping[str, Any]] | Sequence[Mapping[str, Any]]


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from a class's cumulative recall/precision curve (ordered by descending score).

    ``use_07_metric``: mean of the best precision at recall >= 0, 0.1, ..., 1 (VOC2007);
    otherwise the exact area under the monotone precision envelope (VOC2010+).
    """
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = precision[recall >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_map(gt_by_image: ImageRecords, det_by_image: ImageRecords, num_classes: int, iou_thr: float = 0.5,
            area_method: bool = True, legacy_plus_one: bool = True, progress: bool = False) -> dict[str, Any]:
    """VOC mAP over ``num_classes`` classes (labels ``0 .. num_classes - 1``).

    ``gt_by_image``: per image (a dict keyed by image id, or a list) ``{"boxes": (N, 4),
    "labels": (N,), "difficult": (N,) bool (optional)}``. ``det_by_image``: the same keys
    (or list positions) with ``{"boxes": (M, 4), "scores": (M,), "labels": (M,)}``; images
    without detections may be left out. ``area_method=False`` uses the VOC2007 11-point AP.

    Returns ``{"mAP", "AP_per_class", "num_gts"}``. A class with no non-difficult ground
    truth has AP NaN and is left out of the mean (as mmdetection does); raises
    ``DataError`` when no class has any.
    """
    gts, dets = _as_dict(gt_by_image, "gt_by_image"), _as_dict(det_by_image, "det_by_image")
    unknown = [k for k in dets if k not in gts]
    if unknown:
        raise DataError(f"VOC eval: detections for images {unknown[:5]!r} that have no ground-truth entry; "
                        f"expected the same image keys in both (an image without objects needs an empty entry)")
    gts = {k: _arrays(v, ("boxes", "labels"), k, num_classes) for k, v in gts.items()}
    dets = {k: _arrays(v, ("boxes", "scores", "labels"), k, num_classes) for k, v in dets.items()}
    aps, num_gts = [], []
    for cls in tqdm(range(num_classes), desc="VOC mAP", unit="class", disable=not progress):
        ap, npos = _class_ap(gts, dets, cls, iou_thr, area_method, legacy_plus_one)
        aps.append(ap)
        num_gts.append(npos)
    valid = [ap for ap, n in zip(aps, num_gts) if n > 0]
    if not valid:
        raise DataError("VOC eval: no non-difficult ground-truth box in any class; cannot compute mAP")
    result = {"mAP": float(np.mean(valid)), "AP_per_class": aps, "num_gts": num_gts}
    logger.info("VOC mAP@%.2f (%s): %.4f over %d classes", iou_thr, "area" if area_method else "11-point",
                result["mAP"], len(valid))
    return result


def evaluate_voc_from_coco(gt_json: str | os.PathLike, results_json: str | os.PathLike, iou_thr: float = 0.5,
                           area_method: bool = True, progress: bool = True) -> dict[str, Any]:
    """VOC mAP of a COCO results file against a COCO ground-truth json (see :func:`evaluate_voc_coco`)."""
    from detcore.data.coco_json import check_ground_truth

    gt = _load_json(gt_json, dict, "a COCO ground-truth json with images, annotations, categories")
    if not isinstance(gt.get("images"), list):
        raise DataError(f"VOC eval: {gt_json} has no 'images' list; expected a COCO ground-truth json")
    check_ground_truth(gt, Path(gt_json))
    results = _load_json(results_json, list, "a COCO results list of {image_id, category_id, bbox, score}")
    return evaluate_voc_coco(gt, results, iou_thr=iou_thr, area_method=area_method, progress=progress,
                             gt_name=str(gt_json), results_name=str(results_json))


def evaluate_voc_coco(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], iou_thr: float = 0.5,
                      area_method: bool = True, progress: bool = False, gt_name: str = "the ground truth",
                      results_name: str = "the results") -> dict[str, Any]:
    """VOC mAP of COCO results (a list) against a COCO ground-truth dict (``COCO.dataset``).

    Ground truth with ``difficult: 1`` (as ``detcore convert voc`` writes) or ``iscrowd: 1``
    is treated as difficult. Categories map to classes in ascending category id. Returns
    :func:`voc_map`'s dict plus ``"classes"`` (category names in that order).
    """
    gt_json, results_json = gt_name, results_name
    try:
        cats = sorted(gt["categories"], key=lambda c: c["id"])
        label_of = {c["id"]: i for i, c in enumerate(cats)}
        per_image: dict[Any, dict[str, list]] = {img["id"]: {"boxes": [], "labels": [], "difficult": []}
                                                 for img in gt["images"]}
        for ann in gt["annotations"]:
            rec = per_image[ann["image_id"]]
            rec["boxes"].append(_xywh_to_xyxy(ann["bbox"]))
            rec["labels"].append(label_of[ann["category_id"]])
            rec["difficult"].append(bool(ann.get("difficult", 0) or ann.get("iscrowd", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"VOC eval: {gt_json} is not a valid COCO ground-truth json ({exc!r})") from None
    det: dict[Any, dict[str, list]] = {}
    for index, r in enumerate(results):
        try:
            if r["image_id"] not in per_image or r["category_id"] not in label_of:
                raise DataError(f"VOC eval: {results_json} record #{index} has image_id {r['image_id']!r} / "
                                f"category_id {r['category_id']!r}, not in {gt_json}; expected results of that "
                                f"ground truth")
            rec = det.setdefault(r["image_id"], {"boxes": [], "scores": [], "labels": []})
            rec["boxes"].append(_xywh_to_xyxy(r["bbox"]))
            rec["scores"].append(float(r["score"]))
            rec["labels"].append(label_of[r["category_id"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"VOC eval: {results_json} record #{index} is malformed ({exc!r}); expected "
                            f"{{image_id, category_id, bbox: [x, y, w, h], score}}") from None
    result = voc_map(per_image, det, len(cats), iou_thr=iou_thr, area_method=area_method, legacy_plus_one=False,
                     progress=progress)
    result["classes"] = [c.get("name", str(c["id"])) for c in cats]
    return result


def _class_ap(gts: dict, dets: dict, cls: int, iou_thr: float, area_method: bool,
              legacy_plus_one: bool) -> tuple[float, int]:
    """AP and non-difficult ground-truth count of one class."""
    gt_boxes, gt_difficult, matched = {}, {}, {}
    npos = 0
    for key, g in gts.items():
        keep = g["labels"] == cls
        gt_boxes[key], gt_difficult[key] = g["boxes"][keep], g["difficult"][keep]
        matched[key] = np.zeros(int(keep.sum()), dtype=bool)
        npos += int((~gt_difficult[key]).sum())
    keys, scores, boxes = [], [], []
    for key, d in dets.items():
        keep = d["labels"] == cls
        keys.extend([key] * int(keep.sum()))
        scores.append(d["scores"][keep])
        boxes.append(d["boxes"][keep])
    if npos == 0:
        return math.nan, 0
    if not keys:
        return 0.0, npos
    scores_all, boxes_all = np.concatenate(scores), np.concatenate(boxes)
    order = np.argsort(-scores_all, kind="stable")
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, i in enumerate(order):
        key = keys[i]
        iou = _iou(boxes_all[i], gt_boxes[key], legacy_plus_one)
        if iou.size == 0 or iou.max() < iou_thr:
            fp[rank] = 1
            continue
        j = int(iou.argmax())
        if gt_difficult[key][j]:
            continue
        if matched[key][j]:
            fp[rank] = 1
        else:
            tp[rank], matched[key][j] = 1, True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric=not area_method), npos


def _iou(box: np.ndarray, boxes: np.ndarray, legacy_plus_one: bool) -> np.ndarray:
    one = 1.0 if legacy_plus_one else 0.0
    iw = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + one, 0.0)
    ih = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + one, 0.0)
    inter = iw * ih
    area = (box[2] - box[0] + one) * (box[3] - box[1] + one)
    areas = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).eps)


def _as_dict(records: ImageRecords, name: str) -> dict:
    if isinstance(records, Mapping):
        return dict(records)
    if isinstance(records, Sequence):
        return dict(enumerate(records))
    raise DataError(f"VOC eval: {name} is a {type(records).__name__}; expected a dict keyed by image or a list")


def _arrays(rec: Mapping[str, Any], required: tuple[str, ...], key: Hashable, num_classes: int) -> dict:
    """Validate one image's record and return it as numpy arrays (adds ``difficult`` to gt)."""
    missing = [k for k in required if k not in rec]
    if missing:
        raise DataError(f"VOC eval: image {key!r} lacks {missing}; expected keys {list(required)}")
    out = {"boxes": np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4),
           "labels": np.asarray(rec["labels"], dtype=np.int64).reshape(-1)}
    n = len(out["boxes"])
    if "scores" in required:
        out["scores"] = np.asarray(rec["scores"], dtype=np.float64).reshape(-1)
    else:
        out["difficult"] = np.asarray(rec.get("difficult", np.zeros(n)), dtype=bool).reshape(-1)
    bad = {k: len(v) for k, v in out.items() if len(v) != n}
    if bad:
        raise DataError(f"VOC eval: image {key!r} has {n} boxes but lengths {bad}; expected one entry per box")
    if n and (out["labels"].min() < 0 or out["labels"].max() >= num_classes):
        raise DataError(f"VOC eval: image {key!r} has labels outside 0..{num_classes - 1}: "
                        f"{sorted(set(out['labels'].tolist()))}")
    return out


def _xywh_to_xyxy(b: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in b)
    return [x, y, x + w, y + h]


def _load_json(path: str | os.PathLike, kind: type, expected: str) -> Any:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"VOC eval: {path} does not exist; expected {expected}") from None
    except ValueError as exc:
        raise DataError(f"VOC eval: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, kind):
        raise DataError(f"VOC eval: {path} holds a {type(data).__name__}; expected {expected}")
    return data
