from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from detcore.checkpoint import atomic_torch_save, load_checkpoint, load_weights, make_meta, save_checkpoint
from detcore.errors import CheckpointError
from detcore.models import build_detector

TINY = {"backbone": {"type": "TinyNet", "channels": [8, 16, 32, 32]}, "neck": {"type": "FPN", "out_channels": 32},
        "min_size": 64, "max_size": 64, "roi_head": {"representation_size": 32}}


def tiny(num_classes: int = 3, arch: str = "FasterRCNN"):
    return build_detector({"type": arch, "num_classes": num_classes, **TINY})


def meta(model) -> dict:
    return make_meta(config_text="model: {}\n", classes=["a", "b", "c"], arch=model.arch, epoch=2, iteration=40,
                     total_batch=8, world_size=2)


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    loss = sum(model([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[4.0, 4, 30, 30]]),
                                                  "labels": torch.tensor([1])}]).values())
    loss.backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.pth", model, meta(model), optimizer=opt.state_dict())
    data = torch.load(path, weights_only=True)  # plain types only
    assert data["meta"]["classes"] == ["a", "b", "c"] and data["meta"]["iter"] == 40
    assert data["meta"]["versions"]["torch"] == torch.__version__
    assert data["meta"]["world_size"] == 2 and data["meta"]["total_batch"] == 8
    other = tiny()
    report = load_weights(other, path)
    assert not report.skipped and not report.missing
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9).load_state_dict(data["optimizer"])


def test_class_mismatch_loads_compatible_and_names_skipped(tmp_path: Path) -> None:
    src = tiny(3)
    path = save_checkpoint(tmp_path / "c.pth", src, meta(src))
    dst = tiny(1)
    report = load_weights(dst, path)
    skipped = {k for k, _ in report.skipped}
    assert skipped == {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
                       "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias"}
    assert torch.equal(dst.state_dict()["backbone.fpn.layer_blocks.0.0.weight"],
                       src.state_dict()["backbone.fpn.layer_blocks.0.0.weight"])


def test_bad_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    model = tiny()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_checkpoint(tmp_path / "text.pth")
    good = save_checkpoint(tmp_path / "good.pth", model, meta(model))
    (tmp_path / "trunc.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "trunc.pth")
    retina = build_detector({"type": "RetinaNet", "num_classes": 3, **{k: v for k, v in TINY.items() if k != "roi_head"},
                             "neck": {"type": "FPN", "out_channels": 32, "extra_blocks": "p6p7"}})
    with pytest.raises(CheckpointError, match="holds a FasterRCNN but the config builds a RetinaNet"):
        load_weights(retina, good)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_weights(retina, {"state_dict": model.state_dict(), "meta": {}})


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/detcore-pwned",))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused by weights_only"):
        load_checkpoint(path)
    assert not Path("/tmp/detcore-pwned").exists()


def test_atomic_save_survives_a_crash_mid_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}, "meta": {"iter": 1}}, path)
    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.write(b"partial")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"state_dict": {"w": torch.zeros(3)}, "meta": {"iter": 2}}, path)
    monkeypatch.undo()
    data = load_checkpoint(path)
    assert data["meta"]["iter"] == 1 and torch.equal(data["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left


def test_disk_full_is_a_clear_error_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"state_dict": {"w": torch.ones(1)}, "meta": {}}, path)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint is untouched"):
        atomic_torch_save({"state_dict": {}, "meta": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(1))
