"""`detcore config import` of MMDetection 3.x configs: the 3.x keys, MMEngine's new-style configs,
checkpoint names, and the 2.x configs that share the mapping (read with ast, never run)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from detcore.config import load_config
from detcore.errors import ConfigError
from detcore.mmdet_import import import_config
from detcore.mmdet_import.reader import read_mmdet_config

ROOT = Path(__file__).resolve().parents[3]
MMDET = ROOT / "tests/data/mmdet_configs"
V3 = MMDET / "v3"
FASTER3 = V3 / "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
BALLOON3 = V3 / "balloon/mask-rcnn_r50-caffe_fpn_ms-poly-1x_balloon.py"
GUIDE_URL = ("https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco/"
             "mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco_bbox_mAP-0.408__segm_mAP-0.37_20200504_163245-42aa3d00.pth")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def child(tmp_path: Path, text: str, base: Path = FASTER3, name: str = "child.py") -> dict:
    """The detcore config of a 3.x config that inherits ``base`` and adds ``text``."""
    return import_config(write(tmp_path / name, f"_base_ = {str(base)!r}\n{text}")).config


def summary(tmp_path: Path, text: str, base: Path = FASTER3) -> list[str]:
    return import_config(write(tmp_path / "child.py", f"_base_ = {str(base)!r}\n{text}")).summary


@pytest.mark.parametrize("mmdet2, mmdet3", [
    ("faster_rcnn/faster_rcnn_r50_fpn_1x_coco", "faster_rcnn/faster-rcnn_r50_fpn_1x_coco"),
    ("mask_rcnn/mask_rcnn_r50_fpn_1x_coco", "mask_rcnn/mask-rcnn_r50_fpn_1x_coco"),
    ("retinanet/retinanet_r50_fpn_1x_coco", "retinanet/retinanet_r50_fpn_1x_coco"),
    ("fcos/fcos_r50_caffe_fpn_gn-head_1x_coco", "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco"),
    ("mask_rcnn_r50_caffe_fpn_mstrain-poly_1x_balloon", "balloon/mask-rcnn_r50-caffe_fpn_ms-poly-1x_balloon"),
])
def test_a_3x_config_imports_as_its_2x_twin(mmdet2: str, mmdet3: str) -> None:
    """The same model, data and schedule written the 3.x way import to the same detcore config."""
    two, three = import_config(MMDET / f"{mmdet2}.py").config, import_config(V3 / f"{mmdet3}.py").config
    for key in ("model", "classes", "optimizer", "optimizer_config", "runner", "evaluation", "checkpoint_config",
                "log_config", "auto_scale_lr"):
        assert three[key] == two[key], key
    for split in ("train", "val", "test"):
        if "balloon" not in mmdet3:  # the guides' balloon configs put their data in different folders
            assert three["data"][split] == two["data"][split], split
    lr2 = {**two["lr_config"], "gamma": two["lr_config"].get("gamma", 0.1)}  # 0.1: MMDetection's default
    assert three["lr_config"] == lr2
    assert three["data"]["workers_per_gpu"] == two["data"]["workers_per_gpu"]


def test_the_3x_guide_balloon_config_maps_classes_paths_num_classes_and_load_from() -> None:
    imported = import_config(BALLOON3)
    cfg = imported.config
    assert cfg["model"]["type"] == "MaskRCNN" and cfg["model"]["num_classes"] == 1 and cfg["classes"] == ["balloon"]
    assert cfg["data"]["samples_per_gpu"] == 1 and cfg["data"]["test_samples_per_gpu"] == 1
    assert cfg["data"]["train"] == {
        "type": "CocoDataset", "skip_degenerate_boxes": True, "ann_file": "data/balloon/train/annotation_coco.json",
        "img_prefix": "data/balloon/train/", "classes": ["balloon"], "with_mask": True,
        "pipeline": [{"type": "Resize", "scales": [[1333, s] for s in (640, 672, 704, 736, 768, 800)]},
                     {"type": "RandomFlip", "prob": 0.5}]}
    for split in ("val", "test"):
        assert cfg["data"][split] == {"type": "CocoDataset", "skip_degenerate_boxes": True,
                                      "ann_file": "data/balloon/val/annotation_coco.json",
                                      "img_prefix": "data/balloon/val/", "classes": ["balloon"], "with_mask": True,
                                      "pipeline": []}
    assert cfg["evaluation"] == {"interval": 1, "metric": ["bbox", "segm"]}
    assert cfg["load_from"] == GUIDE_URL  # kept as written; training refuses a URL in one line
    lines = imported.summary
    assert any(line.startswith("load_from: \"https://download.openmmlab.com/") and "a URL of an MMDetection checkpoint" in line and "do not "
               "load into detcore's torchvision models; set load_from to a torchvision name" in line for line in lines)
    assert any(line.startswith('model.backbone.init_cfg.checkpoint: "open-mmlab://detectron2/resnet50_caffe"')
               and "model-zoo name" in line for line in lines)
    assert any(line.startswith("metainfo.palette: [[220, 20, 60]]") for line in lines)
    assert not any(line.startswith(("val_evaluator", "test_evaluator", "data_root", "metainfo:")) for line in lines)
    # the caffe base: BGR mean/std reordered to RGB and said so, on the 0..1 scale torchvision uses
    assert cfg["model"]["image_mean"] == [round(v / 255, 6) for v in (123.675, 116.28, 103.53)]
    assert any(line.startswith("model.data_preprocessor.bgr_to_rgb: false") for line in lines)


def test_the_balloon_config_on_the_command_line_and_its_yaml_reloads(tmp_path: Path) -> None:
    out = tmp_path / "balloon.yaml"
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", "config", "import", str(BALLOON3), "--out",
                           str(out)], env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "did not carry over exactly" in proc.stdout and "load_from: \"https://" in proc.stdout
    again = load_config(out)
    assert {k: v for k, v in again.items() if k != "filename"} == import_config(BALLOON3).config


def test_new_style_configs_read_without_importing_anything() -> None:
    """MMEngine's pure-Python configs (with read_base(): from .._base_ import *, classes as types):
    the same detcore config and summary as the text-style twin, and no module imported."""
    before = set(sys.modules)
    new = import_config(MMDET / "v3_new_style/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py")
    old = import_config(FASTER3)
    assert new.config == old.config and new.summary == old.summary
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("mmdet", "mmengine", "mmcv", "torch")}
    # a child changes what it inherits: merge, update, assignments into keys and list items
    cfg = import_config(MMDET / "v3_new_style/faster_rcnn/faster_rcnn_r101_fpn_amp_adamw_coco.py").config
    assert cfg["model"]["backbone"]["depth"] == 101 and cfg["model"]["backbone"]["weights"] == "torchvision://resnet101"
    assert cfg["amp"] is True and cfg["optimizer"] == {"type": "AdamW", "lr": 0.0001, "weight_decay": 0.05}
    assert cfg["data"]["samples_per_gpu"] == 4 and cfg["lr_config"]["step"] == [9, 11]
    assert cfg["checkpoint_config"] == {"interval": 1, "max_keep": 2, "save_best": "bbox_AP"}
    assert {k: v for k, v in cfg["model"].items() if k != "backbone"} == \
        {k: v for k, v in old.config["model"].items() if k != "backbone"}


def test_new_style_bases_are_relative_files(tmp_path: Path) -> None:
    head = "from mmengine.config import read_base\nwith read_base():\n"
    with pytest.raises(ConfigError, match=r"a\.py:3: base file for \.missing not found \(looked for .*missing\.py\)"):
        read_mmdet_config(write(tmp_path / "a.py", head + "    from .missing import *\n"))
    write(tmp_path / "b.py", head + "    from .c import *\nx = 1\n")
    with pytest.raises(ConfigError, match="cyclic _base_ chain"):
        read_mmdet_config(write(tmp_path / "c.py", head + "    from .b import *\n"))
    write(tmp_path / "d.py", "from torch.optim import SGD\noptimizer = dict(type=SGD, lr=0.1)\nlr = 0.1\n")
    cfg = read_mmdet_config(write(tmp_path / "e.py", head + "    from .d import optimizer as opt\nlr = opt['lr'] * 2\n"))
    assert cfg == {"opt": {"type": "SGD", "lr": 0.1}, "lr": 0.2}  # only the names imported; classes dropped
    with pytest.raises(ConfigError, match="'nothing' is not defined in"):
        read_mmdet_config(write(tmp_path / "f.py", head + "    from .d import nothing\n"))


def test_base_assignments_change_what_a_text_style_config_inherits(tmp_path: Path) -> None:
    """MMDetection 3.x's own AMP configs: `_base_.optim_wrapper.type = 'AmpOptimWrapper'`."""
    amp = import_config(V3 / "faster_rcnn/faster-rcnn_r50_fpn_amp-1x_coco.py").config
    plain = import_config(FASTER3).config
    assert amp == {**plain, "amp": True} and list(amp).index("amp") == list(amp).index("optimizer_config") + 1
    cfg = child(tmp_path, "_base_.param_scheduler[1].milestones = [16, 22]\n_base_.train_cfg.max_epochs = 24\n"
                          "detector = _base_.model\ndetector.backbone.depth = 101\n")
    assert cfg["lr_config"]["step"] == [16, 22] and cfg["runner"]["max_epochs"] == 24
    assert cfg["model"]["backbone"]["depth"] == 101  # `_base_.model` is the inherited dict itself, as in MMEngine
    with pytest.raises(ConfigError, match=r"child\.py:3: index 5 is outside the list of 2"):
        child(tmp_path, "x = [1, 2]\nx[5] = 0\n")


SCHEDULES = [
    # (what the child config says, what detcore's config holds)
    ("train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=90000, val_interval=5000)\n"
     "param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),\n"
     "    dict(type='MultiStepLR', begin=0, end=90000, by_epoch=False, milestones=[60000, 80000], gamma=0.1)]\n"
     "default_hooks = dict(checkpoint=dict(by_epoch=False, interval=10000, max_keep_ckpts=3, save_best='coco/bbox_mAP'),"
     " logger=dict(interval=20))\n",
     {"runner": {"type": "IterBasedRunner", "max_iters": 90000},
      "lr_config": {"policy": "step", "warmup": "linear", "warmup_iters": 1000, "warmup_ratio": 0.001,
                    "step": [60000, 80000], "gamma": 0.1},
      "evaluation": {"interval": 5000, "metric": ["bbox"]},
      "checkpoint_config": {"interval": 10000, "max_keep": 3, "save_best": "bbox_AP"}, "log_config": {"interval": 20}}),
    ("param_scheduler = [dict(type='ConstantLR', factor=1.0 / 3, by_epoch=False, begin=0, end=500),\n"
     "    dict(type='CosineAnnealingLR', eta_min=0.0002, begin=0, end=12, T_max=12, by_epoch=True)]\n"
     "optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic', clip_grad=dict(max_norm=35, norm_type=2))\n",
     {"lr_config": {"policy": "cosine", "warmup": "constant", "warmup_iters": 500, "warmup_ratio": 1 / 3,
                    "min_lr_ratio": 0.01},
      "amp": True, "optimizer_config": {"grad_clip": {"max_norm": 35, "norm_type": 2}}}),
    ("param_scheduler = dict(type='StepLR', step_size=4, gamma=0.5)\n",
     {"lr_config": {"policy": "step", "step": [4, 8], "gamma": 0.5}}),
    ("resume = True\nload_from = 'work_dirs/faster/epoch_4.pth'\n",
     {"resume_from": "work_dirs/faster/epoch_4.pth"}),
    ("load_from = 'torchvision://fasterrcnn_resnet50_fpn'\n", {"load_from": "torchvision://fasterrcnn_resnet50_fpn"}),
    ("train_dataloader = dict(batch_size=8, num_workers=4)\nval_dataloader = dict(batch_size=2, num_workers=1)\n"
     "test_dataloader = dict(batch_size=4, num_workers=1, dataset=dict(ann_file='annotations/test.json'))\n",
     {"data": {"samples_per_gpu": 8, "workers_per_gpu": 4, "test_samples_per_gpu": 2}}),
]


@pytest.mark.parametrize("text, expected", SCHEDULES)
def test_3x_schedule_loop_hooks_and_loaders(tmp_path: Path, text: str, expected: dict) -> None:
    cfg = child(tmp_path, text)
    for key, value in expected.items():
        if key == "data":
            assert {k: cfg["data"][k] for k in value} == value
        else:
            assert cfg[key] == pytest.approx(value) if key == "lr_config" else cfg[key] == value, key
    assert "load_from" not in expected or not any(line.startswith("load_from") for line in
                                                 import_config(tmp_path / "child.py").summary)


def test_3x_per_split_loaders_and_evaluators(tmp_path: Path) -> None:
    cfg = child(tmp_path, SCHEDULES[-1][0])
    assert cfg["data"]["test"]["samples_per_gpu"] == 4 and cfg["data"]["test"]["workers_per_gpu"] == 1
    assert cfg["data"]["val"]["workers_per_gpu"] == 1 and "samples_per_gpu" not in cfg["data"]["val"]
    assert cfg["data"]["test"]["ann_file"] == "data/coco/annotations/test.json"
    load_config(tmp_path / "child.py")  # validates as detcore config
    voc = child(tmp_path, "val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='11points')\n"
                          "test_evaluator = val_evaluator\n")
    assert voc["evaluation"] == {"interval": 1, "metric": ["mAP"], "voc_method": "11points"}
    lines = summary(tmp_path, "val_evaluator = dict(metric=['bbox', 'proposal_fast'], "
                              "ann_file='data/coco/annotations/other.json')\nresume = True\nrandomness = dict(seed=0)\n")
    assert any(line.startswith('val_evaluator.metric: ["bbox", "proposal_fast"]') and "kept: bbox" in line
               for line in lines)
    assert any(line.startswith("val_evaluator.ann_file") and "data.val.ann_file" in line for line in lines)
    assert any(line.startswith("resume: true") and "--resume auto" in line for line in lines)
    assert any(line.startswith("randomness") and "--seed" in line for line in lines)


def test_2x_and_3x_checkpoint_names(tmp_path: Path) -> None:
    """torchvision:// names and local files become model.backbone.weights; model-zoo names and URLs
    are listed with why (2.x init_cfg, older 2.x model.pretrained, 3.x init_cfg)."""
    base2 = MMDET / "faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py"
    older = child(tmp_path, "model = dict(pretrained='torchvision://resnet50', backbone=dict(init_cfg=None))\n", base2)
    assert older["model"]["backbone"]["weights"] == "torchvision://resnet50"
    local = child(tmp_path, "model = dict(backbone=dict(init_cfg=dict(checkpoint='weights/r50.pth')))\n")
    assert local["model"]["backbone"]["weights"] == "weights/r50.pth"
    for checkpoint in ("open-mmlab://resnet50_v1c", "https://example.org/r50.pth"):
        text = f"model = dict(backbone=dict(init_cfg=dict(checkpoint={checkpoint!r})))\n"
        assert child(tmp_path, text)["model"]["backbone"]["weights"] is None
        line = next(x for x in summary(tmp_path, text) if x.startswith("model.backbone.init_cfg.checkpoint"))
        assert ("model-zoo name" if "open-mmlab" in checkpoint else "a URL") in line


def test_2x_configs_without_log_config_fp16_and_save_best(tmp_path: Path) -> None:
    """A 2.x config without log_config (as every 3.x one) no longer crashes; fp16 is amp; save_best names
    the metric detcore logs."""
    root = tmp_path / "tree"
    base2 = MMDET / "faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py"
    cfg = child(root, "log_config = dict(_delete_=True, interval=10)\ncustom_hooks = None\nfp16 = dict(loss_scale=512.)\n"
                      "evaluation = dict(save_best='bbox_mAP_50')\n", base2)
    assert cfg["log_config"] == {"interval": 10} and cfg["amp"] is True
    assert cfg["checkpoint_config"]["save_best"] == "bbox_AP50"
    lines = import_config(root / "child.py").summary
    assert any(line.startswith("fp16.loss_scale: 512.0") and "dynamically" in line for line in lines)
    bare = write(tmp_path / "bare.py", "model = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=18),\n"
                 "  neck=dict(type='FPN', in_channels=[128, 256, 512], start_level=1, add_extra_convs='on_input',"
                 " num_outs=5),\n  bbox_head=dict(type='RetinaHead', num_classes=3))\n")
    assert import_config(bare).config["log_config"] == {"interval": 50}


def test_code_and_other_detectors_in_3x_configs_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"child\.py:2: the call .*is code") as info:
        child(tmp_path, "model = dict(backbone=dict(depth=int('50')))\n")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="model.type: DINO .* is an architecture detcore does not have"):
        child(tmp_path, "model = dict(_delete_=True, type='DINO')\n")
    with pytest.raises(ConfigError, match="is a config inside the installed package 'mmdet'; copy it"):
        read_mmdet_config(write(tmp_path / "scoped.py", "_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'\n"))


def _as_mmengine_dumps(value: object) -> object:
    """MMEngine's ``to_dict()`` as this reader returns it: tuples as lists, a new-style config's
    imported class (``'mmdet.models.FasterRCNN'``) as its name."""
    if isinstance(value, dict):
        return {k: _as_mmengine_dumps(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_mmengine_dumps(v) for v in value]
    if isinstance(value, str) and re.fullmatch(r"(mmdet|mmengine|mmcv|torch)(\.\w+)+", value):
        return value.rsplit(".", 1)[-1]
    return value


@pytest.mark.parametrize("path", sorted(str(p.relative_to(MMDET)) for p in MMDET.rglob("*.py")
                                        if "_base_" not in p.parts))
def test_the_reader_reads_what_mmengine_reads(path: str) -> None:
    """Every vendored config (2.x, 3.x, new style) read without running it equals what MMEngine's
    own Config.fromfile makes of it by running it (these files are MMDetection's own)."""
    import warnings

    from mmengine.config import Config  # mmengine-lite, in the test extra: a missing one fails, never skips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _as_mmengine_dumps(Config.fromfile(str(MMDET / path), import_custom_modules=False).to_dict())
    theirs.pop("filename", None)
    assert read_mmdet_config(MMDET / path) == theirs
