"""detcore's config resolution side by side with MMEngine's ``Config`` on the same YAML trees.

Every tree here is resolved by ``detcore.config.load_config`` and by MMEngine's
``Config.fromfile`` (+ ``merge_from_dict`` for overrides); the results must be equal. Trees
avoid only the cases docs/configs.md lists as deliberate differences (later bases may override
earlier ones, ``_delete_`` never survives, ``1e-4`` is a float, a dict may replace a scalar).
"""
from __future__ import annotations

import os
from pathlib import Path

import mmengine.config as mmengine_config  # mmengine-lite, in the test extra: a missing one fails, never skips
import pytest

from detcore.config import load_config, parse_override

BASE_MODEL = """\
model:
  type: FasterRCNN
  num_classes: 80
  backbone: {type: ResNet, depth: 50, frozen_stages: 1, norm: {type: BN, requires_grad: true}}
  neck: {type: FPN, in_channels: [256, 512, 1024, 2048], out_channels: 256, num_outs: 5}
  heads:
    - {type: RPNHead, in_channels: 256, anchor: {scales: [8], ratios: [0.5, 1.0, 2.0]}}
    - {type: RoIHead, num_classes: 80}
"""
BASE_DATA = """\
data:
  samples_per_gpu: 2
  workers_per_gpu: 2
  train:
    type: CocoDataset
    ann_file: ann/train.json
    pipeline:
      - {type: Resize, scale: [1333, 800]}
      - {type: RandomFlip, prob: 0.5}
  val: {type: CocoDataset, ann_file: ann/val.json, pipeline: []}
"""
BASE_SCHEDULE = """\
optimizer: {type: SGD, lr: 0.02, momentum: 0.9, weight_decay: 0.0001}
lr_config: {policy: step, step: [8, 11], warmup: linear, warmup_iters: 500, warmup_ratio: 0.001}
runner: {type: EpochBasedRunner, max_epochs: 12}
"""
RUNTIME = "log_config: {interval: 50}\ncheckpoint_config: {interval: 1}\nclasses: null\nflags: [a, b]\n"

# name -> {relative path: text}; the top file is always "top.yaml"
TREES: dict[str, dict[str, str]] = {
    "bases-in-order": {
        "_base_/model.yaml": BASE_MODEL, "_base_/data.yaml": BASE_DATA, "_base_/schedule.yaml": BASE_SCHEDULE,
        "_base_/runtime.yaml": RUNTIME,
        "configs/top.yaml": "_base_: [../_base_/model.yaml, ../_base_/data.yaml, ../_base_/schedule.yaml, "
                            "../_base_/runtime.yaml]\noptimizer: {lr: 0.01}\nmodel: {neck: {out_channels: 128}}\n",
    },
    "grandparents": {
        "a/base.yaml": BASE_MODEL + BASE_SCHEDULE,
        "a/b/parent.yaml": "_base_: ../base.yaml\nmodel: {backbone: {depth: 101}}\noptimizer: {momentum: 0.95}\n",
        "a/b/c/top.yaml": "_base_: ../parent.yaml\nmodel: {backbone: {norm: {requires_grad: false}}}\nextra: {k: v}\n",
    },
    "relative-paths-from-each-file": {
        "x/base.yaml": "_base_: ../y/deeper.yaml\nmodel: {type: RetinaNet}\n",
        "y/deeper.yaml": BASE_MODEL,
        "z/top.yaml": "_base_: ../x/base.yaml\nmodel: {num_classes: 3}\n",
    },
    "delete-at-several-depths": {
        "base.yaml": BASE_MODEL + BASE_DATA + BASE_SCHEDULE,
        "top.yaml": "_base_: base.yaml\noptimizer: {_delete_: true, type: AdamW, lr: 0.0002}\n"
                    "model:\n  backbone: {norm: {_delete_: true, type: GN, num_groups: 32}}\n"
                    "  neck: {_delete_: true, type: PAFPN, out_channels: 64}\n"
                    "data: {train: {_delete_: true, type: VOCDataset, ann_file: voc.txt}}\n",
    },
    "lists-replace": {
        "base.yaml": BASE_MODEL + BASE_DATA + RUNTIME,
        "top.yaml": "_base_: base.yaml\nflags: [c]\nmodel: {heads: [{type: OnlyHead}]}\n"
                    "data: {train: {pipeline: [{type: Resize, scale: [640, 480]}]}}\n",
    },
    "base-in-sibling-folder-of-symlink-target": {
        "real/top_target.yaml": "_base_: base.yaml\nmodel: {num_classes: 2}\n",
        "real/base.yaml": BASE_MODEL,
        "top.yaml": "->real/top_target.yaml",
        "base.yaml": BASE_MODEL.replace("FasterRCNN", "MaskRCNN"),
    },
    "symlinked-base": {
        "shared/model.yaml": BASE_MODEL,
        "proj/model.yaml": "->../shared/model.yaml",
        "proj/top.yaml": "_base_: model.yaml\nmodel: {num_classes: 1}\n",
    },
}

# overrides applied on top of the tree "bases-in-order"
OVERRIDES = [
    "optimizer.lr=0.005",
    "model.neck={out_channels: 64}",                       # a dict merges into the dict it overrides
    "data.train.pipeline.0={scale: [640, 480]}",          # ... also a list element
    "data.train.pipeline.1.prob=0.25",
    "model.backbone={_delete_: true, type: MobileNetV3}",  # _delete_ replaces
    "model.heads.0.anchor={ratios: [1.0]}",
    "flags=[x, y, z]",                                     # lists replace
    "classes=[cat, dog]",
    "runner.max_epochs=24",
]


def _materialise(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if text.startswith("->"):
            os.symlink(text[2:], path)
        else:
            path.write_text(text)
    return next(root / rel for rel in files if Path(rel).name == "top.yaml")


def _detcore(path: Path, overrides: list[str] = ()) -> dict:
    cfg = load_config(path, overrides, import_custom=False)
    cfg.pop("filename")
    return cfg


def _mmengine(path: Path, overrides: list[str] = ()) -> dict:
    cfg = mmengine_config.Config.fromfile(str(path), import_custom_modules=False)
    for item in overrides:
        key, value, _ = parse_override(item)
        cfg.merge_from_dict({key: value})
    return cfg.to_dict()


@pytest.mark.parametrize("name", list(TREES))
def test_resolves_like_mmengine(name: str, tmp_path: Path) -> None:
    top = _materialise(tmp_path, TREES[name])
    assert _detcore(top) == _mmengine(top)


@pytest.mark.parametrize("override", OVERRIDES)
def test_override_merges_like_mmengine_merge_from_dict(override: str, tmp_path: Path) -> None:
    top = _materialise(tmp_path, TREES["bases-in-order"])
    assert _detcore(top, [override]) == _mmengine(top, [override])


def test_all_overrides_together_like_mmengine(tmp_path: Path) -> None:
    top = _materialise(tmp_path, TREES["bases-in-order"])
    ours = _detcore(top, OVERRIDES)
    assert ours == _mmengine(top, OVERRIDES)
    assert ours["model"]["neck"]["type"] == "FPN" and ours["model"]["neck"]["out_channels"] == 64


def test_symlinked_config_uses_bases_beside_the_link(tmp_path: Path) -> None:
    top = _materialise(tmp_path, TREES["base-in-sibling-folder-of-symlink-target"])
    assert _detcore(top)["model"]["type"] == "MaskRCNN" == _mmengine(top)["model"]["type"]


# ---- the deliberate differences docs/configs.md states: detcore's result, and that MMEngine differs

def test_delete_never_survives_where_mmengine_keeps_it(tmp_path: Path) -> None:
    top = _materialise(tmp_path, {
        "base.yaml": BASE_MODEL,
        "top.yaml": "_base_: base.yaml\nmodel: {heads: [{_delete_: true, type: H}], new: {_delete_: true, a: 1}}\n"})
    ours, theirs = _detcore(top), _mmengine(top)
    assert ours["model"]["heads"] == [{"type": "H"}] and ours["model"]["new"] == {"a": 1}
    assert theirs["model"]["heads"] == [{"_delete_": True, "type": "H"}]


def test_exponent_floats_where_mmengine_keeps_strings(tmp_path: Path) -> None:
    top = _materialise(tmp_path, {"top.yaml": "optimizer: {type: SGD, lr: 2e-2, weight_decay: 1e-4, eps: 5.e-3}\n"})
    assert _detcore(top)["optimizer"] == {"type": "SGD", "lr": 0.02, "weight_decay": 0.0001, "eps": 0.005}
    assert _mmengine(top)["optimizer"]["weight_decay"] == "1e-4"


def test_later_base_overrides_earlier_where_mmengine_refuses(tmp_path: Path) -> None:
    top = _materialise(tmp_path, {"a.yaml": "lr: 1\nx: {p: 1}\n", "b.yaml": "lr: 2\nx: {q: 2}\n",
                                  "top.yaml": "_base_: [a.yaml, b.yaml]\n"})
    assert _detcore(top) == {"lr": 2, "x": {"p": 1, "q": 2}}
    with pytest.raises(Exception, match="Duplicate key"):
        _mmengine(top)


def test_dict_replaces_scalar_where_mmengine_refuses(tmp_path: Path) -> None:
    top = _materialise(tmp_path, {"base.yaml": "model: {neck: null}\n",
                                  "top.yaml": "_base_: base.yaml\nmodel: {neck: {type: FPN}}\n"})
    assert _detcore(top) == {"model": {"neck": {"type": "FPN"}}}
    with pytest.raises(TypeError, match="_delete_"):
        _mmengine(top)
