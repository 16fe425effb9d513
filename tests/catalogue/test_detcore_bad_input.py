"""Bad input to the detcore tools: each case exits non-zero with one line naming the file or key and
what was expected, and leaves no work dir or checkpoint behind.

Each case is (id, files to create, argv, words the message must contain). ``{t}`` in paths and
argv is the case's temp dir. Cases run in-process through ``detcore.tools.cli.main``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detcore.tools.cli import main as detcore_main

ROOT = Path(__file__).resolve().parents[2]
SHAPES = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")
RETINA = str(ROOT / "configs/retinanet/retinanet_r50_fpn_1x_coco.yaml")
FAST = ["data.workers_per_gpu=0", "runner.max_iters=1"]


def coco(images=((1, "a.png", 32, 32),), anns=((1, 1, 1, [2, 2, 10, 10]),), cats=((1, "cat"),)) -> str:
    return json.dumps({
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
        "annotations": [{"id": a, "image_id": im, "category_id": c, "bbox": b, "area": 10, "iscrowd": 0}
                        for a, im, c, b in anns],
        "categories": [{"id": i, "name": n} for i, n in cats]})


def dataset_config(ann: str = "{t}/ann.json") -> str:
    """A one-class COCO training config over files in the case dir."""
    return (f"_base_: {SHAPES}\nclasses: null\nmodel: {{num_classes: 1}}\nevaluation: {{interval: 0}}\n"
            "data:\n  workers_per_gpu: 0\n  train: {_delete_: true, type: CocoDataset, ann_file: " + ann +
            ", img_prefix: {t}/img, pipeline: []}\n")


PNG = "__png__"
TRAIN = ["train", "{t}/c.yaml", "--work-dir", "{t}/work", "--no-validate"]
CASES = [
    # ---- configs
    ("yaml-invalid", {"c.yaml": "model: {type: [unclosed\n"}, TRAIN, ["c.yaml", "invalid YAML at line"]),
    ("yaml-python-tag", {"c.yaml": "model: !!python/object/apply:os.system ['true']\n"}, TRAIN,
     ["c.yaml", "invalid YAML", "no Python tags"]),
    ("config-missing", {}, TRAIN, ["c.yaml", "config file not found"]),
    ("base-missing", {"c.yaml": "_base_: nope.yaml\n"}, TRAIN, ["nope.yaml", "not found"]),
    ("base-cycle", {"c.yaml": "_base_: d.yaml\n", "d.yaml": "_base_: c.yaml\n"}, TRAIN, ["cyclic _base_", "d.yaml"]),
    ("base-not-list", {"c.yaml": "_base_: {a: 1}\n"}, TRAIN, ["_base_ must be a path or a list"]),
    ("top-not-mapping", {"c.yaml": "- 1\n- 2\n"}, TRAIN, ["c.yaml", "expected a mapping"]),
    ("unknown-detector", {"c.yaml": f"_base_: {SHAPES}\nmodel: {{type: FasterRCN}}\n"}, TRAIN,
     ["unknown detector type 'FasterRCN'", "did you mean 'FasterRCNN'", "custom_imports"]),
    ("unknown-backbone", {"c.yaml": f"_base_: {SHAPES}\nmodel: {{backbone: {{type: ResNet51}}}}\n"}, TRAIN,
     ["unknown backbone type 'ResNet51'", "ResNet"]),
    ("unknown-transform", {"c.yaml": f"_base_: {SHAPES}\ndata: {{train: {{pipeline: [{{type: Flip}}]}}}}\n"}, TRAIN,
     ["unknown transform type 'Flip'"]),
    ("unknown-dataset", {"c.yaml": f"_base_: {SHAPES}\ndata: {{train: {{type: CocoDataSet}}}}\n"}, TRAIN,
     ["unknown dataset type 'CocoDataSet'", "CocoDataset"]),
    ("batch-zero", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "data.samples_per_gpu=0"],
     ["data.samples_per_gpu", "positive integer", "got 0"]),
    ("batch-negative", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "data.samples_per_gpu=-2"],
     ["data.samples_per_gpu", "got -2"]),
    ("batch-wrong-type", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "data.samples_per_gpu=four"],
     ["data.samples_per_gpu", "positive integer", "'four'"]),
    ("lr-negative", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "optimizer.lr=-0.1"],
     ["optimizer.lr must be a positive number"]),
    ("max-iters-zero", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "runner.max_iters=0"],
     ["runner.max_iters", "positive integer"]),
    ("override-unknown-key", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "optimizer.lrr=0.1"],
     ["optimizer.lrr", "closest existing key is 'optimizer.lr'", "+optimizer.lrr"]),
    ("override-no-equals", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "optimizer.lr"],
     ["must look like key.sub=value"]),
    ("custom-import-missing", {"c.yaml": f"_base_: {SHAPES}\ncustom_imports: {{imports: [no_such_mod_q]}}\n"}, TRAIN,
     ["custom_imports", "no_such_mod_q", "allow_failed_imports"]),
    ("num-classes-mismatch", {"c.yaml": f"_base_: {SHAPES}\nmodel: {{num_classes: 5}}\n"}, TRAIN,
     ["model.num_classes is 5", "3 classes"]),
    ("eval-backend-unknown", {"c.yaml": f"_base_: {SHAPES}\nevaluation: {{backend: fast}}\n"}, TRAIN,
     ["c.yaml: evaluation.backend", "unknown COCO evaluation backend 'fast'", "faster-coco-eval"]),
    ("rpn-unknown-option", {"c.yaml": f"_base_: {SHAPES}\nmodel: {{rpn: {{nms: 0.3}}}}\n"}, TRAIN,
     ["model.rpn", "'nms'", "nms_thresh"]),
    ("anchor-levels", {"c.yaml": f"_base_: {SHAPES}\nmodel: {{anchor_generator: {{sizes: [[16]]}}}}\n"}, TRAIN,
     ["anchor_generator has 1 levels", "4 feature maps"]),
    ("runner-missing-key", {"c.yaml": f"_base_: {SHAPES}\nrunner: {{_delete_: true, type: IterBasedRunner}}\n"},
     TRAIN, ["runner.max_iters is required"]),
    ("lr-nan", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "optimizer.lr=.nan"],
     ["optimizer.lr must be a positive number, got nan"]),
    ("weight-decay-string", {"c.yaml": f"_base_: {SHAPES}\noptimizer: {{weight_decay: '1e-4'}}\n"}, TRAIN,
     ["c.yaml: optimizer.weight_decay must be a number >= 0, got '1e-4'", "without quotes"]),
    ("filename-reserved", {"c.yaml": f"_base_: {SHAPES}\nfilename: mine.yaml\n"}, TRAIN,
     ["c.yaml", "'filename' is reserved"]),
    ("override-filename", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "+filename=x"],
     ["'filename' is reserved"]),
    ("override-malformed-flow", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--cfg-options", "classes=[a,b"],
     ["override 'classes=[a,b'", "invalid YAML"]),
    ("custom-imports-int", {"c.yaml": f"_base_: {SHAPES}\ncustom_imports: 5\n"}, TRAIN,
     ["c.yaml: custom_imports: got 5", "expected {imports:"]),
    ("custom-imports-not-names", {"c.yaml": f"_base_: {SHAPES}\ncustom_imports: {{imports: [3]}}\n"}, TRAIN,
     ["c.yaml: custom_imports: got {'imports': [3]}"]),
    ("work-dir-root", {"c.yaml": f"_base_: {SHAPES}\n"}, ["train", "{t}/c.yaml", "--work-dir", "/"],
     ["--work-dir / is the filesystem root"]),
    # ---- datasets
    ("ann-missing", {"c.yaml": dataset_config("{t}/none.json")}, TRAIN, ["none.json", "does not exist", "ann_file"]),
    ("ann-not-json", {"c.yaml": dataset_config(), "ann.json": "{not json"}, TRAIN, ["ann.json", "not valid json"]),
    ("ann-not-coco", {"c.yaml": dataset_config(), "ann.json": "[1, 2]"}, TRAIN, ["ann.json", "not a COCO detection"]),
    ("image-missing", {"c.yaml": dataset_config(), "ann.json": coco()}, TRAIN, ["a.png", "does not exist"]),
    ("image-corrupt", {"c.yaml": dataset_config(), "ann.json": coco(), "img/a.png": "not a png"}, TRAIN,
     ["a.png", "corrupt"]),
    ("category-unknown", {"c.yaml": dataset_config(), "ann.json": coco(anns=((1, 1, 7, [2, 2, 9, 9]),)),
                          "img/a.png": PNG}, TRAIN, ["ann.json", "unknown category id 7"]),
    ("duplicate-ids", {"c.yaml": dataset_config(), "img/a.png": PNG,
                       "ann.json": coco(anns=((1, 1, 1, [2, 2, 9, 9]), (1, 1, 1, [3, 3, 9, 9])))}, TRAIN,
     ["ann.json", "duplicate annotation id 1"]),
    ("image-id-unknown", {"c.yaml": dataset_config(), "img/a.png": PNG, "ann.json": coco(anns=((1, 9, 1, [2, 2, 9, 9]),))},
     TRAIN, ["ann.json", "image id 9"]),
    ("bbox-malformed", {"c.yaml": dataset_config(), "img/a.png": PNG, "ann.json": coco(anns=((1, 1, 1, [2, 2, 9]),))},
     TRAIN, ["ann.json", "bbox", "4 finite numbers"]),
    ("boxes-all-outside", {"c.yaml": dataset_config(), "img/a.png": PNG,
                           "ann.json": coco(anns=((1, 1, 1, [40, 2, 5, 4]), (2, 1, 1, [50, 50, 4, 4])))},
     TRAIN, ["no images left", "ann.json"]),
    ("bbox-zero-width", {"c.yaml": dataset_config(), "img/a.png": PNG,
                         "ann.json": coco(anns=((1, 1, 1, [2, 2, 9, 9]), (2, 1, 1, [2, 2, 0, 4])))},
     TRAIN, ["ann.json: annotation id 2 of image id 1 has bbox [2, 2, 0, 4]", "non-positive width or height"]),
    ("file-name-dotdot", {"c.yaml": dataset_config(), "img/a.png": PNG,
                          "ann.json": coco(images=((1, "sub/../a.png", 32, 32),))},
     TRAIN, ["ann.json: image id 1 has file_name 'sub/../a.png'", "'..' part"]),
    ("config-value-anchor-strings", {"c.yaml": f"_base_: {SHAPES}\n"},
     [*TRAIN, "--cfg-options", "model.anchor_generator.sizes=[[a], [b], [c], [d]]"],
     ["model.anchor_generator.sizes.0.0", "got 'a'"]),
    ("classes-unknown", {"c.yaml": dataset_config(), "img/a.png": PNG, "ann.json": coco()},
     [*TRAIN, "--cfg-options", "classes=[hexagon]"], ["hexagon", "not categories of", "ann.json"]),
    # ---- checkpoints
    ("resume-missing", {"c.yaml": f"_base_: {SHAPES}\n"}, [*TRAIN, "--resume", "{t}/none.pth", "--cfg-options", *FAST],
     ["none.pth", "not found"]),
    ("load-from-not-checkpoint", {"c.yaml": f"_base_: {SHAPES}\n", "x.pth": "plain text"},
     [*TRAIN, "--load-from", "{t}/x.pth", "--cfg-options", *FAST], ["x.pth", "not a readable torch file"]),
    ("resume-truncated", {"c.yaml": f"_base_: {SHAPES}\n", "t.pth": "__truncated__"},
     [*TRAIN, "--resume", "{t}/t.pth", "--cfg-options", *FAST], ["t.pth", "truncated or not a checkpoint"]),
    ("checkpoint-other-arch", {"t.pth": "__faster__"}, ["test", RETINA, "{t}/t.pth", "--cfg-options",
                                                       "model.num_classes=3", "data.test.ann_file={t}/none.json"],
     ["holds a FasterRCNN but the config builds a RetinaNet"]),
    ("checkpoint-pickled-code", {"c.yaml": f"_base_: {SHAPES}\n", "e.pth": "__evil__"},
     [*TRAIN, "--resume", "{t}/e.pth", "--cfg-options", *FAST], ["e.pth", "refused by weights_only"]),
    ("test-checkpoint-missing", {}, ["test", SHAPES, "{t}/none.pth"], ["none.pth", "not found"]),
    # ---- other tools
    ("eval-results-missing", {"gt.json": coco()}, ["eval", "--ann", "{t}/gt.json", "--results", "{t}/dt.json"],
     ["dt.json"]),
    ("eval-results-unknown-image", {"gt.json": coco(), "dt.json": json.dumps(
        [{"image_id": 99, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}])},
     ["eval", "--ann", "{t}/gt.json", "--results", "{t}/dt.json"], ["dt.json", "99"]),
    ("infer-out-dir-is-input", {"t.pth": "__faster__", "img/a.png": PNG},
     ["infer", "none", "{t}/t.pth", "{t}/img", "--out-dir", "{t}/img"], ["would overwrite the input image", "a.png"]),
    ("infer-out-dir-is-a-file", {"t.pth": "__faster__", "img/a.png": PNG},
     ["infer", "none", "{t}/t.pth", "{t}/img", "--out-dir", "{t}/t.pth"], ["t.pth exists and is not a folder"]),
    ("infer-input-missing", {"t.pth": "__faster__"}, ["infer", "none", "{t}/t.pth", "{t}/nothing", "--out-dir", "{t}/o"],
     ["nothing", "does not exist"]),
]


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/detcore-catalogue-pwned",))


def _faster_checkpoint(path: Path) -> None:
    from detcore.checkpoint import make_meta, save_checkpoint
    from detcore.config import dump_config, load_config
    from detcore.models import build_detector

    cfg = load_config(SHAPES)
    model = build_detector(cfg["model"])
    save_checkpoint(path, model, make_meta(config_text=dump_config(cfg), classes=["a", "b", "c"], arch="FasterRCNN"))


def _materialise(t: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = t / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == PNG:
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
        elif content == "__faster__":
            _faster_checkpoint(path)
        elif content == "__truncated__":
            _faster_checkpoint(path)
            path.write_bytes(path.read_bytes()[:5000])
        elif content == "__evil__":
            torch.save({"state_dict": {}, "meta": {}, "x": Evil()}, path)
        else:
            path.write_text(content.replace("{t}", str(t)))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, files, argv, words = case
    _materialise(tmp_path, files)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = detcore_main([a.replace("{t}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("detcore ") and ": error: " in line]
    assert code != 0, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    for word in words:
        assert word.replace("{t}", str(tmp_path)) in errors[0], errors[0]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, f"left behind: {set(after) - set(before)}"
    assert not Path("/tmp/detcore-catalogue-pwned").exists()


def test_catalogue_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40
