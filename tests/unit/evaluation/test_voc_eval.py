from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detcore.errors import DataError
from detcore.evaluation.voc_eval import evaluate_voc_from_coco, voc_ap, voc_map

A, B, FAR = [0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]


def gt(boxes, labels, difficult=None):
    rec = {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": np.array(labels)}
    if difficult is not None:
        rec["difficult"] = np.array(difficult, dtype=bool)
    return rec


def det(boxes, scores, labels):
    return {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "scores": np.array(scores), "labels": np.array(labels)}


def test_perfect_detections_score_one_in_both_metrics():
    gts = {"a": gt([A, B], [0, 2]), "b": gt([FAR, A, B], [1, 1, 2])}
    dets = {k: det(v["boxes"], np.linspace(0.9, 0.5, len(v["boxes"])), v["labels"]) for k, v in gts.items()}
    for area in (True, False):
        result = voc_map(gts, dets, num_classes=3, area_method=area)
        assert result["mAP"] == pytest.approx(1.0)
        assert result["AP_per_class"] == pytest.approx([1.0, 1.0, 1.0])
        assert result["num_gts"] == [1, 2, 2]


def test_hand_computed_tp_fp_tp():
    # ranks: TP (rec .5, prec 1), FP (rec .5, prec .5), TP (rec 1, prec 2/3)
    gts = [gt([A, B], [0, 0])]
    dets = [det([A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    area = voc_map(gts, dets, 1)["mAP"]
    eleven = voc_map(gts, dets, 1, area_method=False)["mAP"]
    assert area == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)                # 0.8333: area under the envelope
    assert eleven == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)             # 0.8485: recall 0..0.5 at 1, 0.6..1 at 2/3
    assert eleven != pytest.approx(area)


def test_duplicate_detection_is_a_false_positive():
    gts = [gt([A, B], [0, 0])]
    dets = [det([A, [0, 0, 10, 11], B], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert voc_map(gts, dets, 1)["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_difficult_boxes_neither_count_nor_penalize():
    dets_a = [det([A], [0.9], [0])]
    # an undetected difficult box does not lower recall...
    assert voc_map([gt([A, B], [0, 0], [False, True])], dets_a, 1)["mAP"] == pytest.approx(1.0)
    assert voc_map([gt([A, B], [0, 0], [False, False])], dets_a, 1)["mAP"] == pytest.approx(0.5)
    # ...and a detection on it is not a false positive
    dets_ba = [det([B, A], [0.95, 0.9], [0, 0])]
    assert voc_map([gt([A, B], [0, 0], [False, True])], dets_ba, 1)["mAP"] == pytest.approx(1.0)
    assert voc_map([gt([A], [0])], dets_ba, 1)["mAP"] == pytest.approx(0.5)  # B not in gt at all: FP first


def test_legacy_plus_one_changes_borderline_iou():
    gts, dets = [gt([[0, 0, 9, 9]], [0])], [det([[0, 0, 4, 9]], [0.9], [0])]
    assert voc_map(gts, dets, 1, legacy_plus_one=True)["mAP"] == pytest.approx(1.0)   # 50 / 100 = 0.5 >= 0.5
    assert voc_map(gts, dets, 1, legacy_plus_one=False)["mAP"] == pytest.approx(0.0)  # 36 / 81 < 0.5
    assert voc_map(gts, dets, 1, iou_thr=0.6, legacy_plus_one=True)["mAP"] == pytest.approx(0.0)


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    gts = {1: gt([A], [0]), 2: gt([], [])}
    dets = {1: det([A], [0.9], [0]), 2: det([B], [0.8], [1])}
    result = voc_map(gts, dets, 2)
    assert result["mAP"] == pytest.approx(1.0)
    assert math.isnan(result["AP_per_class"][1]) and result["num_gts"] == [1, 0]
    assert voc_map({1: gt([A], [0])}, {}, 1)["mAP"] == 0.0  # no detections at all


def test_area_ap_matches_a_brute_force_definition():
    """All-point AP == sum over true positives of (1/npos) * best precision at that recall or beyond."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        hits = rng.random(n) < 0.6
        npos = int(hits.sum()) + int(rng.integers(0, 4))
        if npos == 0:
            continue
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        recall, precision = tp / npos, tp / (tp + fp)
        brute = sum(precision[i:].max() / npos for i in range(n) if hits[i])
        assert voc_ap(recall, precision) == pytest.approx(brute)
        eleven = np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.arange(0, 1.1, 0.1)])
        assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(eleven)


def test_input_errors():
    with pytest.raises(DataError, match="no ground-truth entry"):
        voc_map({1: gt([A], [0])}, {2: det([A], [0.9], [0])}, 1)
    with pytest.raises(DataError, match="labels outside 0..0"):
        voc_map({1: gt([A], [3])}, {}, 1)
    with pytest.raises(DataError, match="no non-difficult ground-truth"):
        voc_map({1: gt([A], [0], [True])}, {}, 1)
    with pytest.raises(DataError, match="lacks \\['scores'\\]"):
        voc_map({1: gt([A], [0])}, {1: {"boxes": [A], "labels": [0]}}, 1)


def _write_voc_coco(tmp_path):
    """Ground truth as ``detcore convert voc`` writes it: VOC (1..10 inclusive) -> COCO [0, 0, 10, 10]."""
    data = {
        "images": [{"id": 1, "file_name": "VOC2007/JPEGImages/000001.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "VOC2007/JPEGImages/000002.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "aeroplane"}, {"id": 2, "name": "bicycle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0, "difficult": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 1,
             "difficult": 1},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0, "difficult": 0},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path, data


def test_evaluate_from_coco_files(tmp_path):
    gt_path, data = _write_voc_coco(tmp_path)
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in data["annotations"]]
    res_path = tmp_path / "results.json"
    res_path.write_text(json.dumps(results))
    result = evaluate_voc_from_coco(gt_path, res_path, progress=False)
    assert result["mAP"] == pytest.approx(1.0) and result["classes"] == ["aeroplane", "bicycle"]
    assert result["num_gts"] == [1, 1]  # the difficult bicycle does not count

    # COCO-frame boxes give the devkit's IoU: [0, 0, 5, 10] vs [0, 0, 10, 10] is VOC (1..5) vs (1..10) = 0.5
    res_path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 10], "score": 0.5}]))
    from_coco = evaluate_voc_from_coco(gt_path, res_path, progress=False)["AP_per_class"][0]
    devkit = voc_map([gt([[1, 1, 10, 10]], [0])], [det([[1, 1, 5, 10]], [0.5], [0])], 1)["mAP"]
    assert from_coco == pytest.approx(devkit) == pytest.approx(1.0)


def test_evaluate_from_coco_errors(tmp_path):
    gt_path, _ = _write_voc_coco(tmp_path)
    res_path = tmp_path / "results.json"
    res_path.write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": A, "score": 0.5}]))
    with pytest.raises(DataError, match=r"results\.json record #0 has image_id 99"):
        evaluate_voc_from_coco(gt_path, res_path, progress=False)
    res_path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": A}]))
    with pytest.raises(DataError, match=r"record #0 is malformed.*'score'"):
        evaluate_voc_from_coco(gt_path, res_path, progress=False)
    res_path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match="expected a COCO results list"):
        evaluate_voc_from_coco(gt_path, res_path, progress=False)


def test_detcore_eval_metric_map_both_methods_ignores_difficult(tmp_path, capsys):
    """``detcore eval --metric mAP`` over COCO files: TP, FP, TP as in the hand-computed case above; a missed
    difficult box costs nothing."""
    from detcore.tools.cli import main

    box = lambda x: [x, 0, 10, 10]  # noqa: E731  (COCO x, y, w, h)
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
          "categories": [{"id": 1, "name": "cat"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box(x), "area": 100, "iscrowd": 0,
                           "difficult": int(x == 80)} for i, x in enumerate((0, 40, 80))]}
    results = [{"image_id": 1, "category_id": 1, "bbox": box(x), "score": s} for x, s in ((0, .9), (20, .8), (40, .7))]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    argv = ["eval", "--ann", str(tmp_path / "gt.json"), "--results", str(tmp_path / "dt.json"), "--metric", "mAP"]
    got = {}
    for method in ("area", "11points"):
        assert main([*argv, "--voc-method", method, "--json"]) == 0
        got[method] = json.loads(capsys.readouterr().out)["mAP"]["mAP"]
    assert got["area"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert got["11points"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert main([*argv, "bbox", "--classwise"]) == 0
    out = capsys.readouterr().out
    assert "VOC mAP@0.5 (area): 0.8333" in out and "bbox" in out
