"""Every metric detcore evaluates, behind one call: COCO ``bbox``/``segm`` and Pascal VOC ``mAP``.

``evaluate_detections`` sends ``bbox``/``segm`` to :func:`detcore.evaluation.coco_eval.evaluate_coco`
and ``mAP`` to :func:`detcore.evaluation.voc_eval.evaluate_voc_coco` (IoU 0.5, ``difficult`` and
crowd boxes ignored; ``voc_method`` ``area``, the VOC2010+ devkit, or ``11points``, VOC2007).
:func:`metric_problem` says before anything runs whether a config can produce a metric.
Torch-free.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from pycocotools.coco import COCO

from detcore.errors import ConfigError
from detcore.evaluation.coco_eval import DEFAULT_BACKEND

COCO_METRICS = ("bbox", "segm")
METRICS = (*COCO_METRICS, "mAP")
VOC_METHODS = ("area", "11points")
MASK_DETECTORS = ("MaskRCNN",)  # the detectors whose outputs always hold masks (segm needs them)
MASK_OPTIONS = ("mask_head", "mask_predictor", "mask_layers", "mask_roi_size")  # roi_head options of a mask branch


def predicts_masks(model_cfg: Mapping[str, Any] | None) -> bool:
    """Whether the detector of ``model:`` config outputs masks: a MaskRCNN, or a CascadeRCNN whose
    ``roi_head`` has a mask branch (Cascade Mask R-CNN, as MMDetection tells them apart)."""
    if not isinstance(model_cfg, Mapping):
        return False
    roi = model_cfg.get("roi_head")
    return model_cfg.get("type") in MASK_DETECTORS or (
        model_cfg.get("type") == "CascadeRCNN" and isinstance(roi, Mapping) and any(k in roi for k in MASK_OPTIONS))


def check_metrics(metrics: Sequence[str], where: str = "metric") -> list[str]:
    """``metrics`` as a list (a single name is one metric), or ConfigError naming the unknown ones."""
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    bad = [m for m in names if m not in METRICS]
    if bad:
        raise ConfigError(f"{where}: unknown metric {', '.join(map(repr, bad))}; expected any of {', '.join(METRICS)} "
                          f"(mAP is Pascal VOC's, at IoU 0.5)")
    return names


def check_voc_method(method: str, where: str = "voc_method") -> str:
    if method not in VOC_METHODS:
        raise ConfigError(f"{where}: got {method!r}; expected area (VOC2010+) or 11points (VOC2007)")
    return method


def metric_problem(metric: str, model_cfg: Mapping[str, Any] | None, split_cfg: Mapping[str, Any] | None) -> str | None:
    """Why ``metric`` cannot be computed for the model of ``model_cfg`` (the ``model:`` section) on a split
    configured as ``split_cfg`` (None when it can)."""
    if metric not in METRICS:
        return (f"unknown metric {metric!r}; expected any of {', '.join(METRICS)} (mAP is Pascal VOC's, "
                f"at IoU 0.5)")
    if metric == "segm":
        if not predicts_masks(model_cfg):
            kind = model_cfg.get("type") if isinstance(model_cfg, Mapping) else None
            return (f"segm needs a detector that predicts masks (MaskRCNN, or CascadeRCNN with roi_head.mask_* "
                    f"options), model.type is {kind!r}; use bbox or mAP")
        if not (split_cfg or {}).get("with_mask", False):
            return "segm needs masks in the ground truth; set with_mask: true on the split or use bbox or mAP"
    return None


def evaluate_detections(gt: COCO | str | Path, results: Sequence[dict] | str | Path,
                        metrics: Sequence[str] = ("bbox",), *,
                        classwise: bool = True, class_names: Sequence[str] | None = None,
                        backend: str = DEFAULT_BACKEND, voc_method: str = "area",
                        table_level: int = logging.INFO) -> dict[str, dict]:
    """``evaluate_coco``'s dict for the COCO metrics, plus for ``mAP``: ``{"mAP": {"mAP": value},
    "mAP_per_class": {name: AP}}`` (classes with no non-difficult box are left out)."""
    from detcore.data.coco_json import load_coco
    from detcore.evaluation.coco_eval import _load_results, evaluate_coco

    metrics = check_metrics(metrics)
    check_voc_method(voc_method)
    coco_gt = gt if isinstance(gt, COCO) else load_coco(gt)
    out: dict[str, dict] = {}
    coco_metrics = [m for m in metrics if m in COCO_METRICS]
    if coco_metrics:
        out.update(evaluate_coco(coco_gt, results, metrics=coco_metrics, classwise=classwise,
                                 class_names=class_names, backend=backend, table_level=table_level))
    if "mAP" in metrics:
        from detcore.evaluation.voc_eval import evaluate_voc_coco

        results, results_name = _load_results(results)
        voc = evaluate_voc_coco(coco_gt.dataset, results, area_method=voc_method == "area",
                                gt_name="the ground truth", results_name=results_name)
        out["mAP"] = {"mAP": voc["mAP"]}
        if classwise:
            out["mAP_per_class"] = {name: float(ap) for name, ap, n in zip(voc["classes"], voc["AP_per_class"],
                                                                            voc["num_gts"]) if n > 0}
    return out


def format_voc(metrics: Mapping[str, Mapping[str, float]], voc_method: str = "area") -> str:
    """The VOC lines of a metrics dict (empty when it holds no mAP)."""
    if "mAP" not in metrics:
        return ""
    lines = [f"VOC mAP@0.5 ({voc_method}): {metrics['mAP']['mAP']:.4f}"]
    per_class = metrics.get("mAP_per_class") or {}
    if per_class:
        width = max(len("class"), *(len(n) for n in per_class))
        lines += ["  ".join(["class".ljust(width), "AP50".rjust(7)])]
        lines += ["  ".join([name.ljust(width), f"{ap:.3f}".rjust(7)]) for name, ap in per_class.items()]
    return "\n".join(lines)
