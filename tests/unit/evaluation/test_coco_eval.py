"""COCO evaluation: same numbers as pycocotools, -1 and empty results, outputs -> results."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcore.data import ShapesDataset, generate_shapes
from detcore.errors import DataError
from detcore.evaluation import METRIC_KEYS, evaluate_coco, format_table, gather_predictions, results_to_coco
from detcore.tools.cli import main as cli_main

SMALL = {"num_train": 1, "num_val": 8, "size": 64, "seed": 0}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes") / "shapes", **SMALL)


@pytest.fixture(scope="module")
def gt_file(shapes_root) -> Path:
    """The val split plus a category without any annotation (so its AP is -1)."""
    data = json.loads((shapes_root / "annotations" / "instances_val.json").read_text())
    data["categories"].append({"id": 4, "name": "hexagon", "supercategory": "shape"})
    path = shapes_root / "gt_with_hexagon.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def results_file(gt_file) -> Path:
    """Jittered ground truth plus false positives, with boxes and RLE masks."""
    coco = COCO(str(gt_file))
    rng = np.random.default_rng(0)
    results = []
    for ann in coco.dataset["annotations"]:
        mask = np.roll(coco.annToMask(ann), int(rng.integers(-2, 3)), axis=1)
        rle = mask_utils.encode(np.asfortranarray(mask))
        x, y, w, h = ann["bbox"]
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": float(rng.random()),
                        "bbox": [x + float(rng.normal(0, 2)), y, w, h + float(rng.normal(0, 2))],
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
        if rng.random() < 0.4:  # a false positive with the wrong class
            wrong = results[-1] | {"category_id": ann["category_id"] % 3 + 1, "score": float(rng.random())}
            results.append(wrong)
    path = gt_file.parent / "results.json"
    path.write_text(json.dumps(results))
    return path


def _pycocotools(gt_file: Path, results_file: Path, iou_type: str) -> list[float]:
    """pycocotools as MMDetection and detectron2 call it: segm results without their boxes (areas from the masks)."""
    results = json.loads(results_file.read_text())
    if iou_type == "segm":
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        coco_eval = COCOeval(gt, gt.loadRes(results), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(v) for v in coco_eval.stats]


def _cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["detcore"])  # the CLI rewrites sys.argv; restore it afterwards
    return cli_main(["--log-level", "WARNING", "eval", *args])


def test_cli_json_equals_pycocotools(gt_file, results_file, capsys, monkeypatch):
    assert _cli(monkeypatch, "--ann", str(gt_file), "--results", str(results_file),
                "--metric", "bbox", "segm", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["bbox", "segm"]
    for iou_type in ("bbox", "segm"):
        assert list(printed[iou_type]) == list(METRIC_KEYS)
        assert list(printed[iou_type].values()) == _pycocotools(gt_file, results_file, iou_type)
    assert 0.3 < printed["bbox"]["AP"] < 1.0 and printed["bbox"]["APl"] == -1.0  # 64 px: no large objects


def test_in_memory_results_are_left_as_given(gt_file, results_file):
    results = json.loads(results_file.read_text())
    before = json.dumps(results)
    metrics = evaluate_coco(str(gt_file), results, metrics=["bbox", "segm"], classwise=False)
    assert json.dumps(results) == before  # loadRes adds area/id to its objects, not to the caller's
    for iou_type in ("bbox", "segm"):
        assert list(metrics[iou_type].values()) == _pycocotools(gt_file, results_file, iou_type)


def test_both_backends_give_pycocotools_numbers(gt_file, results_file, capsys, monkeypatch):
    """The parity that makes faster-coco-eval the default: bbox and segm, summary and per class,
    equal to pycocotools run directly and to detcore's pycocotools backend, to the last bit."""
    for backend in ("faster-coco-eval", "pycocotools"):
        assert _cli(monkeypatch, "--ann", str(gt_file), "--results", str(results_file), "--metric", "bbox", "segm",
                    "--json", "--backend", backend) == 0
        printed = json.loads(capsys.readouterr().out)
        for iou_type in ("bbox", "segm"):
            assert list(printed[iou_type].values()) == _pycocotools(gt_file, results_file, iou_type)
    for iou_type in ("bbox", "segm"):
        ref = evaluate_coco(str(gt_file), str(results_file), metrics=[iou_type], backend="pycocotools")
        fast = evaluate_coco(str(gt_file), str(results_file), metrics=[iou_type], backend="faster-coco-eval")
        assert fast == ref  # per class too, incl. -1 for the class without ground truth
        subset = {"img_ids": [1, 3, 5], "class_names": ["triangle", "rectangle"]}
        assert evaluate_coco(str(gt_file), str(results_file), metrics=[iou_type], backend="faster-coco-eval",
                             **subset) == evaluate_coco(str(gt_file), str(results_file), metrics=[iou_type],
                                                        backend="pycocotools", **subset)
    empty = evaluate_coco(str(gt_file), [], metrics=["bbox"], classwise=False, backend="faster-coco-eval")
    assert empty["bbox"] == evaluate_coco(str(gt_file), [], metrics=["bbox"], classwise=False,
                                          backend="pycocotools")["bbox"]


def test_faster_coco_eval_is_the_default_and_pycocotools_selectable(gt_file, results_file, caplog, monkeypatch):
    import logging

    from detcore.errors import ConfigError
    from detcore.evaluation.coco_eval import DEFAULT_BACKEND, check_backend
    from detcore.tools.eval_tool import add_parser

    assert DEFAULT_BACKEND == "faster-coco-eval"
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(), "eval", "")
    assert parser.parse_args(["eval", "--ann", "a", "--results", "b"]).backend == "faster-coco-eval"
    with caplog.at_level(logging.INFO, logger="detcore.evaluation.coco_eval"):
        evaluate_coco(str(gt_file), str(results_file), metrics=["bbox"])
        evaluate_coco(str(gt_file), str(results_file), metrics=["bbox"], backend="pycocotools")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "COCO bbox metrics (faster-coco-eval)", "COCO bbox metrics (pycocotools)"]
    # either backend logs the summary table MMDetection and pycocotools users read, with the same first 12 lines
    tables = [r.getMessage().splitlines()[1:13] for r in caplog.records]
    assert tables[0] == tables[1], tables
    assert tables[0][0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = ")
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install faster-coco-eval.*or choose pycocotools"):
        evaluate_coco(str(gt_file), str(results_file), metrics=["bbox"])
    check_backend("pycocotools")
    assert evaluate_coco(str(gt_file), str(results_file), metrics=["bbox"], backend="pycocotools")["bbox"]["AP"] > 0


def test_per_class_and_minus_one(gt_file, results_file, capsys, monkeypatch):
    metrics = evaluate_coco(str(gt_file), str(results_file), metrics=["bbox"])
    per_class = metrics["bbox_per_class"]
    assert list(per_class) == ["rectangle", "ellipse", "triangle", "hexagon"]
    assert per_class["hexagon"] == -1.0 and all(0 < per_class[n] <= 1 for n in ("rectangle", "ellipse", "triangle"))
    restricted = evaluate_coco(str(gt_file), str(results_file), class_names=["triangle", "rectangle"])
    assert list(restricted["bbox_per_class"]) == ["triangle", "rectangle"]
    assert restricted["bbox_per_class"]["triangle"] == per_class["triangle"]
    table = format_table(metrics)
    assert "hexagon" in table and "n/a" in table and "AP50" in table
    assert _cli(monkeypatch, "--ann", str(gt_file), "--results", str(results_file), "--classwise") == 0
    assert "triangle" in capsys.readouterr().out


def test_empty_results_are_zero(gt_file, tmp_path, capsys, monkeypatch):
    metrics = evaluate_coco(str(gt_file), [], metrics=["bbox", "segm"])
    for iou_type in ("bbox", "segm"):
        values = metrics[iou_type]
        assert values["AP"] == 0.0 and values["AR100"] == 0.0 and values["APl"] == -1.0
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert _cli(monkeypatch, "--ann", str(gt_file), "--results", str(empty), "--json") == 0
    assert json.loads(capsys.readouterr().out)["bbox"]["AP"] == 0.0


def test_malformed_inputs_name_the_file(gt_file, tmp_path, capsys, monkeypatch):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{")
    wrong_ids = tmp_path / "wrong_ids.json"
    wrong_ids.write_text(json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    for path, message in ((tmp_path / "missing.json", "does not exist"), (bad_json, "not valid json"),
                          (wrong_ids, "image_id 999")):
        with pytest.raises(DataError, match=message) as err:
            evaluate_coco(gt_file, path)
        assert str(path) in str(err.value)
        assert _cli(monkeypatch, "--ann", str(gt_file), "--results", str(path)) == 2
        assert str(path) in capsys.readouterr().err
    with pytest.raises(DataError, match="gt_missing.json"):
        evaluate_coco(tmp_path / "gt_missing.json", [])
    no_segm = tmp_path / "results_bbox_only.json"
    no_segm.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    with pytest.raises(DataError, match="no 'segmentation'"):
        evaluate_coco(gt_file, no_segm, metrics=["segm"])


@pytest.mark.parametrize("metric", ["bbox", "mAP"])
@pytest.mark.parametrize("box", [[10, 10, -5, 8], [10, 10, 8, 0]])
def test_ground_truth_with_a_non_positive_box_is_refused_naming_the_annotation(gt_file, results_file, tmp_path,
                                                                               capsys, monkeypatch, metric, box):
    """pycocotools scores such a box without a word (it can never be matched, so recall drops)."""
    data = json.loads(gt_file.read_text())
    ann = data["annotations"][3]
    ann["bbox"] = box
    bad_gt = tmp_path / "gt_degenerate.json"
    bad_gt.write_text(json.dumps(data))
    assert _cli(monkeypatch, "--ann", str(bad_gt), "--results", str(results_file), "--metric", metric) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    for words in (str(bad_gt), f"annotation id {ann['id']} of image id {ann['image_id']}", "non-positive width"):
        assert words in err, err


def test_ground_truth_with_duplicate_ids_or_a_dangling_image_is_refused(gt_file, results_file, tmp_path):
    data = json.loads(gt_file.read_text())
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    dup = tmp_path / "gt_dup.json"
    dup.write_text(json.dumps(data))
    with pytest.raises(DataError, match="duplicate annotation id"):
        evaluate_coco(dup, results_file)
    data = json.loads(gt_file.read_text())
    data["annotations"][0]["image_id"] = 12345
    dangling = tmp_path / "gt_dangling.json"
    dangling.write_text(json.dumps(data))
    with pytest.raises(DataError, match="refers to image id 12345"):
        evaluate_coco(dangling, results_file)


def _outputs_from_targets(dataset) -> list[tuple[int, dict]]:
    """Perfect predictions in the coordinates of the transformed image, as a detector returns them."""
    outputs = []
    for i in range(len(dataset)):
        _, target = dataset[i]
        n = len(target["labels"])
        outputs.append((target["image_id"], {
            "boxes": target["boxes"].as_subclass(torch.Tensor), "labels": target["labels"],
            "scores": torch.linspace(1.0, 0.5, n), "masks": target["masks"][:, None].float()}))
    return outputs


def test_results_to_coco_rescales_to_the_original_image(shapes_root, tmp_path):
    ds = ShapesDataset("val", root=tmp_path, with_mask=True, test_mode=True,
                       pipeline=[{"type": "Resize", "scale": [96, 96]}], **SMALL)
    assert ds.get_img_info(ds.img_ids[0]).img_shape == (96, 96)
    results = results_to_coco(_outputs_from_targets(ds), ds)
    gt = ds.coco
    gt_anns = [a for img_id in ds.img_ids for a in gt.imgToAnns[img_id]]
    assert len(results) == len(gt_anns)
    for res, ann in zip(results, gt_anns):
        assert set(res) == {"image_id", "category_id", "bbox", "score", "segmentation"}
        assert (res["image_id"], res["category_id"]) == (ann["image_id"], ann["category_id"])
        assert np.allclose(res["bbox"], ann["bbox"], atol=0.5)  # 64 -> 96 px and back
        assert isinstance(res["segmentation"]["counts"], str) and res["segmentation"]["size"] == [64, 64]
    json.dumps(results)
    metrics = evaluate_coco(gt, results, metrics=("bbox", "segm"))
    assert metrics["bbox"]["AP"] > 0.95 and metrics["segm"]["AP"] > 0.9


def test_results_to_coco_maps_selected_classes_and_needs_img_shape(tmp_path):
    ds = ShapesDataset("val", root=tmp_path, classes=["triangle", "rectangle"], test_mode=True, **SMALL)
    output = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 70.0, 9.0]]), "labels": torch.tensor([1, 2]),
              "scores": torch.tensor([0.9, 0.8])}
    results = results_to_coco([(ds.img_ids[0], output)], ds)
    assert [r["category_id"] for r in results] == [3, 1]
    assert results[1]["bbox"] == [5.0, 5.0, 59.0, 4.0]  # clipped to the 64 px image
    random_size = ShapesDataset("val", root=tmp_path, test_mode=True, **SMALL,
                                pipeline=[{"type": "Resize", "scales": [32, 128]}])
    with pytest.raises(DataError, match="img_shape"):
        results_to_coco([(1, output)], random_size)
    halved = results_to_coco([(1, output | {"img_shape": (32, 32)})], random_size)
    assert halved[0]["bbox"] == [0.0, 0.0, 20.0, 40.0]
    with pytest.raises(DataError, match="outside 1..2"):
        results_to_coco([(1, output | {"labels": torch.tensor([0, 1])})], ds)


def test_gather_predictions_without_distributed_dedupes_and_sorts():
    assert gather_predictions([(3, "c"), (1, "a"), (3, "x"), (2, "b")]) == [(1, "a"), (2, "b"), (3, "c")]


def test_mask_rles_are_each_kept_masks_rle_at_the_original_size():
    """Each kept mask's RLE is pycocotools' RLE of that mask, resized to the original size (in
    chunks) and thresholded at 0.5, or thresholded as it is when already at that size; masks not
    kept are not encoded."""
    from detcore.evaluation.predictions import _encode_masks

    masks = torch.rand(37, 1, 24, 40, generator=torch.Generator().manual_seed(0))
    keep = [k for k in range(37) if k % 5]
    for orig in ((24, 40), (30, 52)):
        expected = []
        for k in keep:
            mask = masks[k:k + 1]
            if orig != (24, 40):
                mask = torch.nn.functional.interpolate(mask, size=orig, mode="bilinear", align_corners=False)
            rle = mask_utils.encode(np.asfortranarray((mask[0, 0] >= 0.5).numpy().astype(np.uint8)))
            expected.append({"size": rle["size"], "counts": rle["counts"].decode("ascii")})
        assert _encode_masks(masks, keep, orig, chunk_size=8) == expected
    assert _encode_masks(masks, [], (24, 40)) == [] == _encode_masks(masks, [], (30, 52))


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_metrics_sharing_one_results_set_equal_each_alone(gt_file, results_file, backend):
    """One loaded results set serves every metric: in either order, each metric's numbers are
    those of evaluating it alone (segm first turns the ground-truth polygons into RLEs)."""
    alone = {m: evaluate_coco(str(gt_file), str(results_file), metrics=[m], backend=backend) for m in ("bbox", "segm")}
    for order in (["segm", "bbox"], ["bbox", "segm"]):
        together = evaluate_coco(str(gt_file), str(results_file), metrics=order, backend=backend)
        assert together == {**alone["bbox"], **alone["segm"]}


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_segm_area_ranges_use_the_mask_area_not_the_box(tmp_path, backend):
    """APs/APm/APl of masks compare mask areas, as MMDetection and detectron2 report them: a false positive whose
    mask is small (a thin 40x40 ring, 304 px) but whose box is medium (1600 px) does not count against APm."""
    square, ring = np.zeros((200, 200), bool), np.zeros((200, 200), bool)
    square[20:60, 20:60] = True
    ring[120:160, 120:160] = True
    ring[122:158, 122:158] = False
    gt = {"images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.png"}],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 20, 40, 40], "area": 1600,
                           "iscrowd": 0, "segmentation": _rle(square)}]}
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [20, 20, 40, 40], "segmentation": _rle(square)},
               {"image_id": 1, "category_id": 1, "score": 0.95, "bbox": [120, 120, 40, 40],
                "segmentation": _rle(ring)}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    segm = evaluate_coco(str(tmp_path / "gt.json"), str(tmp_path / "res.json"), metrics=["segm"], backend=backend)["segm"]
    assert segm["APm"] == pytest.approx(1.0)  # the ring's box area (1600) would have made it a medium false positive
    assert segm["AP"] < 1.0  # over all areas it is a false positive ranked first
    assert list(segm.values()) == pytest.approx(_pycocotools(tmp_path / "gt.json", tmp_path / "res.json", "segm"))
