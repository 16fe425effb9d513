"""MLflow and W&B loggers without a server: how a config and DETCORE_LOGGERS switch them on, what the config
check refuses, the MMDetection 2.x/3.x spellings (in YAML and through ``config import``), the params sent,
and which run a resume or a restart continues."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from detcore.config import load_config
from detcore.config_check import config_problems
from detcore.loggers.runs import SavedRun, choose_run, read_record, write_record
from detcore.loggers.settings import MlflowSettings, WandbSettings, enabled_loggers, flatten_params, logger_problems
from detcore.mmdet_import import import_config

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
MMDET = ROOT / "tests/data/mmdet_configs"


def yaml_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(f"_base_: {SHAPES}\n{text}")
    return path


def hooks_cfg(*entries: dict, interval: int = 20) -> dict:
    return {"log_config": {"interval": interval, "hooks": list(entries)}}


# ---- switching on ----------------------------------------------------------------------------

def test_the_config_and_the_tools_own_variables_switch_loggers_on() -> None:
    cfg = hooks_cfg({"type": "MlflowLoggerHook", "exp_name": "shapes", "tags": {"team": "vision"}})
    assert enabled_loggers(cfg, {}) == [MlflowSettings(interval=20, exp_name="shapes", tags={"team": "vision"})]
    assert enabled_loggers(hooks_cfg(), {}) == []
    # as MLflow and W&B users switch them on: MLFLOW_TRACKING_URI, WANDB_PROJECT / WANDB_MODE
    shell = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "WANDB_PROJECT": "p"}
    assert enabled_loggers(hooks_cfg(), shell) == [MlflowSettings(interval=20), WandbSettings(interval=20)]
    assert enabled_loggers(hooks_cfg(), {"WANDB_MODE": "offline"}) == [WandbSettings(interval=20)]
    assert enabled_loggers(hooks_cfg(), {"WANDB_MODE": "disabled", "WANDB_PROJECT": "p"}) == []
    assert enabled_loggers(cfg, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}) == enabled_loggers(cfg, {})
    assert enabled_loggers(cfg, {**shell, "DETCORE_LOGGERS": "none"}) == []  # the way out
    assert enabled_loggers(hooks_cfg(), {**shell, "DETCORE_LOGGERS": "wandb"}) == [WandbSettings(interval=20)]


def test_detcore_loggers_adds_defaults_keeps_the_configs_entry_and_none_switches_all_off() -> None:
    cfg = hooks_cfg({"type": "WandbLoggerHook", "init_kwargs": {"project": "p"}, "interval": 40})
    both = enabled_loggers(cfg, {"DETCORE_LOGGERS": "mlflow, wandb"})
    assert both == [WandbSettings(interval=40, init_kwargs={"project": "p"}), MlflowSettings(interval=20)]
    assert enabled_loggers(cfg, {"DETCORE_LOGGERS": "none"}) == []
    assert enabled_loggers({}, {"DETCORE_LOGGERS": "wandb"}) == [WandbSettings(interval=10)]


@pytest.mark.parametrize("cfg, env, expected", [
    (hooks_cfg({"type": "NeptuneLoggerHook"}), {}, "log_config.hooks.0.type: 'NeptuneLoggerHook' is not a logger"),
    (hooks_cfg({"type": "MlflowLogerHook"}), {}, "(did you mean MlflowLoggerHook?)"),
    (hooks_cfg({"type": "MlflowLoggerHook", "experiment": "x"}), {}, "log_config.hooks.0: unknown key(s) experiment"),
    (hooks_cfg({"type": "WandbLoggerHook", "interval": 30}), {}, "30 is not a multiple of log_config.interval (20)"),
    (hooks_cfg({"type": "WandbLoggerHook", "init_kwargs": "p"}), {}, "init_kwargs: expected a mapping"),
    (hooks_cfg({"type": "MlflowLoggerHook", "log_model": "yes"}), {}, "log_model: expected true or false"),
    (hooks_cfg({"type": "MlflowLoggerHook"}, {"type": "MlflowLoggerHook"}), {}, "is already log_config.hooks.0"),
    (hooks_cfg({"type": "WandbLoggerHook", "init_kwargs": {"resume": "never"}}), {}, "start a new W&B run"),
    (hooks_cfg({"type": "WandbLoggerHook", "init_kwargs": {"projcet": "p"}}), {},
     "init_kwargs.projcet: wandb.init has no such parameter; did you mean project?"),
    ({"log_config": {"interval": 5, "hooks": {"type": "MlflowLoggerHook"}}}, {}, "log_config.hooks: expected a list"),
    ({}, {"DETCORE_LOGGERS": "mlfow"}, "unknown logger 'mlfow' (did you mean mlflow?)"),
])
def test_logger_problems_name_the_key_and_the_fix(cfg: dict, env: dict, expected: str) -> None:
    problems = logger_problems(cfg, env)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_init_kwargs_table_is_wandb_inits_signature() -> None:
    import inspect

    import wandb

    from detcore.loggers.settings import WANDB_INIT_KEYS

    assert set(WANDB_INIT_KEYS) == set(inspect.signature(wandb.init).parameters), \
        "update WANDB_INIT_KEYS in detcore/loggers/settings.py: wandb.init's parameters changed"


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert logger_problems(hooks_cfg({"type": "MlflowLoggerHook"}), {}) == []
    assert logger_problems(hooks_cfg({"type": "WandbLoggerHook"}), {}) == [
        "log_config.hooks.0 (WandbLoggerHook) needs the wandb package, which is not installed; pip install "
        "'detlaunch[wandb]' (or switch the logger off)"]
    assert "DETCORE_LOGGERS=wandb needs the wandb package" in logger_problems({}, {"DETCORE_LOGGERS": "wandb"})[0]
    assert logger_problems(hooks_cfg({"type": "WandbLoggerHook"}), {}, packages=False) == []


MISSING_WANDB = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "wandb" else real(name, *a)
from detcore.tools.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_detcore_train_with_a_missing_logger_package_exits_2_before_the_work_dir_exists(tmp_path: Path) -> None:
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-c", MISSING_WANDB, "train", str(SHAPES), "--work-dir", str(work)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "DETCORE_LOGGERS": "wandb"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"detcore train: error: {SHAPES}: DETCORE_LOGGERS=wandb needs the wandb package, which is not installed; pip "
        f"install 'detlaunch[wandb]' (or switch the logger off)")
    assert not work.exists()


# ---- MMDetection spellings in YAML ----------------------------------------------------------

def test_mmdetection_2x_logger_hooks_in_yaml(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = yaml_config(tmp_path, "log_config:\n  interval: 10\n  hooks:\n    - {type: TextLoggerHook}\n"
                       "    - {type: TensorboardLoggerHook}\n"
                       "    - {type: MlflowLoggerHook, exp_name: shapes, log_model: true, by_epoch: false}\n"
                       "    - {type: MMDetWandbHook, init_kwargs: {project: p}, interval: 20, log_checkpoint: true,"
                       " num_eval_images: 100}\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(path)
    assert cfg["log_config"]["hooks"] == [
        {"type": "MlflowLoggerHook", "exp_name": "shapes", "log_model": True},
        {"type": "WandbLoggerHook", "init_kwargs": {"project": "p"}, "interval": 20, "log_model": True}]
    assert "log_config.hooks.2 (MlflowLoggerHook): not read: by_epoch" in caplog.text
    assert "log_config.hooks.3 (MMDetWandbHook): not read: num_eval_images (validation images go to TensorBoard" \
        in caplog.text
    assert config_problems(cfg, files=False) == []


def test_mmdetection_3x_vis_backends_in_yaml(tmp_path: Path) -> None:
    path = yaml_config(tmp_path, "visualizer:\n  type: DetLocalVisualizer\n  vis_backends:\n"
                       "    - {type: LocalVisBackend}\n"
                       "    - {type: MLflowVisBackend, exp_name: shapes, tracking_uri: 'http://127.0.0.1:5000'}\n"
                       "    - {type: WandbVisBackend, init_kwargs: {project: p, name: first}}\n")
    cfg = load_config(path)
    assert "visualizer" not in cfg
    assert cfg["log_config"] == {"interval": 20, "hooks": [
        {"type": "MlflowLoggerHook", "exp_name": "shapes", "tracking_uri": "http://127.0.0.1:5000"},
        {"type": "WandbLoggerHook", "init_kwargs": {"project": "p", "name": "first"}}]}
    assert [s.kind for s in enabled_loggers(cfg, {})] == ["mlflow", "wandb"]


def test_cfg_options_switch_a_logger_on_without_a_plus() -> None:
    cfg = load_config(SHAPES, ["log_config.hooks=[{type: MlflowLoggerHook, exp_name: sweep}]"])
    assert enabled_loggers(cfg, {}) == [MlflowSettings(interval=20, exp_name="sweep")]


# ---- config import --------------------------------------------------------------------------

def test_config_import_maps_2x_logger_hooks(tmp_path: Path) -> None:
    path = tmp_path / "wandb_mlflow.py"
    path.write_text(f"_base_ = {str(MMDET / 'faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py')!r}\n"
                    "log_config = dict(interval=50, hooks=[\n"
                    "    dict(type='TextLoggerHook'),\n"
                    "    dict(type='MlflowLoggerHook', exp_name='coco', tags=dict(team='vision'), by_epoch=False),\n"
                    "    dict(type='WandbLoggerHook', init_kwargs=dict(project='mmdet'), interval=75, "
                    "log_artifact=True),\n"
                    "    dict(type='NeptuneLoggerHook', init_kwargs=dict(project='x')),\n"
                    "])\n")
    imported = import_config(path)
    assert imported.config["log_config"] == {"interval": 50, "hooks": [
        {"type": "MlflowLoggerHook", "log_model": True, "exp_name": "coco", "tags": {"team": "vision"}},  # MMCV's default
        {"type": "WandbLoggerHook", "init_kwargs": {"project": "mmdet"}}]}
    lines = "\n".join(imported.summary)
    assert "log_config.hooks.2.interval: 75  (not a multiple of log_config.interval (50)" in lines
    assert "log_config.hooks.2.log_artifact: true  (log files are not uploaded" in lines
    assert 'log_config.hooks.3: {"type": "NeptuneLoggerHook"' in lines and "(not mapped)" in lines
    assert "TextLoggerHook" not in lines and "by_epoch" not in lines


def test_config_import_maps_3x_vis_backends(tmp_path: Path) -> None:
    path = tmp_path / "vis.py"
    path.write_text(f"_base_ = {str(MMDET / 'v3/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')!r}\n"
                    "vis_backends = [dict(type='LocalVisBackend'),\n"
                    "                dict(type='MLflowVisBackend', exp_name='coco3', run_name='r50',"
                    " artifact_suffix=('.log',)),\n"
                    "                dict(type='WandbVisBackend', init_kwargs=dict(project='mmdet3'),"
                    " define_metric_cfg=dict(loss='min'))]\n"
                    "visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')\n")
    imported = import_config(path)
    assert imported.config["log_config"]["hooks"] == [
        {"type": "MlflowLoggerHook", "exp_name": "coco3", "run_name": "r50"},
        {"type": "WandbLoggerHook", "init_kwargs": {"project": "mmdet3"}}]
    lines = "\n".join(imported.summary)
    assert "visualizer.vis_backends.1.artifact_suffix" in lines and "log files are not uploaded" in lines
    assert "visualizer.vis_backends.2.define_metric_cfg" in lines and "vis_backends: " not in lines
    assert config_problems(load_config(_yaml_of(imported, tmp_path)), files=False, registries=False) == []


def _yaml_of(imported, tmp_path: Path) -> Path:
    from detcore.mmdet_import import write_yaml

    return write_yaml(imported, tmp_path / "imported.yaml")


def test_new_style_3x_vis_backends_import(tmp_path: Path) -> None:
    tree = shutil.copytree(MMDET / "v3_new_style", tmp_path / "v3_new_style")
    path = tree / "faster_rcnn/with_wandb.py"
    path.write_text("from mmengine.config import read_base\nwith read_base():\n"
                    "    from .faster_rcnn_r50_fpn_1x_coco import *\n"
                    "from mmengine.visualization import LocalVisBackend, WandbVisBackend\n"
                    "vis_backends = [dict(type=LocalVisBackend), dict(type=WandbVisBackend, "
                    "init_kwargs=dict(project='p'))]\n"
                    "visualizer.update(dict(vis_backends=vis_backends))\n")
    imported = import_config(path)
    assert imported.config["log_config"]["hooks"] == [{"type": "WandbLoggerHook", "init_kwargs": {"project": "p"}}]
    assert not [line for line in imported.summary if "vis_backends" in line]


# ---- params ---------------------------------------------------------------------------------

def test_params_are_the_flattened_config_within_mlflows_limits() -> None:
    cfg = {"model": {"type": "FasterRCNN", "backbone": {"depth": 50, "frozen": True}}, "classes": ["a", "b"],
           "optimizer": {"lr": 0.02}, "load_from": None, "pipeline": [{"type": "Resize", "scale": [1, 2]}],
           "long": "x" * 50, "k" * 30: 1}
    flat = flatten_params(cfg, key_limit=25, value_limit=20)
    assert flat["model.type"] == "FasterRCNN" and flat["model.backbone.depth"] == "50"
    assert flat["model.backbone.frozen"] == "true" and flat["load_from"] == "null" and flat["optimizer.lr"] == "0.02"
    assert flat["classes"] == '["a", "b"]' and flat["pipeline"] == '[{"type": "Resize...'
    assert flat["long"] == "x" * 17 + "..." and "k" * 30 not in flat
    assert set(flatten_params(cfg, only=("model", "optimizer.lr"))) == {
        "model.type", "model.backbone.depth", "model.backbone.frozen", "optimizer.lr"}


# ---- which run ------------------------------------------------------------------------------

HERE = "http://mlflow:5000"


@pytest.mark.parametrize("ckpt, work, resumed_at, experiment, expected", [
    # a resume continues the checkpoint's run; the work dir says it already holds 7 (killed after sending 7)
    (SavedRun("A", HERE), SavedRun("A", HERE, None, 7), 4, None, ("A", 7)),
    (SavedRun("A", HERE), None, 4, None, ("A", 4)),
    # the work dir names another run (a fresh start since): the checkpoint's run, from the checkpoint on
    (SavedRun("A", HERE), SavedRun("B", HERE, None, 9), 4, None, ("A", 4)),
    # a checkpoint saved before the logger was switched on: the work dir's run
    (None, SavedRun("B", HERE, None, 9), 4, None, ("B", 9)),
    (None, None, 4, None, (None, 4)),
    # the tracking URI changed: the old server's run is not continued
    (SavedRun("A", "http://old:5000"), SavedRun("A", "http://old:5000", None, 7), 4, None, (None, 4)),
    # a restart before the first checkpoint: the same launcher experiment's run, with what it already holds
    (None, SavedRun("C", HERE, "0123abcd", 3), None, "0123abcd", ("C", 3)),
    # a fresh start in a finished run's work dir (another experiment, or no launcher): a new run
    (None, SavedRun("C", HERE, "0123abcd", 300), None, "89abcdef", (None, 0)),
    (None, SavedRun("C", HERE, None, 300), None, None, (None, 0)),
])
def test_choose_run(ckpt, work, resumed_at, experiment, expected) -> None:
    choice = choose_run(ckpt, work, where=HERE, resumed_at=resumed_at, experiment=experiment)
    assert (choice.run_id, choice.logged_through) == expected


def test_the_work_dir_record_round_trips_and_ignores_foreign_files(tmp_path: Path) -> None:
    write_record(tmp_path, "mlflow", SavedRun("A", HERE, "0123abcd", 12))
    assert read_record(tmp_path, "mlflow") == SavedRun("A", HERE, "0123abcd", 12)
    assert json.loads((tmp_path / "loggers/mlflow.json").read_text())["run_id"] == "A"
    (tmp_path / "loggers/wandb.json").write_text('{"best": 0.5}')
    assert read_record(tmp_path, "wandb") is None and read_record(tmp_path / "nowhere", "mlflow") is None
    assert SavedRun.from_dict({"run_id": "A", "last_step": True}) == SavedRun("A", "")
