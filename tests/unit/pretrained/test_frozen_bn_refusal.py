"""Training a frozen-BatchNorm backbone from random initialisation is refused, in one line, with the opt-in key."""
from __future__ import annotations

from pathlib import Path


from detcore.config import load_config
from detcore.config_check import RANDOM_FROZEN_BN_KEY, config_problems, training_problems
from detcore.tools.cli import main as detcore_main

ROOT = Path(__file__).resolve().parents[3]
R50 = ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml"
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"


def _model(**backbone) -> dict:
    return {"model": {"type": "FasterRCNN", "backbone": backbone}}


def test_the_rule() -> None:
    refused = training_problems(_model(type="ResNet", depth=50))  # ResNet's norm defaults to frozen_bn
    assert len(refused) == 1 and refused[0].startswith("model.backbone: ResNet with norm: frozen_bn and no weights")
    assert RANDOM_FROZEN_BN_KEY in refused[0] and "torchvision://resnet50" in refused[0]
    assert training_problems(_model(type="MobileNetV3", norm="frozen_bn"))
    assert training_problems(_model(type="TinyNet", norm="frozen_bn"))
    allowed = [_model(type="ResNet", weights="torchvision://resnet50"), _model(type="ResNet", norm="bn"),
               _model(type="ResNet", norm="gn"), _model(type="TinyNet"), _model(type="MyBackbone", norm="frozen_bn"),
               _model(type="ResNet", allow_random_frozen_bn=True)]
    assert all(training_problems(cfg) == [] for cfg in allowed)
    assert training_problems(_model(type="ResNet"), load_from="torchvision://fasterrcnn_resnet50_fpn") == []
    assert training_problems(_model(type="ResNet"), resume="work/iter_8.pth") == []
    assert training_problems(_model(type="ResNet", allow_random_frozen_bn="yes"))  # only true opts in


def test_the_shipped_configs_pass_and_the_demo_configs_are_unchanged() -> None:
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if "_base_" in path.parts or "torchvision" in path.parts:
            continue
        problems = training_problems(load_config(path, import_custom=False))
        assert problems == [], (path, problems)
    # shapes demo: GroupNorm TinyNet, nothing to refuse; every problem config_problems finds is about something else
    cfg = load_config(SHAPES)
    assert cfg["model"]["backbone"]["norm"] == "gn" and config_problems(cfg) == []


def test_detcore_train_refuses_in_one_line_before_any_work_dir(tmp_path, capsys) -> None:
    work = tmp_path / "work"
    rc = detcore_main(["train", str(R50), "--work-dir", str(work), "--cfg-options", "model.backbone.weights=null"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not work.exists()
    assert [line for line in err if "frozen_bn" in line] == [
        f"detcore train: error: {R50}: model.backbone: ResNet with norm: frozen_bn and no weights would train from "
        f"random initialisation with BatchNorm frozen at identity statistics, which never learns them; set "
        f"model.backbone.weights (e.g. torchvision://resnet50), start from a checkpoint (load_from), use norm: bn or "
        f"gn to train from scratch, or set {RANDOM_FROZEN_BN_KEY}: true to train it anyway"]


def test_the_opt_in_trains(tmp_path) -> None:
    rc = detcore_main(["train", str(SHAPES), "--work-dir", str(tmp_path / "w"), "--no-validate", "--cfg-options",
                       "model.backbone.norm=frozen_bn", f"+{RANDOM_FROZEN_BN_KEY}=true", "runner.max_iters=1",
                       "data.samples_per_gpu=2", "data.workers_per_gpu=0", "auto_scale_lr.enable=false"])
    assert rc == 0 and (tmp_path / "w" / "iter_1.pth").is_file()


def test_the_launcher_check_refuses_too() -> None:
    """``launcher submit`` runs config_problems before any row or job exists."""
    cfg = load_config(SHAPES, ["model.backbone.norm=frozen_bn"])
    assert any(p.startswith("model.backbone: TinyNet with norm: frozen_bn") for p in config_problems(cfg))
    assert not any("frozen_bn" in p for p in config_problems(cfg, test=True))  # testing reads a checkpoint
    assert not any("frozen_bn" in p for p in config_problems(cfg, resume="work/iter_4.pth"))
    assert any("frozen_bn" in p for p in config_problems(cfg, resume="auto"))  # a fresh work dir starts fresh
