"""``detcore model list`` and ``detcore model download``: the models usable by name, and filling the cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torchvision.models as tvm

from detcore.pretrained.names import DETECTOR_OF, TORCHVISION
from detcore.tools.cli import main as detcore_main
from tests.unit.pretrained.seeding import seed_classifier

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_model_list_shows_every_weights_file_with_torchvisions_figures(checkpoints, capsys) -> None:
    seed_classifier(checkpoints, "resnet50")
    assert detcore_main(["model", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "PUBLISHED", "SIZE", "CACHED", "USE"]
    rows = {line.split()[0]: line for line in lines[1:lines.index("")]}  # the table ends at the first empty line
    assert len(rows) == sum(len(files) for _, files, _ in TORCHVISION.values()) == 19
    frcnn = rows["torchvision://fasterrcnn_resnet50_fpn"]
    assert "detection" in frcnn and "box AP 37.0" in frcnn and "160 MB" in frcnn
    assert frcnn.split()[-2:] == ["no", "configs/torchvision/fasterrcnn_resnet50_fpn.yaml"]
    assert "box AP 37.9, mask AP 34.6" in rows["torchvision://maskrcnn_resnet50_fpn"]
    assert "top-1 76.1" in rows["torchvision://resnet50"] and " yes " in rows["torchvision://resnet50"]
    assert " no " in rows["ResNet50_Weights.IMAGENET1K_V2"] and "(DEFAULT)" in rows["ResNet50_Weights.IMAGENET1K_V2"]
    assert any(line.startswith(f"cache: {checkpoints}") for line in lines)
    for builder in DETECTOR_OF:  # every config it names exists
        assert (ROOT / "configs/torchvision" / f"{builder}.yaml").is_file()


def test_model_list_json(checkpoints, capsys) -> None:
    assert detcore_main(["model", "list", "--json"]) == 0
    entries = {e["weights"]: e for e in json.loads(capsys.readouterr().out)}
    retina = entries["RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1"]
    meta = tvm.get_weight("RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1").meta
    assert retina["published"] == {"box AP": meta["_metrics"]["COCO-val2017"]["box_map"]}
    assert retina["num_params"] == meta["num_params"] and retina["cached"] is False
    assert retina["name"] == "torchvision://retinanet_resnet50_fpn_v2" and retina["task"] == "detection"
    assert retina["url"] == tvm.get_weight("RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1").url
    assert "ResNet50_Weights.DEFAULT" in entries["ResNet50_Weights.IMAGENET1K_V2"]["aliases"]
    assert entries["ResNet101_Weights.IMAGENET1K_V1"]["use"] == "model.backbone.weights (ResNet, depth 101)"


def test_model_download_of_a_cached_file_says_so(checkpoints, capsys) -> None:
    seed_classifier(checkpoints, "resnet50")
    assert detcore_main(["model", "download", "resnet50", "torchvision://resnet50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith(f"ResNet50_Weights.IMAGENET1K_V1: already cached "
                                                 f"{checkpoints / 'resnet50-0676ba61.pth'}") for line in out)
    assert "not torchvision's file" in out[0]  # a seeded file: its sha256 is not the one its name promises


@pytest.mark.parametrize("argv, words", [
    (["model", "download", "torchvision://resnet5"], ["unknown weights name", "did you mean 'torchvision://resnet50'"]),
    (["model", "download", "checkpoints/model.pth"], ["is not a weights name"]),
    (["model", "download"], ["needs at least one NAME"]),
    (["model", "list", "resnet50"], ["takes no names"]),
])
def test_model_command_mistakes_are_one_line(checkpoints, capsys, argv, words) -> None:
    assert detcore_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detcore model: error: ") and all(w in err[0] for w in words), err
    assert not checkpoints.exists() or not any(checkpoints.iterdir())
