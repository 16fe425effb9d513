"""What reaches a worker for the MLflow / W&B loggers: every backend names itself (the runs' backend tag),
and Ray, whose workers do not inherit the submitting shell, gets the loggers' settings but no credentials."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from detcore.contract import BACKEND_ENV, EXPERIMENT_ENV, logger_settings_env
from launcher.backends.local import LocalBackend, LocalOptions
from launcher.backends.ray_train import RayTrainBackend
from launcher.backends.ray_train.plan import RayOptions, trainer_plan
from launcher.backends.slurm.task import SlurmTask
from launcher.jobs import SubmitRequest, build_spec
from launcher.spec import Resources

ROOT = Path(__file__).resolve().parents[3]
SHAPES = "configs/shapes/faster_rcnn_tiny_shapes.yaml"
SHELL = {"PYTHONPATH": "", "DETCORE_LOGGERS": "mlflow,wandb", "MLFLOW_TRACKING_URI": "http://10.0.0.5:5000",
         "WANDB_PROJECT": "shapes", "WANDB_MODE": "offline", "WANDB_API_KEY": "secret", "MLFLOW_TRACKING_TOKEN": "t0k",
         "HOME": "/home/someone"}


def spec_for(backend: str, options=None):
    req = SubmitRequest(config=SHAPES, backend=backend, backend_options=options, resources=Resources(nproc=2))
    return build_spec(req, cwd=str(ROOT), exp_id="0123abcd")


def test_logger_settings_are_passed_on_without_credentials() -> None:
    assert logger_settings_env(SHELL) == {"DETCORE_LOGGERS": "mlflow,wandb", "MLFLOW_TRACKING_URI": "http://10.0.0.5:5000",
                                          "WANDB_MODE": "offline", "WANDB_PROJECT": "shapes"}


def test_local_workers_know_their_backend(tmp_path: Path) -> None:
    env = dict(LocalBackend(tmp_path, cores=8, gpus=()).dryrun(spec_for("local", LocalOptions())).env)
    assert env[BACKEND_ENV] == "local" and env[EXPERIMENT_ENV] == "0123abcd"


def test_ray_workers_get_the_backend_and_the_logger_settings(tmp_path: Path) -> None:
    spec = spec_for("ray", RayOptions(address="127.0.0.1:6390"))
    workers = dict(trainer_plan(spec, spec.backend_options, SHELL).env_vars)  # Ray's runtime_env for every worker
    assert workers[BACKEND_ENV] == "ray" and workers["MLFLOW_TRACKING_URI"] == "http://10.0.0.5:5000"
    assert workers["DETCORE_LOGGERS"] == "mlflow,wandb" and workers["WANDB_PROJECT"] == "shapes"
    assert "WANDB_API_KEY" not in workers and "MLFLOW_TRACKING_TOKEN" not in workers and "HOME" not in workers
    dry = RayTrainBackend(tmp_path, environ=SHELL).dryrun(spec)
    driver = dict(dry.files)["ray_driver"].splitlines()[0]
    assert "'MLFLOW_TRACKING_URI': 'http://10.0.0.5:5000'" in driver and "'DETLAUNCH_BACKEND': 'ray'" in driver
    assert "secret" not in dry.render() and "t0k" not in dry.render()


def test_slurm_tasks_start_their_worker_with_the_backend(tmp_path: Path, monkeypatch) -> None:
    for key, value in {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0",
                       "SLURM_JOB_NODELIST": "n1"}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "env.json"
    body = (f"import json, os; json.dump({{k: v for k, v in os.environ.items() if k.startswith('DETLAUNCH_')}}, "
            f"open({str(out)!r}, 'w'))")
    task = SlurmTask("0123abcd", [sys.executable, "-c", body], str(tmp_path), {}, str(tmp_path / "logs"))
    assert task() == 0
    assert json.loads(out.read_text()) == {BACKEND_ENV: "slurm", EXPERIMENT_ENV: "0123abcd"}
