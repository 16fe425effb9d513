"""The confusion matrix counts as MMDetection's confusion_matrix.py: a case small enough to count by hand."""
from __future__ import annotations

import numpy as np
from PIL import Image

from detcore.evaluation.confusion import box_iou, count_image, plot_confusion


def test_counts_matches_confusions_misses_and_false_positives(tmp_path) -> None:
    # 2 classes (0 cat, 1 dog) + background (2)
    m = np.zeros((3, 3), dtype=np.int64)
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    gt_labels = [0, 0, 1]
    dets = np.array([[0, 0, 10, 10],      # cat on the first cat: a match
                     [20, 20, 30, 31],    # dog on the second cat (IoU 10/11): a confusion and a false positive
                     [80, 80, 90, 90],    # dog on nothing: a false positive
                     [50, 50, 60, 60]])   # dog on the dog, but scored under the threshold: ignored
    count_image(m, gt, gt_labels, dets, [0, 1, 1, 1], [0.9, 0.8, 0.7, 0.1], iou_thr=0.5, score_thr=0.3)
    assert m.tolist() == [[1, 1, 0],   # cat: matched as cat once, as dog once
                          [0, 0, 1],   # dog: missed
                          [0, 2, 0]]   # background: two dog detections with no dog under them
    count_image(m, np.zeros((0, 4)), [], np.zeros((0, 4)), [], [])  # an empty image adds nothing
    assert int(m.sum()) == 5
    out = plot_confusion(m, ["cat", "dog"], tmp_path / "sub" / "m.png")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width >= 300
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.png"]  # no temp file left


def test_box_iou() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 20, 30]]))
    assert np.allclose(iou, [[1.0, 50 / 150, 0.0]])
