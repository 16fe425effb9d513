from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detcore.apis import async_inference_detector, inference_detector, init_detector, show_result
from detcore.checkpoint import make_meta, save_checkpoint
from detcore.config import dump_config
from detcore.models import build_detector
from detcore.tools.cli import main as detcore_main

MODEL = {"type": "FasterRCNN", "num_classes": 2, "min_size": 96, "max_size": 96,
         "backbone": {"type": "TinyNet", "channels": [8, 16, 32, 32]}, "neck": {"type": "FPN", "out_channels": 32},
         "roi_head": {"representation_size": 32, "score_thresh": 0.0}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_detector(MODEL)
    cfg = {"model": MODEL, "classes": ["cat", "dog"]}
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    save_checkpoint(path, model, make_meta(config_text=dump_config(cfg), classes=["cat", "dog"], arch="FasterRCNN"))
    return path


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    arr = (rng.random((80, 120, 3)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(arr).save(path)
    return path


def test_init_from_checkpoint_meta_and_inputs_of_every_kind(checkpoint: Path, image_file: Path) -> None:
    model = init_detector(None, checkpoint)
    assert model.class_names == ["cat", "dog"] and not model.training
    arr = np.array(Image.open(image_file).convert("RGB"))
    by_path = inference_detector(model, str(image_file))
    by_array = inference_detector(model, arr)
    by_tensor = inference_detector(model, torch.from_numpy(arr).permute(2, 0, 1))
    for res in (by_array, by_tensor):
        np.testing.assert_allclose(res["boxes"], by_path["boxes"], atol=1e-4)
    batch = inference_detector(model, [str(image_file), arr])
    assert isinstance(batch, list) and len(batch) == 2
    res = by_path
    assert set(res) >= {"boxes", "scores", "labels", "class_names"}
    assert len(res["class_names"]) == len(res["labels"])
    assert all(n in ("cat", "dog") for n in res["class_names"])
    if len(res["boxes"]):
        assert res["boxes"][:, 2].max() <= 120 + 1e-3 and res["boxes"][:, 3].max() <= 80 + 1e-3


def test_async_inference_keeps_requests_in_flight(checkpoint: Path, image_file: Path) -> None:
    model = init_detector(None, checkpoint)
    expected = inference_detector(model, str(image_file))

    async def go():
        return await asyncio.gather(*(async_inference_detector(model, str(image_file), max_in_flight=2)
                                      for _ in range(4)))

    results = asyncio.run(go())
    assert len(results) == 4
    for r in results:
        np.testing.assert_allclose(r["scores"], expected["scores"], atol=1e-5)


def test_show_result_draws_where_a_box_is(tmp_path: Path, image_file: Path) -> None:
    result = {"boxes": np.array([[10.0, 10.0, 60.0, 50.0]]), "scores": np.array([0.9]), "labels": np.array([1]),
              "class_names": ["cat"]}
    out = tmp_path / "vis" / "drawn.png"
    drawn = show_result(str(image_file), result, score_thr=0.3, out_file=out, min_side=0)  # the image's own size
    original = np.asarray(Image.open(image_file).convert("RGB"))
    assert out.is_file() and drawn.shape == original.shape
    changed = np.any(drawn != original, axis=-1)
    assert changed[10, 10:60].mean() > 0.9  # the top edge of the box is drawn
    assert not changed[70:, 70:].any()  # far from the box nothing changes
    low = dict(result, scores=np.array([0.1]))
    assert np.array_equal(show_result(str(image_file), low, score_thr=0.3, min_side=0), original)


def test_show_result_draws_a_small_image_scaled_up_with_the_box_in_its_class_colour(image_file: Path) -> None:
    from detcore.apis.palette import class_color

    result = {"boxes": np.array([[10.0, 10.0, 60.0, 50.0]]), "scores": np.array([0.9]), "labels": np.array([2]),
              "class_names": ["dog"]}
    drawn = show_result(str(image_file), result, score_thr=0.3)  # 120x80: drawn 6.4 times as large
    assert drawn.shape == (512, 768, 3)
    colour = np.all(drawn == class_color(2), axis=-1)
    bottom = colour[312:330, 64:385].sum(axis=1)  # the box's bottom edge: y = 50 * 6.4 = 320, x 64..384
    assert (bottom > 300).sum() >= 2  # at least two pixels thick, along the whole edge
    assert drawn.shape == np.asarray(show_result(str(image_file), dict(result, scores=np.array([0.1])))).shape


def test_infer_cli_over_a_folder(tmp_path: Path, checkpoint: Path, image_file: Path, capsys) -> None:
    code = detcore_main(["infer", "none", str(checkpoint), str(image_file.parent), "--out-dir", str(tmp_path / "o"),
                         "--score-thr", "0.0", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 1
    assert (tmp_path / "o" / "scene.png").is_file()
    records = json.loads((tmp_path / "o" / "results.json").read_text())
    assert records[0]["file"].endswith("scene.png")


def test_infer_cli_missing_input_is_one_line(tmp_path: Path, checkpoint: Path, capsys) -> None:
    code = detcore_main(["infer", "none", str(checkpoint), str(tmp_path / "nope"), "--out-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]


def test_infer_keeps_the_input_layout_and_never_overwrites_an_input(tmp_path: Path, checkpoint: Path,
                                                                    capsys) -> None:
    src = tmp_path / "in"
    for rel in ("sub1/img.png", "sub2/img.png", "top.jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(src / rel)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    code = detcore_main(["infer", "none", str(checkpoint), str(src), "--out-dir", str(tmp_path / "o"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 3
    written = sorted(str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert written == ["results.json", "sub1/img.png", "sub2/img.png", "top.jpg"]
    for out_dir in (src, src / "sub1"):
        code = detcore_main(["infer", "none", str(checkpoint), str(out_dir), "--out-dir", str(out_dir)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "would overwrite the input image" in err[0], err
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before


def test_image_size_limit_is_checked_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detcore.data.image_file import MAX_PIXELS_ENV
    from detcore.errors import DataError
    from detcore.apis.inference import load_image

    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((30, 200, 3), np.uint8)).save(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "5000")
    with pytest.raises(DataError, match=rf"wide.png is 200x30 \(6000 pixels\), above the limit of 5000.*{MAX_PIXELS_ENV}"):
        load_image(str(path))
    monkeypatch.setenv(MAX_PIXELS_ENV, "6000")
    assert tuple(load_image(str(path)).shape) == (3, 30, 200)
