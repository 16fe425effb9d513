"""MLflow and Weights & Biases end to end: a short job, resumed once, is one run in each, read back with
each tool's own reader (MLflow's client against a real ``mlflow server``; W&B's ``wandb leet inspect``
over the offline run folders)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.helpers import SHAPES, detcore, env, free_port
from tests.integration.launcher_cli import launcher
from tests.integration.mlflow_server import mlflow_server

pytestmark = pytest.mark.slow

TINY = ["data.samples_per_gpu=2", "data.workers_per_gpu=0", "auto_scale_lr.enable=false", "log_config.interval=1",
        "data.train.num_train=16", "data.train.num_val=4", "data.val.num_train=16", "data.val.num_val=4",
        "checkpoint_config.interval=2", "evaluation.interval=100", "lr_config.warmup_iters=2"]
MLFLOW_HOOK = "log_config.hooks=[{type: MlflowLoggerHook, exp_name: shapes-loggers, tags: {team: vision}, log_model: true}]"
LAUNCHER = {"DETLAUNCH_EXPERIMENT_ID": "0123abcd", "DETLAUNCH_BACKEND": "local"}  # what a launcher backend sets


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


def wandb_records(run_dir: Path) -> list[dict]:
    """Every record of an offline W&B run folder, as W&B's own reader prints them."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                          capture_output=True, text=True, timeout=120, env=env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_a_job_resumed_once_is_one_run_in_mlflow_and_in_wandb(server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    tools = {"MLFLOW_TRACKING_URI": server, "DETCORE_LOGGERS": "wandb", "WANDB_MODE": "offline",
             "WANDB_PROJECT": "shapes-loggers", **LAUNCHER}
    detcore("train", str(SHAPES), "--work-dir", str(work), "--cfg-options", "runner.max_iters=5", *TINY, MLFLOW_HOOK,
            **tools)
    # Resumed from iteration 4 although the run already holds 5 (as if killed after logging 5, before saving it),
    # with a longer schedule: iterations 5-8 run again, and only 6-8 are new to the loggers.
    proc = detcore("train", str(SHAPES), "--work-dir", str(work), "--resume", str(work / "iter_4.pth"),
                   "--cfg-options", "runner.max_iters=8", *TINY, MLFLOW_HOOK, **tools)
    assert "MLflow: continuing run" in proc.stderr, proc.stderr[-3000:]
    assert "iterations up to 5 are not sent again" in proc.stderr, proc.stderr[-3000:]

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("shapes-loggers")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["model.type"] == "FasterRCNN" and params["optimizer.lr"] == "0.02"
    assert params["data.train.num_train"] == "16" and params["runner.max_iters"] == "5"  # MLflow keeps the first
    assert tags["param_changed.runner.max_iters"] == "8"
    assert tags["detlaunch.experiment_id"] == "0123abcd" and tags["detlaunch.backend"] == "local"
    assert tags["team"] == "vision" and tags["mlflow.runName"] == "work"
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [1, 2, 3, 4, 5, 6, 7, 8]  # each iteration once
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/lr")] == list(range(1, 9))
    ap = client.get_metric_history(run.info.run_id, "val/bbox_AP")
    assert [m.step for m in ap] == [5, 8] and all(0.0 <= m.value <= 1.0 for m in ap)
    uploaded = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {"iter_8.pth", "best_bbox_AP.pth"} <= uploaded
    assert json.loads((work / "loggers/mlflow.json").read_text())["run_id"] == run.info.run_id

    folders = sorted((work / "wandb").glob("offline-run-*"))
    assert len(folders) == 2  # one per start, both of the same run
    records = [r for folder in folders for r in wandb_records(folder)]
    starts = [r["run"] for r in records if r["type"] == "run"]
    assert len({s["run_id"] for s in starts}) == 1 and all(s["project"] == "shapes-loggers" for s in starts)
    assert {"experiment:0123abcd", "backend:local"} <= set(starts[0]["tags"])
    history = [r["history"] for r in records if r["type"] == "history"]
    steps = [h["step"]["num"] for h in history]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # no step twice across the two folders
    assert all("train/loss" in h["item"] and "train/lr" in h["item"] for h in history)
    assert [h["step"]["num"] for h in history if "val/bbox_AP" in h["item"]] == [5, 8]
    config = {}
    for r in records:
        if r["type"] == "config":
            config.update(r["config"]["update"])
    assert config["model"]["type"] == "FasterRCNN" and config["detlaunch"]["detlaunch.experiment_id"] == "0123abcd"


def test_a_tracking_server_that_is_down_costs_one_warning_not_the_run(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    proc = detcore("train", str(SHAPES), "--work-dir", str(tmp_path), "--no-validate", "--cfg-options",
                   "runner.max_iters=2", *TINY, "log_config.hooks=[{type: MlflowLoggerHook}]", MLFLOW_TRACKING_URI=down)
    warnings = [line for line in proc.stderr.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], proc.stderr[-3000:]
    assert f"not logging this run (the tracking server {down} does not answer" in warnings[0]
    assert "training goes on" in warnings[0] and (tmp_path / "iter_2.pth").is_file()


# MlflowClient pools its HTTP connections to the tracking server for the life of this process (mlflow caches
# its requests session): this test's own client, not anything the launcher or the job left
@pytest.mark.keeps_sockets("MlflowClient's pooled connection to the module's tracking server")
def test_launcher_submit_on_two_ranks_is_one_run_tagged_with_its_experiment(server: str, home: Path,
                                                                            tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    hook = "log_config.hooks=[{type: MlflowLoggerHook, exp_name: shapes-launcher}]"
    sub = launcher(home, "submit", str(SHAPES), "--nproc", "2", "--no-validate", "--work-dir", str(work),
                   "--cfg-options", "runner.max_iters=3", *TINY, hook, MLFLOW_TRACKING_URI=server,
                   DETCORE_LOGGERS="wandb", WANDB_MODE="offline")
    exp_id = sub.stdout.splitlines()[0].strip()
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name("shapes-launcher").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 0 only
    tags = runs[0].data.tags
    assert tags["detlaunch.experiment_id"] == exp_id and tags["detlaunch.backend"] == "local"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")] == [1, 2, 3]
    folders = list((work / "wandb").glob("offline-run-*"))
    assert len(folders) == 1  # rank 1 opened no W&B run
    starts = [r["run"] for r in wandb_records(folders[0]) if r["type"] == "run"]
    assert {f"experiment:{exp_id}", "backend:local"} <= set(starts[0]["tags"])
