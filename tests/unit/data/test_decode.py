"""Image decoding: torchvision's JPEG decoder and Pillow give the same samples; uint8 pipelines equal float ones."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors

from detcore.config_values import value_problems
from detcore.data import CocoDataset, build_pipeline
from detcore.data.decode import decode_rgb
from detcore.data.transforms import to_float_image
from detcore.errors import ConfigError, DataError

H, W = 90, 150


def _photo(seed: int) -> Image.Image:
    """Noise on a gradient with a polygon: JPEG's hard case (every block has detail)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 1.5, yy * 2.5, (xx + yy) * 0.8], -1) + rng.normal(0, 20, (H, W, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    ImageDraw.Draw(img).polygon([(20, 10), (90, 15), (70, 70), (25, 60)], fill=(250, 30, 60))
    return img


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("decode")
    (root / "img").mkdir()
    images, anns = [], []
    for i, (name, save) in enumerate([("a.jpg", {"quality": 90}), ("b.jpg", {"quality": 75, "subsampling": 0}),
                                      ("c.png", {}), ("d.jpg", {"quality": 90, "mode": "L"})]):
        img = _photo(i)
        img = img.convert(save.pop("mode")) if "mode" in save else img
        img.save(root / "img" / name, **save)
        images.append({"id": i + 1, "file_name": name, "width": W, "height": H})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "bbox": [20, 10, 70, 60],
                     "area": 3000.0, "segmentation": [[20, 10, 90, 15, 70, 70, 25, 60]]})
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "thing"}]}))
    return root


def _dataset(root: Path, decoder: str, pipeline: list | None = None) -> CocoDataset:
    return CocoDataset(root / "ann.json", root / "img", with_mask=True, decoder=decoder,
                       pipeline=pipeline if pipeline is not None else [{"type": "RandomFlip", "prob": 0.5}])


def test_decoders_give_the_same_samples(dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both decoders are libjpeg-turbo with the same settings: the same pixels here (the bound
    allows the level or two two builds may differ by); boxes and masks are the same objects."""
    fast, pil = _dataset(dataset_dir, "torchvision"), _dataset(dataset_dir, "pillow")
    for i in range(len(fast)):
        torch.manual_seed(i)
        image, target = fast[i]
        torch.manual_seed(i)
        ref, ref_target = pil[i]
        assert image.dtype == ref.dtype == torch.float32 and image.shape == ref.shape == (3, H, W)
        assert float((image - ref).abs().max()) * 255 <= 2.0
        assert float((image - ref).abs().mean()) * 255 <= 0.05
        assert torch.equal(target["boxes"], ref_target["boxes"]) and torch.equal(target["masks"], ref_target["masks"])
        assert torch.equal(target["labels"], ref_target["labels"])
    rgb = np.array(Image.open(dataset_dir / "img" / "a.jpg").convert("RGB"))
    with monkeypatch.context() as m:  # an RGB JPEG never reaches Pillow's decoder with the default
        m.setattr("detcore.data.decode.read_rgb", lambda *a: pytest.fail("Pillow decoded an RGB JPEG"))
        decoded = decode_rgb(dataset_dir / "img" / "a.jpg")
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, H, W)
    assert int((decoded.permute(1, 2, 0).int() - torch.from_numpy(rgb).int()).abs().max()) <= 2
    gray = decode_rgb(dataset_dir / "img" / "d.jpg")  # grayscale JPEG: Pillow's path, replicated to RGB
    assert gray.shape == (3, H, W) and torch.equal(gray[0], gray[2])


def test_bad_files_and_names(dataset_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((dataset_dir / "img" / "a.jpg").read_bytes()[:300])
    with pytest.raises(DataError, match="broken.jpg"):
        decode_rgb(broken, decoder="torchvision")
    with pytest.raises(ConfigError, match="decoder .dataset. must be one of torchvision, pillow; got 'cv2'"):
        CocoDataset(dataset_dir / "ann.json", dataset_dir / "img", decoder="cv2")
    # checked with the config's other values, before anything is built (and by `launcher submit`, torch-free)
    cfg = {"data": {"train": {"type": "CocoDataset", "decoder": "cv2"}, "val": {"type": "CocoDataset",
                                                                                "decoder": "pillow"}}}
    assert value_problems(cfg) == ["data.train.decoder must be one of torchvision, pillow, got 'cv2'"]


@pytest.mark.parametrize("steps", [
    [{"type": "Resize", "scale": [W, H]}, {"type": "RandomFlip", "prob": 1.0}],  # uint8 to the end
    [{"type": "RandomFlip", "prob": 0.5}, {"type": "Resize", "scale": [200, 100]}],  # a real resize converts first
    [{"type": "RandomFlip", "prob": 1.0}, {"type": "PhotoMetricDistortion", "prob": 1.0},
     {"type": "RandomFlip", "prob": 1.0, "direction": "vertical"}],  # converted before the colour jitter
    [{"type": "Rotate", "level": 5, "prob": 1.0}],
])
def test_a_uint8_image_gives_the_float_pipelines_output_bit_for_bit(dataset_dir: Path, steps: list) -> None:
    pipeline = build_pipeline(steps)
    pixels = tv_tensors.Image(decode_rgb(dataset_dir / "img" / "a.jpg"))
    box = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([[20.0, 10.0, 90.0, 70.0]]), format="XYXY",
                                             canvas_size=(H, W)), "labels": torch.tensor([1])}
    for seed in range(3):
        torch.manual_seed(seed)
        out, target = pipeline(pixels, dict(box))
        torch.manual_seed(seed)
        ref, ref_target = pipeline(to_float_image(pixels), dict(box))
        assert out.dtype == torch.float32 and isinstance(out, tv_tensors.Image)
        assert torch.equal(out, ref) and torch.equal(target["boxes"], ref_target["boxes"])
