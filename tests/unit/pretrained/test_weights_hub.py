"""Weights by name load from torch hub's cache (seeded here: no test uses the network), and what a run
loaded is recorded (checkpoint meta, the run's facts)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub

from detcore.checkpoint import load_checkpoint
from detcore.config import load_config
from detcore.errors import CheckpointError, ConfigError
from detcore.models import build_detector
from detcore.tools.cli import main as detcore_main
from tests.unit.pretrained.seeding import seed_classifier

ROOT = Path(__file__).resolve().parents[3]
R50 = ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml"
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"


def _refuse(*_args, **_kwargs):
    raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache of this test's own, and a network that refuses every download at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "urlopen", _refuse)  # what torch hub's downloader opens URLs with
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory):
    """A cache holding ResNet-50 (V1 and V2) and MobileNetV3 files of torchvision's names: ``(folder, states)``."""
    home = tmp_path_factory.mktemp("torch")
    folder = home / "hub" / "checkpoints"
    states = {"resnet50": seed_classifier(folder, "resnet50"),
              "mobilenet_v3_large": seed_classifier(folder, "mobilenet_v3_large")}
    torch.manual_seed(1)
    states["resnet50_v2"] = __import__("torchvision").models.resnet50().state_dict()
    torch.save(states["resnet50_v2"], folder / "resnet50-11ad3fa6.pth")  # ResNet50_Weights.IMAGENET1K_V2 = DEFAULT
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        mp.setattr(torch.hub, "urlopen", _refuse)
        yield folder, states


def _backbone(config: Path, *options: str):
    """The backbone a config's ``model.backbone`` section builds (the rest of the detector is not needed here)."""
    from detcore.registry import BACKBONES

    return BACKBONES.build(load_config(config, list(options))["model"]["backbone"])


def _assert_body_holds(body: torch.nn.Module, state: dict) -> None:
    own = body.state_dict()
    shared = [k for k in own if k in state and not k.endswith("num_batches_tracked")]
    assert len(shared) > 100
    assert all(torch.equal(own[k], state[k]) for k in shared)


def test_the_shipped_coco_configs_start_from_torchvisions_resnet50(seeded) -> None:
    folder, states = seeded
    assert load_config(R50)["model"]["backbone"]["weights"] == "torchvision://resnet50"
    model = build_detector(load_config(R50)["model"])
    _assert_body_holds(model.backbone.body, states["resnet50"])
    (record,) = model.weights_records
    assert record["weights"] == "ResNet50_Weights.IMAGENET1K_V1" and record["given"] == "torchvision://resnet50"
    assert record["file"] == str(folder / "resnet50-0676ba61.pth") and len(record["sha256"]) == 64


@pytest.mark.parametrize("spelling, state", [
    ("ResNet50_Weights.IMAGENET1K_V1", "resnet50"), ("torchvision://resnet50.imagenet1k_v1", "resnet50"),
    ("ResNet50_Weights.IMAGENET1K_V2", "resnet50_v2"), ("ResNet50_Weights.DEFAULT", "resnet50_v2"),
])
def test_every_spelling_loads_its_file(seeded, spelling: str, state: str) -> None:
    body = _backbone(R50, f"model.backbone.weights={spelling}")
    _assert_body_holds(body, seeded[1][state])
    assert body.weights_record["given"] == spelling


def test_mobilenet_by_enum_name(seeded) -> None:
    config = ROOT / "configs/torchvision/fasterrcnn_mobilenet_v3_large_fpn.yaml"
    body = _backbone(config, "model.backbone.weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1")
    _assert_body_holds(body, {k.removeprefix("features."): v for k, v in seeded[1]["mobilenet_v3_large"].items()})


def test_an_empty_cache_without_network_is_one_line_naming_the_file_url_and_folder(checkpoints: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        build_detector(load_config(R50)["model"])
    message = str(err.value)
    assert message.startswith("model.backbone.weights: torchvision://resnet50 = ResNet50_Weights.IMAGENET1K_V1 needs "
                              "resnet50-0676ba61.pth")
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message and str(checkpoints) in message
    assert "Connection refused" in message and "detcore model download" in message and "\n" not in message
    assert [p.name for p in checkpoints.iterdir() if p.suffix != ".lock"] == []  # no partial file left behind


def test_a_wrong_name_for_the_backbone_is_refused_before_any_file_is_read(checkpoints: Path) -> None:
    with pytest.raises(ConfigError, match="holds ResNet-101 weights but model.backbone.depth is 50"):
        build_detector(load_config(R50, ["model.backbone.weights=torchvision://resnet101"])["model"])
    with pytest.raises(ConfigError, match="did you mean 'torchvision://resnet50'"):
        build_detector(load_config(R50, ["model.backbone.weights=torchvision://resnet5"])["model"])


def test_a_local_file_keeps_working_and_is_recorded(seeded) -> None:
    path = seeded[0] / "resnet50-0676ba61.pth"
    body = _backbone(R50, f"model.backbone.weights={path}")
    _assert_body_holds(body, seeded[1]["resnet50"])
    assert body.weights_record["weights"] is None and body.weights_record["file"] == str(path)


def test_a_cached_file_that_is_not_torchvisions_is_loaded_with_a_warning(seeded, caplog) -> None:
    _backbone(R50)
    assert "not the 0676ba61... its name promises" in caplog.text


def test_training_records_the_weights_in_meta_and_in_the_run_facts(tmp_path: Path, checkpoints: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seed_classifier(checkpoints, "mobilenet_v3_large")  # a cache of its own: the file is deleted below
    config = tmp_path / "mobilenet_shapes.yaml"
    config.write_text(f"_base_: {SHAPES}\nmodel:\n  backbone: {{_delete_: true, type: MobileNetV3, "
                      f"weights: torchvision://mobilenet_v3_large}}\n"
                      f"  anchor_generator: {{sizes: [[32], [64], [128]]}}\n")
    run_dir = tmp_path / "work" / "runs" / "r1"
    monkeypatch.setenv("DETLAUNCH_RUN_DIR", str(run_dir))
    rc = detcore_main(["train", str(config), "--work-dir", str(tmp_path / "work"), "--no-validate", "--cfg-options",
                       "runner.max_iters=1", "data.samples_per_gpu=1", "data.workers_per_gpu=0",
                       "auto_scale_lr.enable=false", "checkpoint_config.interval=1"])
    assert rc == 0
    (record,) = load_checkpoint(tmp_path / "work" / "iter_1.pth")["meta"]["weights"]
    assert record["weights"] == "MobileNet_V3_Large_Weights.IMAGENET1K_V1"
    assert record["file"] == str(checkpoints / "mobilenet_v3_large-8738ca79.pth")
    import hashlib

    assert record["sha256"] == hashlib.sha256(Path(record["file"]).read_bytes()).hexdigest()
    facts = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [f["weights"] for f in facts if f["event"] == "weights"] == [[record]]
    # resuming reads the checkpoint, not the cache, and keeps the record of what the run started from
    for f in checkpoints.iterdir():
        f.unlink()
    rc = detcore_main(["train", str(config), "--work-dir", str(tmp_path / "work"), "--no-validate", "--resume", "auto",
                       "--cfg-options", "runner.max_iters=2", "data.samples_per_gpu=1", "data.workers_per_gpu=0",
                       "auto_scale_lr.enable=false", "checkpoint_config.interval=1"])
    assert rc == 0
    assert load_checkpoint(tmp_path / "work" / "iter_2.pth")["meta"]["weights"] == [record]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_detcore_model_download_offline_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A real download attempt through a proxy on a closed local port: refused at once, no DNS, no wait."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "https_proxy": proxy, "HTTPS_PROXY": proxy,
           "no_proxy": "", "NO_PROXY": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", "model", "download", "resnet50"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("detcore model: error: torchvision://resnet50 = ResNet50_Weights.IMAGENET1K_V1 needs "
                               "resnet50-0676ba61.pth")
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in lines[0]
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in lines[0]
