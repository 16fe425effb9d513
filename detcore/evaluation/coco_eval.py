"""COCO evaluation with faster-coco-eval (or pycocotools): COCO results -> COCOeval metrics.

Torch-free on purpose, so ``detcore eval`` starts quickly; model outputs become COCO results
in :mod:`detcore.evaluation.predictions`.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcore.data.coco_json import coco_from_dict, load_coco
from detcore.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")
# pycocotools is the reference. faster-coco-eval (a dependency) runs COCOeval's per-image matching
# and accumulate in C++ with the same rules, about 7x faster on large results files; it is the
# default because its twelve numbers are pycocotools': bit for bit on boxes, and for masks up to the
# last bit of a figure (~1e-16, precisions summed in another order). The unit tests compare the two on
# bbox and segm results, benchmarks/evaluation.py and mask_eval.py on 5,000 and 500 images.
BACKENDS = ("faster-coco-eval", "pycocotools")
DEFAULT_BACKEND = "faster-coco-eval"


def check_backend(backend: str, where: str = "backend") -> None:
    """ConfigError (one line) unless ``backend`` is known and importable."""
    if backend not in BACKENDS:
        raise ConfigError(f"{where}: unknown COCO evaluation backend {backend!r}; expected one of {list(BACKENDS)}")
    if backend == "faster-coco-eval":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            raise ConfigError(f"{where}: backend 'faster-coco-eval' is not installed (a dependency of detlaunch: "
                              f"pip install faster-coco-eval), or choose pycocotools (evaluation.backend: "
                              f"pycocotools, or --backend pycocotools)") from None


# --- COCOeval ---------------------------------------------------------------------------------
def _load_results(results: Sequence[dict] | str | Path) -> tuple[list[dict], str]:
    """The result objects and a name for messages. A file's objects are fresh; a caller's list
    is copied object by object, because ``loadRes`` adds keys (``area``, ``id``) to each."""
    if isinstance(results, (str, Path)):
        path = Path(results)
        if not path.is_file():
            raise DataError(f"results file {path} does not exist")
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"results file {path} is not valid json: {exc}") from None
        return data, f"results file {path}"
    return [dict(res) if isinstance(res, dict) else res for res in results], "results"


def _check_results(results: Any, name: str, coco_gt: COCO, gt_name: str, metrics: Sequence[str]) -> None:
    if not isinstance(results, list):
        raise DataError(f"{name}: expected a json list of result objects, got {type(results).__name__}")
    needed = {"bbox": "bbox", "segm": "segmentation"}
    for pos, res in enumerate(results):
        if not isinstance(res, dict) or not {"image_id", "category_id", "score"} <= res.keys():
            raise DataError(f"{name}: result #{pos} must be an object with image_id, category_id, score; "
                            f"got {res!r:.200}")
        if res["image_id"] not in coco_gt.imgs:
            raise DataError(f"{name}: result #{pos} has image_id {res['image_id']!r}, which is not an image of "
                            f"{gt_name}; results and ground truth must come from the same annotation file")
        if res["category_id"] not in coco_gt.cats:
            raise DataError(f"{name}: result #{pos} has category_id {res['category_id']!r}, which is not a category "
                            f"of {gt_name} (known: {sorted(coco_gt.cats)})")
        for metric in metrics:
            if needed[metric] not in res:
                raise DataError(f"{name}: result #{pos} has no '{needed[metric]}', needed for metric {metric!r}")


def _no_results(coco_gt: COCO) -> dict:
    """A results dataset without detections: ``loadRes`` refuses an empty list."""
    return {"images": list(coco_gt.dataset["images"]), "annotations": [],
            "categories": copy.deepcopy(coco_gt.dataset.get("categories", []))}


def _results_coco(coco_gt: COCO, results: list[dict]) -> COCO:
    """``coco_gt.loadRes(results)``; an empty list gives an empty results set.

    ``loadRes`` sets ``area`` and ``id`` (and for boxes a ``segmentation``) on every object; it
    sets the same values again when called twice, so one list serves every metric. Shallow
    copies are enough (nothing nested is changed in place); no ``deepcopy``, which took longer
    than ``loadRes`` itself on 500,000 detections."""
    if not results:
        return coco_from_dict(_no_results(coco_gt))
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes(results)


def _per_class_ap(coco_eval: COCOeval) -> dict[int, float]:
    """{category id: AP@[.5:.95]} (all areas, 100 dets); -1 where pycocotools has no data."""
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M], K in params.catIds order (sorted by evaluate)
    out = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[cat_id] = float(np.mean(p)) if p.size else -1.0
    return out


def _categories(coco_gt: COCO, cat_ids: Sequence[int] | None, class_names: Sequence[str] | None,
                gt_name: str) -> list[int]:
    """Category ids to evaluate: ``cat_ids``; else the GT categories named ``class_names`` (in
    that order) when every name is one; else all GT categories by id."""
    all_ids = sorted(coco_gt.getCatIds())
    if cat_ids is not None:
        unknown = [c for c in cat_ids if c not in coco_gt.cats]
        if unknown:
            raise ConfigError(f"cat_ids {unknown} are not categories of {gt_name} (known: {all_ids})")
        chosen = list(cat_ids)
    elif class_names is not None:
        by_name: dict[str, int] = {}
        for c in all_ids:
            by_name.setdefault(coco_gt.cats[c]["name"], c)
        chosen = [by_name[n] for n in class_names] if all(n in by_name for n in class_names) else all_ids
    else:
        chosen = all_ids
    if class_names is not None and len(class_names) != len(chosen):
        raise ConfigError(f"class_names has {len(class_names)} names ({list(class_names)}) but {len(chosen)} "
                          f"categories are evaluated; pass one name per category or cat_ids")
    return chosen


def _metric_results(results: list[dict], metric: str) -> list[dict]:
    """The results ``metric`` is evaluated on. ``segm``: without their boxes, as MMDetection and detectron2 evaluate
    masks: ``loadRes`` then takes each detection's area from its mask, so the small/medium/large ranges
    (APs/APm/APl) compare mask areas on both sides (given a box, it would take the box's area)."""
    if metric != "segm":
        return results
    return [{k: v for k, v in r.items() if k != "bbox"} for r in results]


def _eval_sets(coco_gt: COCO, backend: str) -> tuple[Any, Callable[[list[dict]], Any], Any]:
    """``(gt, load results, COCOeval class)`` of ``backend``; the ground truth is built once and shared by every
    metric (COCOeval changes nothing in it another metric sees: it turns polygons into RLEs, sets ``ignore``)."""
    if backend == "pycocotools":
        return coco_gt, lambda results: _results_coco(coco_gt, results), COCOeval
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    quiet = lambda *args, **kwargs: None  # noqa: E731  (its progress prints; the summary is logged below)
    fast_gt = FasterCOCO(coco_gt.dataset, print_function=quiet)

    def load(results: list[dict]) -> Any:
        return fast_gt.loadRes(results) if results else FasterCOCO(_no_results(coco_gt), print_function=quiet)
    return fast_gt, load, lambda gt, dt, iouType: COCOeval_faster(gt, dt, iouType=iouType, print_function=quiet)


def evaluate_coco(gt: COCO | str | Path, results: Sequence[dict] | str | Path, metrics: Sequence[str] = ("bbox",),
                  classwise: bool = True, class_names: Sequence[str] | None = None, *,
                  cat_ids: Sequence[int] | None = None, img_ids: Sequence[int] | None = None,
                  backend: str = DEFAULT_BACKEND, table_level: int = logging.INFO) -> dict[str, dict]:
    """Run pycocotools COCOeval for each metric (``bbox``, ``segm``).

    Returns ``{metric: {AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl}}`` with
    pycocotools' values (-1 where it has nothing to measure) and, if ``classwise``,
    ``{metric}_per_class: {name: AP}``. Categories: ``cat_ids`` if given; else, when every one of
    ``class_names`` is a GT category name, those categories in that order (a dataset's class
    subset); else all GT categories, with ``class_names`` as their display names. ``img_ids``
    restricts the images. Empty results evaluate to 0 (-1 where pycocotools would give -1).
    ``backend``: ``faster-coco-eval`` (default) or ``pycocotools`` (the reference; the same numbers).
    ``table_level``: the logging level of pycocotools' summary table (training logs it at DEBUG
    and its metrics as one line instead).
    """
    check_backend(backend)
    if isinstance(metrics, str):
        metrics = [metrics]
    bad = [m for m in metrics if m not in IOU_TYPES]
    if bad or not metrics:
        raise ConfigError(f"unknown metric(s) {bad or metrics}; expected a list of {list(IOU_TYPES)}")
    gt_name = f"ground truth {gt}" if not isinstance(gt, COCO) else "the ground truth"
    coco_gt = gt if isinstance(gt, COCO) else load_coco(gt)
    res_list, res_name = _load_results(results)
    _check_results(res_list, res_name, coco_gt, gt_name, metrics)
    if "segm" in metrics:
        missing = next((a for a in coco_gt.dataset.get("annotations", []) if "segmentation" not in a), None)
        if missing is not None:
            raise DataError(f"{gt_name}: annotation id {missing.get('id')} has no segmentation; "
                            f"metric 'segm' needs masks in the ground truth")
    cat_ids = _categories(coco_gt, cat_ids, class_names, gt_name)
    names = list(class_names) if class_names is not None else [coco_gt.cats[c]["name"] for c in cat_ids]
    out: dict[str, dict] = {}
    eval_gt, load_results, coco_eval_of = _eval_sets(coco_gt, backend)
    loaded: dict[bool, Any] = {}  # one loadRes for the boxes' metric, one for the masks'
    for metric in metrics:
        segm = metric == "segm"
        if segm not in loaded:
            loaded[segm] = load_results(_metric_results(res_list, metric))
        coco_eval = coco_eval_of(eval_gt, loaded[segm], iouType=metric)
        coco_eval.params.catIds = cat_ids
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            coco_eval.evaluate()
            coco_eval.accumulate()
            summary = io.StringIO()
            if backend != "pycocotools":  # quiet while it worked; its summary is the table pycocotools prints
                coco_eval.print_function = print
            with contextlib.redirect_stdout(summary):
                coco_eval.summarize()
        logger.debug("pycocotools (%s): %s", metric, log.getvalue().strip())
        text = summary.getvalue().rstrip() or " ".join(f"{k}={v:.3f}" for k, v in zip(METRIC_KEYS, coco_eval.stats))
        logger.log(table_level, "COCO %s metrics (%s):\n%s", metric, backend, text)
        out[metric] = {key: float(v) for key, v in zip(METRIC_KEYS, coco_eval.stats)}  # faster-coco-eval has more
        if classwise:
            per_cat = _per_class_ap(coco_eval)
            out[f"{metric}_per_class"] = {name: per_cat[c] for name, c in zip(names, cat_ids)}
    return out


def _fmt(value: float) -> str:
    return "n/a" if value < 0 else f"{value:.3f}"


def format_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Plain-text tables: the summary metrics per IoU type, then per-class AP if present."""
    types = [m for m in IOU_TYPES if m in metrics]
    lines = ["  ".join(["metric".ljust(6)] + [k.rjust(6) for k in METRIC_KEYS])]
    for m in types:
        lines.append("  ".join([m.ljust(6)] + [_fmt(metrics[m][k]).rjust(6) for k in METRIC_KEYS]))
    per_class = [m for m in types if f"{m}_per_class" in metrics]
    if per_class:
        names = list(dict.fromkeys(n for m in per_class for n in metrics[f"{m}_per_class"]))
        width = max([len("class")] + [len(n) for n in names])
        lines += ["", "  ".join(["class".ljust(width)] + [f"{m} AP".rjust(7) for m in per_class])]
        for name in names:
            row = [_fmt(metrics[f"{m}_per_class"].get(name, -1.0)).rjust(7) for m in per_class]
            lines.append("  ".join([name.ljust(width)] + row))
    lines.append("(n/a: nothing in the ground truth to measure, -1 in pycocotools)")
    return "\n".join(lines)
