"""Converters read only inside their dataset folders and apply the datasets' image size limit, so
what they write is a dataset training accepts."""
from __future__ import annotations

import json

import pytest

from converter_samples import via2_entries
from detcore.data import CocoDataset
from detcore.data.converters import convert_cityscapes, convert_via, convert_voc
from detcore.data.image_file import MAX_PIXELS_ENV
from detcore.errors import DataError


@pytest.mark.parametrize("name", ["../../../etc/hostname", "/etc/hostname", "sub/../../c.png"])
def test_via_filename_outside_the_image_folder_is_refused(via_list_dir, tmp_path, name):
    entries = via2_entries()
    entries["c.png100"]["filename"] = name
    src = tmp_path / "p.json"
    src.write_text(json.dumps(entries))
    with pytest.raises(DataError) as exc:
        convert_via(src, tmp_path / "o.json", class_name="x", img_dir=via_list_dir, progress=False)
    assert f"{src} entry 'c.png100': filename {name!r}" in str(exc.value) and "leaves the image folder" in str(
        exc.value)
    assert not (tmp_path / "o.json").exists()


def test_via_output_loads_as_a_dataset_with_a_linked_image_folder(via_list_dir, tmp_path):
    """A folder of links into a shared store converts and trains: links inside the folder are followed."""
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "c.png").symlink_to(via_list_dir / "c.png")
    src = tmp_path / "p.json"
    src.write_text(json.dumps(via2_entries()))
    convert_via(src, tmp_path / "o.json", class_name="x", img_dir=linked, progress=False)
    ds = CocoDataset(tmp_path / "o.json", linked, test_mode=True)
    assert tuple(ds[0][0].shape) == (3, 16, 20)


@pytest.mark.parametrize("image_id", ["../../../../etc/passwd", "/etc/passwd"])
def test_voc_split_list_id_outside_the_devkit_is_refused(voc_devkit, tmp_path, image_id):
    split = voc_devkit.root / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    split.write_text(f"000001\n{image_id}\n")
    with pytest.raises(DataError) as exc:
        convert_voc(voc_devkit.root, tmp_path / "x.json", years=["2007"], progress=False)
    assert f"split list {split} has image id {image_id!r}" in str(exc.value)


def test_image_size_limit_applies_to_every_converter(voc_devkit, cityscapes_root, via_list_dir, tmp_path,
                                                     monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")  # every sample image is larger than 100 pixels
    (voc_devkit.root / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("000002\n")
    src = tmp_path / "p.json"
    src.write_text(json.dumps(via2_entries()))
    runs = [(lambda: convert_via(src, tmp_path / "o.json", class_name="x", img_dir=via_list_dir, progress=False),
             "c.png"),
            (lambda: convert_cityscapes(cityscapes_root.root, tmp_path / "o.json", split="val", progress=False),
             "_gtFine_instanceIds.png"),
            (lambda: convert_voc(voc_devkit.root, tmp_path / "o.json", years=["2007"], progress=False),
             "000002.jpg"),  # 000002.xml has no <size>: the converter reads the image header
            (lambda: convert_voc(voc_devkit.root, tmp_path / "o.json", years=["2012"], progress=False),
             "2008_000001.jpg (the <size> of")]  # the size its xml declares
    for convert, name in runs:
        with pytest.raises(DataError) as exc:
            convert()
        assert name in str(exc.value) and "above the limit of 100 pixels" in str(exc.value) and MAX_PIXELS_ENV in str(
            exc.value), exc.value
    assert not (tmp_path / "o.json").exists()
