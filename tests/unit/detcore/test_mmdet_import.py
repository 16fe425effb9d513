"""`detcore config import`: MMDetection .py configs read with ast (never run), merged and mapped."""
from __future__ import annotations

import functools
import json
import logging
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


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "detcore.tools.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_bases_merge_with_mmdetection_rules(tmp_path: Path) -> None:
    write(tmp_path / "a.py", "root = 'data/x/'\nmodel = dict(type='A', neck=dict(out=256, levels=4), ids=[1, 2])\n"
                             "opt = dict(type='SGD', lr=0.02, momentum=0.9)\nnorm = dict(mean=[1, 2], to_rgb=True)\n")
    write(tmp_path / "b.py", "model = dict(neck=dict(levels=5))\nlr_steps = [8, 11]\n")
    child = write(tmp_path / "sub/c.py", "_base_ = ['../a.py', '../b.py']\n"
                  "model = dict(ids=[3], head=dict(**{'n': 1}))\nopt = dict(_delete_=True, type='Adam', lr=1e-3)\n"
                  "path = root + 'train/'\nsteps = {{_base_.lr_steps}} + [12]\nhalf = -1.0 / 2\n"
                  "pipe = [dict(type='Normalize', **norm)]\nfirst = pipe[0]['type']\nname = f'{root}ann.json'\n")
    cfg = read_mmdet_config(child)
    assert cfg["model"] == {"type": "A", "neck": {"out": 256, "levels": 5}, "ids": [3], "head": {"n": 1}}
    assert cfg["opt"] == {"type": "Adam", "lr": 1e-3}
    assert cfg["path"] == "data/x/train/" and cfg["steps"] == [8, 11, 12] and cfg["half"] == -0.5
    assert cfg["pipe"] == [{"type": "Normalize", "mean": [1, 2], "to_rgb": True}] and cfg["first"] == "Normalize"
    assert cfg["name"] == "data/x/ann.json" and "_base_" not in cfg


@pytest.mark.parametrize("code, what", [
    ("import os\nos.system('touch {marker}')\nmodel = dict(type='FasterRCNN')\n", "an import"),
    ("model = dict(x=__import__('os').system('touch {marker}'))\n", "the call"),
    ("x = open('{marker}', 'w')\n", "the call"),
    ("x = [open('{marker}', 'w') for _ in range(1)]\n", "the call"),
    ("x = [a for a in [1, 2] if open('{marker}', 'w')]\n", "the comprehension"),
    ("x = [a for a in range(1000001)]\n", "the call"),
    ("x = [a for a in open('{marker}', 'w')]\n", "the call"),
    ("x = f\"{{open('{marker}', 'w')}}\"\n", "the f-string"),
    ("x = (lambda: open('{marker}', 'w'))\n", "lambda"),
    ("import os\nx = os.path\n", "an import"),
    ("x = dict(a=1)\nx.update(b=open('{marker}', 'w'))\n", "the call"),
    ("x = dict(a=1)\nx.pop('a')\n", "the statement"),
    ("x = 'a'\ny = x.join(['{marker}'])\n", "the call"),
    ("x = 'a'\ny = x.upper\n", "the attribute access"),
    # MMEngine's new style: imports are names only, never imported; stdlib imports and blocks are code
    ("from mmengine.config import read_base\nimport os\nos.system('touch {marker}')\n", "an import"),
    ("from evil import touch\ntouch('{marker}')\n", "the statement"),
    ("from evil import touch\nx = dict(y=touch('{marker}'))\n", "the call"),
    ("from evil import touch\nwith open('{marker}', 'w'):\n    pass\n", "the block"),
    ("from mmengine.config import read_base\nwith read_base():\n    import os\n", "the statement"),
    ("from mmengine.config import read_base\nwith read_base():\n    from mmdet.configs.x import *\n",
     "base 'mmdet.configs.x' is a config inside an installed package"),
])
def test_code_in_a_config_is_refused_and_never_runs(tmp_path: Path, code: str, what: str) -> None:
    marker = tmp_path / "pwned"
    cfg = write(tmp_path / "evil.py", code.format(marker=marker))
    expected = rf"evil\.py:\d+: {what}.* is code" if "installed" not in what else what
    with pytest.raises(ConfigError, match=expected):
        read_mmdet_config(cfg)
    with pytest.raises(ConfigError, match=expected):
        load_config(cfg)  # what detcore train/test, config show and launcher submit read a .py through
    assert not marker.exists()


def test_code_in_a_config_on_the_command_line(tmp_path: Path) -> None:
    """`config import` and `train` on a config with code: one line, exit 2, nothing run or written."""
    marker = tmp_path / "pwned"
    evil = write(tmp_path / "evil.py", f"import os\nos.system('touch {marker}')\nmodel = dict(type='FasterRCNN')\n")
    evil_call = write(tmp_path / "evil_call.py", f"model = dict(x=__import__('os').system('touch {marker}'))\n")
    for command in (["config", "import", str(evil), "--out", str(tmp_path / "out.yaml")],
                    ["config", "import", str(evil_call), "--out", str(tmp_path / "out.yaml")],
                    ["train", str(evil_call), "--work-dir", str(tmp_path / "work")]):
        proc = cli(*command)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "evil" in proc.stderr and "is code" in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "out.yaml").exists() and not (tmp_path / "work").exists()


def test_another_architecture_is_refused_by_name(tmp_path: Path) -> None:
    htc = write(tmp_path / "htc.py", "_base_ = '%s'\nmodel = dict(type='HybridTaskCascade')\n"
                % (MMDET / "cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.py"))
    proc = cli("config", "import", str(htc), "--out", str(tmp_path / "c.yaml"))
    assert proc.returncode == 2 and not (tmp_path / "c.yaml").exists()
    assert proc.stderr.count("\n") == 1 and "HybridTaskCascade (HTC (Hybrid Task Cascade)) is an architecture " \
        "detcore does not have" in proc.stderr


def _shapes(model_cfg: dict) -> dict[str, tuple]:
    return dict(_shapes_of(json.dumps(model_cfg, sort_keys=True)))


@functools.lru_cache(maxsize=None)
def _shapes_of(model_json: str) -> tuple[tuple[str, tuple], ...]:
    """Parameter shapes of the network (cached: the 2.x and 3.x imports build the same one)."""
    from detcore.models import build_detector

    return tuple((k, tuple(v.shape)) for k, v in build_detector(json.loads(model_json), backbone_weights=False).state_dict().items())


def _without_weights(model_cfg: dict) -> dict:
    """The network only: ``weights`` names what to load into it, not its shape."""
    return {**model_cfg, "backbone": {**model_cfg["backbone"], "weights": None}}


# (MMDetection 2.28.2 config, MMDetection 3.3.0 config, the shipped YAML, overrides that make it MMDetection's network)
FOUR = [
    ("faster_rcnn/faster_rcnn_r50_fpn_1x_coco", "v3/faster_rcnn/faster-rcnn_r50_fpn_1x_coco",
     "faster_rcnn/faster_rcnn_r50_fpn_1x_coco", []),
    ("mask_rcnn/mask_rcnn_r50_fpn_1x_coco", "v3/mask_rcnn/mask-rcnn_r50_fpn_1x_coco", "mask_rcnn/mask_rcnn_r50_fpn_1x_coco",
     []),
    ("fcos/fcos_r50_caffe_fpn_gn-head_1x_coco", "v3/fcos/fcos_r50-caffe_fpn_gn-head_1x_coco", "fcos/fcos_r50_fpn_1x_coco",
     []),
    # MMDetection's RetinaNet takes P6 from C5 (add_extra_convs='on_input'); the shipped YAML is
    # torchvision's RetinaNet (P6 from P5): the import keeps MMDetection's network.
    ("retinanet/retinanet_r50_fpn_1x_coco", "v3/retinanet/retinanet_r50_fpn_1x_coco",
     "retinanet/retinanet_r50_fpn_1x_coco", ["model.neck.p6p7_from=c5"]),
]


@pytest.mark.parametrize("version", ["2.x", "3.x"])
@pytest.mark.parametrize("mmdet2, mmdet3, shipped, same_with", FOUR, ids=[row[2].split("/")[0] for row in FOUR])
def test_the_four_1x_configs_build_the_shipped_networks(version: str, mmdet2: str, mmdet3: str, shipped: str,
                                                        same_with: list[str]) -> None:
    mmdet = mmdet2 if version == "2.x" else mmdet3
    imported = load_config(MMDET / f"{mmdet}.py")
    ours = load_config(ROOT / f"configs/{shipped}.yaml", [f"+{o}" for o in same_with])
    # MMDetection's ImageNet init, by name; the caffe-style FCOS backbone (open-mmlab://) has no torchvision weights
    caffe = "caffe" in mmdet
    assert imported["model"]["backbone"]["weights"] == (None if caffe else "torchvision://resnet50")
    assert ours["model"]["backbone"]["weights"] == "torchvision://resnet50"  # MMDetection's init_cfg checkpoint
    got = _shapes(_without_weights(imported["model"]))
    assert got == _shapes(_without_weights(ours["model"]))
    if same_with:
        plain = _shapes(_without_weights(load_config(ROOT / f"configs/{shipped}.yaml")["model"]))
        assert {k for k in got if got[k] != plain[k]} == {"backbone.fpn.extra_blocks.p6.weight"}
    # what the YAML configs share besides the network: schedule, data, classes
    for key in ("optimizer", "runner", "classes"):
        assert imported[key] == ours[key], key
    assert imported["lr_config"]["step"] == ours["lr_config"]["step"]
    assert imported["data"]["train"]["ann_file"] == ours["data"]["train"]["ann_file"]
    assert imported["data"]["val"]["img_prefix"] == ours["data"]["val"]["img_prefix"]
    assert imported["evaluation"]["metric"] == ours["evaluation"]["metric"]
    assert imported["data"]["samples_per_gpu"] == 2 and imported["auto_scale_lr"]["base_batch_size"] == 16


@pytest.mark.parametrize("name", ["cascade_rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_fpn_1x_coco"])
def test_cascade_1x_configs_build_the_shipped_networks(name: str) -> None:
    """MMDetection 2.x's Cascade (Mask) R-CNN: the stages as MMDetection trains them, the network of the YAML."""
    imported = import_config(MMDET / f"cascade_rcnn/{name}.py")
    ours = load_config(ROOT / f"configs/cascade_rcnn/{name}.yaml", ["model.backbone.weights=null"])
    got, shipped = imported.config["model"], ours["model"]
    assert got["type"] == shipped["type"] == "CascadeRCNN"
    assert got["roi_head"]["stage_loss_weights"] == shipped["roi_head"]["stage_loss_weights"] == [1, 0.5, 0.25]
    for mine, theirs in zip(got["roi_head"]["stages"], shipped["roi_head"]["stages"], strict=True):
        assert mine["fg_iou_thresh"] == mine["bg_iou_thresh"] == theirs["fg_iou_thresh"] == theirs["bg_iou_thresh"]
        # detcore's weights are 1 / MMDetection's target_stds (0.033 and 0.067 are 1/30 and 1/15 rounded)
        assert mine["bbox_reg_weights"] == pytest.approx(theirs["bbox_reg_weights"], rel=0.02)
    model = _shapes(got)
    assert model == _shapes(shipped)
    assert {k.split(".")[2] for k in model if k.startswith("roi_heads.stages.")} == {"0", "1", "2"}
    assert any(k.startswith("roi_heads.mask_head.") for k in model) == ("mask" in name)
    assert all(model[f"roi_heads.stages.{k}.box_predictor.bbox_pred.weight"] == (4, 1024) for k in range(3))
    for key in ("optimizer", "runner", "classes"):
        assert imported.config[key] == ours[key], key
    assert imported.config["data"]["train"].get("with_mask", False) == ours["data"]["train"].get("with_mask", False)
    assert imported.config["evaluation"]["metric"] == ours["evaluation"]["metric"]
    summary = "\n".join(imported.summary)
    assert "model.roi_head.bbox_head.0.loss_bbox" in summary and "model.train_cfg.rcnn.2.assigner" not in summary
    assert ("one mask head, on the last stage" in summary) == ("mask" in name)


@pytest.mark.parametrize("edit, words", [
    ("model = dict(roi_head=dict(num_stages=2, stage_loss_weights=[1, 0.5]))",
     ["bbox_head has 3 entries but model.roi_head.num_stages is 2"]),
    ("model = dict(roi_head=dict(stage_loss_weights=[1, 0.5]))", ["stage_loss_weights=[1, 0.5]", "num_stages=3"]),
    ("model = dict(roi_head=dict(bbox_head=dict(type='SABLHead')))",
     ["model.roi_head.bbox_head.type: SABLHead is an architecture detcore does not have"]),
])
def test_cascade_configs_detcore_cannot_build_are_one_line(tmp_path: Path, edit: str, words: list[str]) -> None:
    cfg = write(tmp_path / "c.py", f"_base_ = '{MMDET / 'cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py'}'\n{edit}\n")
    with pytest.raises(ConfigError) as exc:
        import_config(cfg)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(str(cfg))
    for word in words:
        assert word in str(exc.value), str(exc.value)


def test_cascade_class_specific_stages_and_one_bbox_head_for_all(tmp_path: Path) -> None:
    """A bbox_head given once serves every stage (as MMDetection repeats it); reg_class_agnostic=False
    keeps torchvision's class-specific predictor."""
    head = ("dict(type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=8, "
            "reg_class_agnostic=False, bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], "
            "target_stds=[0.05, 0.05, 0.1, 0.1]))")
    cfg = write(tmp_path / "c.py", f"_base_ = '{MMDET / 'cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py'}'\n"
                                   f"model = dict(roi_head=dict(_delete_=False, bbox_head={head}))\n")
    roi = import_config(cfg).config["model"]["roi_head"]
    assert [s["bbox_reg_weights"] for s in roi["stages"]] == [[20.0, 20.0, 10.0, 10.0]] * 3
    assert all(s["box_predictor"] == {"type": "FastRCNNPredictor"} for s in roi["stages"])
    assert [s["fg_iou_thresh"] for s in roi["stages"]] == [0.5, 0.6, 0.7]


def test_summary_lists_what_did_not_carry_over_and_the_yaml_reloads(tmp_path: Path) -> None:
    out = tmp_path / "faster.yaml"
    proc = cli("config", "import", str(MMDET / "faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for line in ('model.rpn_head.loss_cls: {"type": "CrossEntropyLoss"', "opencv_num_threads: 0  (not mapped)"):
        assert line in proc.stdout
    assert "init_cfg" not in proc.stdout  # torchvision://resnet50 carried over as model.backbone.weights
    text = out.read_text()
    assert text.startswith("# Imported from the MMDetection config") and "#   opencv_num_threads: 0" in text
    again = load_config(out)
    direct = import_config(MMDET / "faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py").config
    assert {k: v for k, v in again.items() if k != "filename"} == direct


def test_balloon_guide_config_maps_one_class_paths_and_load_from() -> None:
    imported = import_config(MMDET / "mask_rcnn_r50_caffe_fpn_mstrain-poly_1x_balloon.py")
    cfg = imported.config
    assert cfg["model"]["type"] == "MaskRCNN" and cfg["model"]["num_classes"] == 1 and cfg["classes"] == ["balloon"]
    assert cfg["data"]["train"] == {
        "type": "CocoDataset", "skip_degenerate_boxes": True,  # as MMDetection's CocoDataset does
        "ann_file": "balloon/train/annotation_coco.json", "img_prefix": "balloon/train/",
        "classes": ["balloon"], "with_mask": True,
        "pipeline": [{"type": "Resize", "scales": [[1333, s] for s in (640, 672, 704, 736, 768, 800)]},
                     {"type": "RandomFlip", "prob": 0.5}]}
    assert cfg["load_from"].startswith("checkpoints/mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco")
    assert any(line.startswith('dataset_type: "COCODataset"  (a plain variable') for line in imported.summary)
    assert any(line.startswith('model.backbone.style: "caffe"') for line in imported.summary)


def test_mmdetection_habits_in_yaml(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = ROOT / "configs/shapes/mask_rcnn_tiny_shapes.yaml"
    cfg = write(tmp_path / "a.yaml", f"_base_: {base}\ndataset_type: CocoDataset\n"
                "model: {roi_head: {bbox_head: {num_classes: 1}, mask_head: {num_classes: 1}}}\n"
                "data: {test: {samples_per_gpu: 3}}\n")
    with caplog.at_level(logging.WARNING):
        loaded = load_config(cfg)
    assert loaded["model"]["num_classes"] == 1 and "bbox_head" not in loaded["model"]["roi_head"]
    assert "top-level key 'dataset_type' is not read (YAML has no variables: set data.train.type" in caplog.text
    bad = write(tmp_path / "b.yaml", f"_base_: {base}\nmodel: {{roi_head: {{bbox_head: {{num_classes: 1}}, "
                "mask_head: {num_classes: 2}}}\n")
    with pytest.raises(ConfigError, match="disagree; detcore has one model.num_classes"):
        load_config(bad)
    coco = write(tmp_path / "c.yaml", f"_base_: {base}\ndata: {{train: {{img_prefix: x/, ann_file: a.json}}}}\n")
    with pytest.raises(ConfigError, match="data.train: ann_file/img_prefix are CocoDataset options, but the type is "
                                          "ShapesDataset.*set type: CocoDataset"):
        load_config(coco)
    mixed = write(tmp_path / "d.yaml", f"_base_: {base}\ndata: {{train: {{type: CocoDataset, img_prefix: x/, "
                  "ann_file: a.json}}\n")
    with pytest.raises(ConfigError, match="data.train: split, num_train, num_val, size, seed are ShapesDataset "
                                          "options left from the base; add _delete_: true"):
        load_config(mixed)


def test_per_split_batch_and_workers_as_mmdetection_writes_them(tmp_path: Path) -> None:
    """``--cfg-options data.test.samples_per_gpu=3`` as MMDetection's guide spells it (no '+'); the
    training batch a split sets is the one its loader uses and the one the LR is scaled by."""
    from detcore.engine.dist import DistInfo
    from detcore.engine.scaling import scale_config
    from detcore.engine.setup import build_split_loader, split_config

    import torch

    shapes = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    cfg = load_config(shapes, ["data.test.samples_per_gpu=3", "data.workers_per_gpu=0",
                               "data.train.samples_per_gpu=2", "data.train.workers_per_gpu=1"])
    assert build_split_loader(cfg, "test", dist, 0, train=False).batch_sampler.batch_size == 3
    assert not {"samples_per_gpu", "workers_per_gpu"} & set(split_config(cfg, "train"))  # the loader's, not the dataset's
    train = build_split_loader(cfg, "train", dist, 0, train=True)
    assert train.batch_sampler.inner.batch_size == 2 and train.num_workers == 1
    assert cfg["data"]["samples_per_gpu"] == 4  # the shapes base's; the train split's own 2 wins
    scaled, schedule = scale_config(cfg, 2)
    assert (schedule.samples_per_gpu, schedule.total_batch) == (2, 4)
    assert scaled["optimizer"]["lr"] == pytest.approx(cfg["optimizer"]["lr"] * 4 / cfg["auto_scale_lr"]["base_batch_size"])
    cfg = load_config(shapes, ["+data.test_samples_per_gpu=5", "data.workers_per_gpu=0"])
    assert build_split_loader(cfg, "test", dist, 0, train=False).batch_sampler.batch_size == 5
    with pytest.raises(ConfigError, match="data.test.samples_per_gpu must be a positive integer"):
        load_config(shapes, ["data.test.samples_per_gpu=0"])
    with pytest.raises(ConfigError, match="data.train.workers_per_gpu must be an integer >= 0"):
        load_config(shapes, ["data.train.workers_per_gpu=-1"])
    with pytest.raises(ConfigError, match="override 'data.testing.samples_per_gpu': no such key"):
        load_config(shapes, ["data.testing.samples_per_gpu=2"])  # only the splits the config has


@pytest.mark.parametrize("text, match", [
    ("a = [1, 1]\n" + "".join("a = [a, a]\n" for _ in range(40)), "more than 100000 values once names are expanded"),
    ("a = 'x' * 500000\n" + "".join(f"b{i} = a + a\n" for i in range(200)), "more than 100000 values"),
    ("a = 'x' * 1000\n" + "a = a * 2\n" * 40, "makes a value longer than"),
    ("x = " + " + ".join(["'ab'"] * 100000) + "\n", "cannot be parsed|nested too deeply"),
    ("x = 10 ** 400\n", "is code"),
    ("_base_ = 'self.py'\n", "cyclic _base_ chain"),
    ("a = dict()\na" + ".b" * 2000 + " = 1\n", "nested too deeply|cannot be parsed|'a.b': no such key"),
    ("a = [0] * 1000\n" + "a[0] = a\n" * 40, "more than 100000 values"),
    ("a = [[b, c] for b in range(1000) for c in range(1000)]\n", "makes more than 100000 items"),
])
def test_hostile_literal_configs_are_one_line(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        read_mmdet_config(write(tmp_path / "self.py", text))
    assert "\n" not in str(info.value)


def test_mmdetection_hook_spellings_in_yaml(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = write(tmp_path / "a.yaml", f"_base_: {ROOT / 'configs/shapes/faster_rcnn_tiny_shapes.yaml'}\n"
                "checkpoint_config: {interval: 100, max_keep_ckpts: 2, by_epoch: false}\n"
                "evaluation: {save_best: bbox_mAP}\nlog_config: {hooks: [{type: TextLoggerHook}]}\n")
    with caplog.at_level(logging.WARNING):
        loaded = load_config(cfg)
    assert loaded["checkpoint_config"] == {"interval": 100, "max_keep": 2, "save_best": "bbox_mAP"}
    assert "save_best" not in loaded["evaluation"] and loaded["log_config"]["hooks"] == []
    assert "checkpoint_config.by_epoch is not read" in caplog.text
    assert "log_config.hooks" not in caplog.text  # the text log is always written: nothing to warn about
