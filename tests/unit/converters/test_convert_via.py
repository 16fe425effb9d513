from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO

from converter_samples import via2_entries, via_balloon_json
from detcore.data.converters import convert_via
from detcore.errors import DataError
from detcore.tools import cli


def test_balloon_dict_regions_through_cli(tmp_path, capsys, monkeypatch):
    src = via_balloon_json(tmp_path)
    out = tmp_path / "balloon_train.json"
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites sys.argv
    assert cli.main(["convert", "via", str(src), str(out), "--class-name", "balloon", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"output": str(out), "images": 2, "annotations": 2, "categories": 1, "skipped": 0}
    coco = COCO(str(out))
    assert coco.loadCats(coco.getCatIds()) == [{"id": 1, "name": "balloon", "supercategory": "none"}]
    imgs = coco.loadImgs(coco.getImgIds())
    assert [(i["file_name"], i["width"], i["height"]) for i in imgs] == [("a.jpg", 40, 30), ("b.jpg", 36, 24)]
    square, triangle = coco.loadAnns(coco.getAnnIds(imgIds=[imgs[0]["id"]]))
    assert square["segmentation"] == [[2, 3, 12, 3, 12, 9, 2, 9]]
    assert square["bbox"] == [2, 3, 10, 6] and square["area"] == 60 and square["iscrowd"] == 0
    assert triangle["bbox"] == [20, 5, 10, 10] and triangle["area"] == 50
    mask = coco.annToMask(square)  # the polygon rasterizes to about its area
    assert mask.shape == (30, 40) and abs(int(mask.sum()) - 60) <= 12
    assert coco.getAnnIds(imgIds=[imgs[1]["id"]]) == []


@pytest.mark.parametrize("project", [False, True], ids=["via2-export", "via2-project"])
def test_list_regions_with_class_attribute(via_list_dir, tmp_path, project):
    entries = via2_entries()
    data = {"_via_settings": {}, "_via_img_metadata": entries, "_via_attributes": {}} if project else entries
    src = tmp_path / "project.json"  # not in the image folder: --img-dir points there
    src.write_text(json.dumps(data))
    out = tmp_path / "out.json"
    summary = convert_via(src, out, class_attribute="type", img_dir=via_list_dir, progress=False)
    assert summary == {"images": 1, "annotations": 2, "categories": 2, "skipped": 1}  # the circle
    coco = COCO(str(out))
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [(1, "apple"), (2, "zebra")]
    rect, poly = coco.loadAnns(coco.getAnnIds())
    assert rect["category_id"] == 2 and rect["bbox"] == [1, 2, 5, 4] and rect["area"] == 20
    assert rect["segmentation"] == [[1, 2, 6, 2, 6, 6, 1, 6]]
    assert poly["category_id"] == 1 and poly["bbox"] == [0, 10, 4, 2] and poly["area"] == 8
    assert np.count_nonzero(coco.annToMask(rect)) > 0


def test_errors_name_the_file_and_region(via_list_dir, tmp_path):
    entries = via2_entries()
    src = tmp_path / "p.json"
    src.write_text(json.dumps(entries))
    with pytest.raises(DataError, match=r"exactly one of class_name"):
        convert_via(src, tmp_path / "o.json", progress=False)
    with pytest.raises(DataError, match=r"c\.png.*does not exist"):
        convert_via(src, tmp_path / "o.json", class_name="x", progress=False)  # images are not next to the json
    with pytest.raises(DataError, match=r"entry 'c\.png100' region #0: region attribute 'kind' is None.*type"):
        convert_via(src, tmp_path / "o.json", class_attribute="kind", img_dir=via_list_dir, progress=False)
    entries["c.png100"]["regions"][1]["shape_attributes"]["all_points_y"] = [10, 10]
    src.write_text(json.dumps(entries))
    with pytest.raises(DataError, match=r"region #1: polygon needs"):
        convert_via(src, tmp_path / "o.json", class_name="x", img_dir=via_list_dir, progress=False)
    src.write_text("{not json")
    with pytest.raises(DataError, match=r"p\.json is not valid JSON"):
        convert_via(src, tmp_path / "o.json", class_name="x", progress=False)
    src.write_text(json.dumps({"k": {"size": 3, "regions": []}}))
    with pytest.raises(DataError, match=r"entry 'k' has no 'filename'"):
        convert_via(src, tmp_path / "o.json", class_name="x", progress=False)
    assert not (tmp_path / "o.json").exists()
