"""What a run would refuse is refused before it starts: one line per problem, nothing created."""
from __future__ import annotations

from pathlib import Path

import pytest

from detcore.config import load_config
from detcore.config_check import ConfigProblems, check_config, config_problems
from detcore.tools.cli import main as detcore_main

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
MASK = ROOT / "configs/shapes/mask_rcnn_tiny_shapes.yaml"


def problems(config: Path, *overrides: str, **kwargs) -> list[str]:
    return config_problems(load_config(config, overrides, import_custom=False), **kwargs)


def test_the_shipped_configs_have_no_problem():
    assert problems(SHAPES) == [] and problems(MASK) == []
    assert problems(SHAPES, "evaluation.metric=[bbox, mAP]") == []
    assert problems(MASK, test=True, eval_metrics=["segm", "mAP"]) == []
    # a test run loads the checkpoint it is given: the config's load_from (a URL in MMDetection's guide) is not read
    assert problems(SHAPES, "+load_from=https://download.openmmlab.com/x.pth", test=True) == []


@pytest.mark.parametrize("overrides,kwargs,words", [
    (["evaluation.metric=[segm]"], {}, ["evaluation.metric", "segm needs a detector that predicts masks",
                                       "FasterRCNN"]),
    (["evaluation.metric=[AP50]"], {}, ["unknown metric 'AP50'", "bbox, segm, mAP"]),
    (["model.backbone.type=ResNet51"], {}, ["model.backbone.type", "did you mean 'ResNet'"]),
    (["data.train.pipeline.0.type=RandomFlipp"], {}, ["data.train.pipeline.0.type", "RandomFlip"]),
    (["+load_from=gone.pth"], {}, ["load_from: checkpoint gone.pth does not exist", "latest.pth"]),
    ([], {"load_from": "gone.pth"}, ["--load-from: checkpoint gone.pth does not exist"]),
    (["+custom_imports=[no_such_module_x]"], {}, ["cannot import 'no_such_module_x'"]),
    (["data.test.with_mask=false"], {"test": True, "eval_metrics": ["segm"]}, ["--eval", "with_mask: true"]),
])
def test_each_problem_is_one_line_naming_the_key(overrides, kwargs, words):
    config = MASK if "data.test.with_mask=false" in overrides else SHAPES
    found = problems(config, *overrides, **kwargs)
    assert len(found) == 1, found
    for word in words:
        assert word in found[0], found[0]


def test_segm_is_not_checked_when_training_does_not_validate():
    assert problems(SHAPES, "evaluation.metric=[segm]", validate=False) == []


def test_all_problems_at_once_each_on_its_own_line():
    cfg = load_config(SHAPES, ["evaluation.metric=[segm]", "+load_from=gone.pth"], import_custom=False)
    with pytest.raises(ConfigProblems) as exc:
        check_config(cfg)
    assert len(exc.value.problems) == 2 and all(str(SHAPES) in p for p in exc.value.problems)


def test_train_with_a_metric_the_dataset_cannot_produce_fails_before_the_work_dir(tmp_path, capsys):
    code = detcore_main(["train", str(SHAPES), "--work-dir", str(tmp_path / "work"), "--cfg-options",
                         "evaluation.metric=[segm, mAP]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "segm needs a detector that predicts masks" in err[0], err
    assert not (tmp_path / "work").exists()


def test_config_show_refuses_an_unknown_metric(capsys):
    assert detcore_main(["config", "show", str(SHAPES), "--cfg-options", "evaluation.metric=[mAP50]"]) == 2
    assert "unknown metric 'mAP50'" in capsys.readouterr().err


def test_config_show_prints_a_config_whose_data_is_not_here_and_warns_on_stderr(tmp_path, monkeypatch, capsys):
    """A user reads a shipped COCO config (or an imported MMDetection one) before downloading COCO."""
    monkeypatch.chdir(tmp_path)  # no data/coco here
    coco = ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml"
    assert detcore_main(["config", "show", str(coco), "--cfg-options", "+load_from=gone.pth"]) == 0
    out, err = capsys.readouterr()
    shown = load_config(coco)  # the printed text is the resolved config
    assert "instances_train2017.json" in out and f"max_size: {shown['model']['max_size']}" in out
    warnings = err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("detcore config: warning: ") for w in warnings), warnings
    assert ["load_from: checkpoint gone.pth" in warnings[0], "data.train.ann_file" in warnings[1],
            "data.val.ann_file" in warnings[2]] == [True] * 3, warnings


def test_config_show_of_config_import_output(tmp_path, monkeypatch, capsys):
    mmdet = ROOT / ".cache/mmdet/configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py"
    monkeypatch.chdir(tmp_path)
    assert detcore_main(["config", "import", str(mmdet), "--out", str(tmp_path / "imported.yaml")]) == 0
    capsys.readouterr()
    for shown in (tmp_path / "imported.yaml", mmdet):
        assert detcore_main(["config", "show", str(shown), "--json"]) == 0
        out, err = capsys.readouterr()
        assert '"type": "FasterRCNN"' in out and "error" not in err and "data.train.ann_file" in err


def test_a_training_run_still_refuses_the_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    coco = ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml"
    assert detcore_main(["train", str(coco), "--work-dir", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(": error: " in line and "does not exist" in line for line in err), err
    assert not (tmp_path / "work").exists()


def test_launcher_submit_checks_with_detcore_before_anything_starts(tmp_path, monkeypatch, capsys):
    from launcher.cli import main as launcher_main

    home = tmp_path / "home"
    monkeypatch.setenv("LAUNCHER_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    coco = tmp_path / "coco_train.yaml"  # a COCO train split whose annotation file is missing
    coco.write_text(f"_base_: {SHAPES}\ndata:\n  train: {{_delete_: true, type: CocoDataset, ann_file: gone.json, "
                    f"img_prefix: imgs/}}\n")
    for config, extra, word in ((SHAPES, ["--cfg-options", "evaluation.metric=[segm]"], "segm needs"),
                                (SHAPES, ["--load-from", "gone.pth"], "--load-from 'gone.pth': no such checkpoint"),
                                (coco, ["--backend", "slurm"], "checked on this node")):
        code = launcher_main(["submit", str(config), *extra])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and word in lines[0], lines
        assert not (tmp_path / "work_dirs").exists() and not (home / "jobs").exists()


def test_a_hook_section_key_no_hook_takes_is_one_line_before_the_work_dir(tmp_path, capsys):
    work = tmp_path / "work"
    code = detcore_main(["train", str(SHAPES), "--work-dir", str(work), "--cfg-options",
                         "+checkpoint_config.max_keep_ckpt=2", "+evaluation.rule=greater"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 2, err
    assert "evaluation: unknown key(s) rule; evaluation takes interval, metric" in err[0]
    assert "checkpoint_config: unknown key(s) max_keep_ckpt; checkpoint_config takes interval, max_keep" in err[1]
    assert not work.exists()
