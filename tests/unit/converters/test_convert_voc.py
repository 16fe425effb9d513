from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from detcore.data.converters import VOC_CLASSES, convert_voc
from detcore.errors import DataError
from detcore.tools import cli

REPO = Path(__file__).resolve().parents[3]


def _expected(sample, split, years=("2007", "2012")):
    return [s for s in sample if split in s[5] and s[0] in years]


def _check_against_sample(out: Path, root: Path, expected) -> COCO:
    coco = COCO(str(out))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(VOC_CLASSES)
    assert coco.getCatIds() == list(range(1, 21))
    imgs = coco.loadImgs(coco.getImgIds())
    assert [i["file_name"] for i in imgs] == [f"VOC{y}/JPEGImages/{i}.jpg" for y, i, *_ in expected]
    for img, (_year, _image_id, true_size, _xml_size, objects, _splits) in zip(imgs, expected):
        assert (img["width"], img["height"]) == true_size  # from the xml, or from the JPEG when it lacks them
        assert (root / img["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], iscrowd=None))
        assert len(anns) == len(objects)
        for ann, (name, (x1, y1, x2, y2), difficult) in zip(anns, objects):
            assert coco.loadCats(ann["category_id"])[0]["name"] == name
            assert ann["bbox"] == [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]
            assert ann["area"] == (x2 - x1 + 1) * (y2 - y1 + 1)
            assert ann["difficult"] == difficult and ann["iscrowd"] == difficult
    return coco


def test_all_years_by_default(voc_devkit, tmp_path):
    out = tmp_path / "out" / "trainval.json"
    summary = convert_voc(voc_devkit.root, out, split="trainval", progress=False)
    expected = _expected(voc_devkit.sample, "trainval")
    assert summary == {"images": 3, "annotations": 5, "categories": 20, "skipped": 0}
    _check_against_sample(out, voc_devkit.root, expected)
    # a box covering the whole 40x30 image (1..40, 1..30) is exactly the image in COCO's frame
    car = [a for a in json.loads(out.read_text())["annotations"] if a["category_id"] == VOC_CLASSES.index("car") + 1]
    assert car[0]["bbox"] == [0, 0, 40, 30]
    assert not list(out.parent.glob(".*.tmp")), "temp file left behind"


def test_one_year_and_test_split_reads_size_from_jpeg(voc_devkit, tmp_path):
    out = tmp_path / "test.json"
    summary = convert_voc(voc_devkit.root, out, split="test", years=["2007"], progress=False)
    assert summary["images"] == 1
    _check_against_sample(out, voc_devkit.root, _expected(voc_devkit.sample, "test", ("2007",)))


def test_default_years_leave_out_a_year_without_the_split(voc_devkit, tmp_path):
    # VOC2012 has no test list (as in the real release): converting 'test' uses VOC2007 only
    summary = convert_voc(voc_devkit.root, tmp_path / "t.json", split="test", progress=False)
    assert summary["images"] == 1


def test_cli_converts_voc(voc_devkit, tmp_path):
    out = tmp_path / "cli.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", "convert", "voc", str(voc_devkit.root),
                           str(out), "--split", "trainval", "--year", "2007", "2012"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed == {"output": str(out), "images": 3, "annotations": 5, "categories": 20, "skipped": 0}
    _check_against_sample(out, voc_devkit.root, _expected(voc_devkit.sample, "trainval"))


def test_cli_reports_data_error_in_one_line(voc_devkit, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites sys.argv
    code = cli.main(["convert", "voc", str(voc_devkit.root), str(tmp_path / "x.json"), "--split", "nosuchsplit",
                     "--year", "2007"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("detcore convert: error: VOC: split list") and "nosuchsplit.txt" in err
    assert "(available: trainval, test)" in err or "(available: test, trainval)" in err
    assert not (tmp_path / "x.json").exists()


def test_unknown_class_names_the_xml_and_suggests(voc_devkit, tmp_path):
    xml = voc_devkit.root / "VOC2007" / "Annotations" / "000002.xml"
    xml.write_text(xml.read_text().replace("<name>car</name>", "<name>cars</name>"))
    with pytest.raises(DataError, match=r"000002\.xml object #0.*'cars'.*did you mean 'car'"):
        convert_voc(voc_devkit.root, tmp_path / "x.json", progress=False)


def test_invalid_xml_names_the_file_and_keeps_previous_output(voc_devkit, tmp_path):
    out = tmp_path / "x.json"
    out.write_text("previous")
    (voc_devkit.root / "VOC2012" / "Annotations" / "2008_000001.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"2008_000001\.xml is not valid XML"):
        convert_voc(voc_devkit.root, out, progress=False)
    assert out.read_text() == "previous"


def test_missing_annotation_and_bad_box_are_errors(voc_devkit, tmp_path):
    main = voc_devkit.root / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    main.write_text(main.read_text() + "000099\n")
    with pytest.raises(DataError, match=r"000099\.xml does not exist"):
        convert_voc(voc_devkit.root, tmp_path / "x.json", years=["2007"], progress=False)
    main.write_text("000001\n")
    xml = voc_devkit.root / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<xmax>20</xmax>", "<xmax>4</xmax>"))
    with pytest.raises(DataError, match=r"000001\.xml object #0 \(dog\): empty box"):
        convert_voc(voc_devkit.root, tmp_path / "x.json", years=["2007"], progress=False)


def test_not_a_devkit(tmp_path):
    with pytest.raises(DataError, match="no VOC2007/ or VOC2012/"):
        convert_voc(tmp_path, tmp_path / "x.json", progress=False)
