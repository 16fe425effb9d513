"""The Ray backend without a cluster: the dry run as a value, option rules, the state mapping,
attempt records, error lines, and submit/status/cancel through the backend's seams."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import pytest

from detcore import contract
from launcher.backends import backend_module
from launcher.runtime.command import worker_command
from launcher.backends.ray_train.plan import (RayOptions, driver_env, parse_address, render_plan, resolve_address,
                                        trainer_plan)
from launcher.backends.ray_train import RayTrainBackend, options_from_args, resources_from_args
from launcher.backends.ray_train.train_loop import CheckpointView, checkpoint_iteration
from launcher.errors import LauncherError
from launcher.jobs import SubmitRequest, build_spec
from launcher.spec import JobHandle, JobState, Resources

ROOT = Path(__file__).resolve().parents[3]
SHAPES = "configs/shapes/faster_rcnn_tiny_shapes.yaml"
ENV = {"PYTHONPATH": ""}


def spec_for(options=None, **kw):
    kw.setdefault("resources", Resources(nproc=2))
    req = SubmitRequest(config=SHAPES, backend="ray", backend_options=options, **kw)
    return build_spec(req, cwd=str(ROOT), exp_id="0123abcd")


# ---- the dry run ------------------------------------------------------------------------------

def test_dry_run_renders_trainer_configs_and_the_worker_command(tmp_path):
    spec = spec_for(RayOptions(address="127.0.0.1:6390", max_failures=3), overrides=("data.samples_per_gpu=2",))
    dry = RayTrainBackend(tmp_path, environ=ENV).dryrun(spec)
    work = str(ROOT / "work_dirs" / "faster_rcnn_tiny_shapes-0123abcd")
    assert dry.backend == "ray" and dry.world_size == 2
    assert dry.commands == (worker_command(spec),)
    cmd = dry.commands[0]
    assert cmd[:7] == (sys.executable, "-m", "detcore.tools.cli", "train", str(ROOT / SHAPES), "--work-dir", work)
    assert cmd[cmd.index("--cfg-options") + 1] == "data.samples_per_gpu=2"  # the user's, then the scaling's
    env = dict(dry.env)
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["DETLAUNCH_EXPERIMENT_ID"] == "0123abcd"
    driver = dict(dry.files)["ray_driver"]
    assert driver.splitlines()[0] == ("ray.init(address='127.0.0.1:6390', runtime_env={'env_vars': "
                                      "{'DETLAUNCH_BACKEND': 'ray', 'DETLAUNCH_EXPERIMENT_ID': '0123abcd', "
                                      "'PYTHONPATH': '" + str(ROOT) + "', "
                                      "'PYTHONUNBUFFERED': '1'}})")
    # 2 CPUs per worker: the worker and the shapes config's one DataLoader process (data.workers_per_gpu: 1)
    assert ("scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={'CPU': 2}, "
            "placement_strategy='PACK')") in driver
    assert f"run_config=RunConfig(name='detlaunch-0123abcd', storage_path='{work}/ray'," in driver
    assert "failure_config=FailureConfig(max_failures=3)" in driver
    assert "checkpoint_config=CheckpointConfig(num_to_keep=2)" in driver
    assert "torch_config=BoundTorchConfig(backend='gloo', timeout_s=1800)" in driver  # detcore's 30 min
    text = dry.render()
    assert "file ray_driver:" in text and "detcore.tools.cli train" in text and "--resume auto" in text
    assert dry.to_json()["files"]["ray_driver"] == driver


def test_dry_run_is_pure_and_repeatable(tmp_path):
    backend = RayTrainBackend(tmp_path / "home", environ=ENV)
    spec = spec_for(RayOptions(address="10.0.0.5:6379"))
    assert backend.dryrun(spec) == backend.dryrun(spec)
    assert not (tmp_path / "home").exists()  # nothing written, no cluster asked
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in dict(backend.dryrun(spec).env)  # only for loopback heads


def test_gpu_workers_and_defaults():
    spec = spec_for(RayOptions(address="auto"), resources=Resources(nproc=4, gpus=4, cpus_per_task=8, mem_gb=64))
    plan = trainer_plan(spec, spec.backend_options, ENV)
    assert (plan.num_workers, plan.use_gpu, plan.torch_backend) == (4, True, "nccl")
    assert dict(plan.resources_per_worker) == {"CPU": 8, "GPU": 1, "memory": 16 * 2 ** 30}
    assert plan.max_failures == spec.max_restarts  # --max-failures defaults to --max-restarts
    half = trainer_plan(spec, RayOptions(gpus_per_worker=0.5), ENV)
    assert dict(half.resources_per_worker)["GPU"] == 0.5
    two_nodes = trainer_plan(spec_for(None, resources=Resources(nproc=2, nodes=2)), None, ENV)
    assert (two_nodes.num_workers, two_nodes.placement_strategy) == (4, "SPREAD")


def test_a_test_job_runs_detcore_test_on_every_worker(tmp_path):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    spec = spec_for(None, checkpoint=str(ckpt), eval_metrics=("bbox",))
    dry = RayTrainBackend(tmp_path, environ=ENV).dryrun(spec)
    work = spec.work_dir
    args = trainer_plan(spec, None, ENV).worker.args
    assert args == ("test", str(ROOT / SHAPES), str(ckpt), "--work-dir", work, "--out", f"{work}/results.json",
                    "--device", "cpu", "--eval", "bbox")
    assert "--resume" not in args  # a restarted group evaluates again (detcore test has no resume)
    assert any(n.startswith(f"a test job: the 2 workers evaluate {ckpt}") for n in dry.notes)
    assert not any("--resume auto" in n for n in dry.notes)


def test_ray_config_objects_match_the_plan_without_deprecation_warnings():
    from launcher.backends.ray_train.driver import ray_configs

    spec = spec_for(RayOptions(max_failures=2, storage="/shared/ray"))
    plan = trainer_plan(spec, spec.backend_options, ENV)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated Ray Train call would raise here
        cfg = ray_configs(plan)
    sc, rc = cfg["scaling_config"], cfg["run_config"]
    assert (sc.num_workers, sc.use_gpu, sc.resources_per_worker, sc.placement_strategy) == (2, False, {"CPU": 2},
                                                                                           "PACK")
    assert (rc.name, rc.storage_path, rc.failure_config.max_failures) == ("detlaunch-0123abcd", "/shared/ray", 2)
    assert rc.checkpoint_config.num_to_keep == 2 and cfg["torch_config"].backend == "gloo"
    from ray.train.v2.api import config as v2

    assert isinstance(rc, v2.RunConfig) and isinstance(sc, v2.ScalingConfig)  # the current API, not V1's
    assert render_plan(plan).count("max_failures=2") == 1


def test_dist_params_timeout_min_is_the_process_groups_timeout_under_ray():
    from launcher.backends.ray_train.driver import ray_configs

    spec = spec_for(None, overrides=("+dist_params={timeout_min: 2.5}",))
    plan = trainer_plan(spec, None, ENV)
    assert plan.timeout_s == 150
    assert ray_configs(plan)["torch_config"].timeout_s == 150  # what Ray hands init_process_group
    assert "BoundTorchConfig(backend='gloo', timeout_s=150)" in render_plan(plan)
    dry = RayTrainBackend(Path("/nonexistent"), environ=ENV).dryrun(spec)
    assert any(n.startswith("process-group timeout: 2.5 min (dist_params.timeout_min)") for n in dry.notes)
    assert ray_configs(trainer_plan(spec_for(None), None, ENV))["torch_config"].timeout_s == 1800  # unset: 30 min


@pytest.mark.parametrize("value", ["0", "-3", "soon", "true"])
def test_a_bad_dist_timeout_is_one_line_naming_the_key(value):
    with pytest.raises(LauncherError, match=rf"^{SHAPES}: dist_params.timeout_min must be a number of minutes > 0"):
        spec_for(None, overrides=(f"+dist_params={{timeout_min: {value}}}",))


@pytest.mark.parametrize("overrides,resources,test,cpus,why", [
    ((), Resources(nproc=2), False, 2, "1 for the worker + 1 for its DataLoader processes"),
    (("data.workers_per_gpu=4",), Resources(nproc=2), False, 5, "1 for the worker + 4 for its DataLoader processes"),
    (("data.workers_per_gpu=0",), Resources(nproc=2), False, 1, "1 for the worker + 0 for its DataLoader processes"),
    (("data.workers_per_gpu=4",), Resources(nproc=2, cpus_per_task=3), False, 3, "(--cpus-per-worker)"),
    (("data.workers_per_gpu=4", "+data.test.workers_per_gpu=1"), Resources(nproc=2), True, 2,
     "1 for the worker + 1 for its DataLoader processes"),  # a test job reads the test split's loader
    (("data.workers_per_gpu=2",), Resources(nproc=4, gpus=4), False, 3, "1 for the worker + 2 for its DataLoader"),
])
def test_cpus_per_worker_follow_the_loader_workers(tmp_path, overrides, resources, test, cpus, why):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    spec = spec_for(None, overrides=overrides, resources=resources, checkpoint=str(ckpt) if test else None)
    plan = trainer_plan(spec, None, ENV)
    assert dict(plan.resources_per_worker)["CPU"] == cpus
    dry = RayTrainBackend(tmp_path, environ=ENV).dryrun(spec)
    note = next(n for n in dry.notes if n.startswith("CPUs per worker:"))
    assert note.startswith(f"CPUs per worker: {cpus} ") and why in note


def test_a_sweeps_max_parallel_is_refused_in_one_line_not_ignored():
    from launcher.spec import SlotPool

    with pytest.raises(LauncherError, match=r"^--max-parallel 2: the ray backend does not limit"):
        trainer_plan(spec_for(None, slots=SlotPool("0123abcd", 2)), None, ENV)


# ---- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,host,port,client", [
    ("127.0.0.1:6379", "127.0.0.1", 6379, False), ("ray://10.0.0.5:10001", "10.0.0.5", 10001, True),
    ("ray://head", "head", 10001, True), ("localhost:7000", "localhost", 7000, False)])
def test_addresses(text, host, port, client):
    a = parse_address(text)
    assert (a.host, a.port, a.client) == (host, port, client)


@pytest.mark.parametrize("bad", ["127.0.0.1", "ftp://x:1", "http://x:0", "x:0", "x:99999", "ray://", ""])
def test_bad_addresses_name_the_forms(bad):
    with pytest.raises(LauncherError, match="expected auto, HOST:PORT"):
        RayOptions(address=bad)


def test_auto_address_and_loopback_rule():
    def unread():
        raise AssertionError("the address file is read only for --address auto without RAY_ADDRESS")

    assert resolve_address("auto", {"RAY_ADDRESS": "127.0.0.1:6390"}, unread).text == "127.0.0.1:6390"
    assert resolve_address("10.0.0.5:6379", {}, unread).host == "10.0.0.5"
    assert resolve_address("auto", {}, lambda: "127.0.0.1:6379\n").port == 6379
    with pytest.raises(LauncherError, match="no Ray cluster found"):
        resolve_address("auto", {}, lambda: None)
    assert driver_env(parse_address("127.0.0.1:6379"))["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in driver_env(parse_address("10.0.0.5:6379"))


@pytest.mark.parametrize("kw,message", [
    (dict(gpus_per_worker=-1), "--gpus-per-worker must be a number >= 0"),
    (dict(max_failures=-2), "--max-failures must be an integer >= 0"),
    (dict(storage="relative/dir"), "--storage must be an absolute path"),
])
def test_option_errors(kw, message):
    with pytest.raises(LauncherError, match=message):
        RayOptions(**kw)


def _args(**kw):
    base = dict(nproc=None, gpus=None, cpus_per_task=None, ray_workers=None, ray_cpus_per_worker=None,
                ray_gpus_per_worker=None, ray_address=None, ray_max_failures=None, ray_storage=None)
    return argparse.Namespace(**{**base, **kw})


def test_ray_argument_names_map_onto_generic_resources():
    r = resources_from_args(_args(ray_workers=3, ray_cpus_per_worker=2), Resources())
    assert (r.nproc, r.gpus, r.cpus_per_task) == (3, 0, 2)
    r = resources_from_args(_args(ray_workers=2, ray_gpus_per_worker=1.0), Resources())
    assert (r.nproc, r.gpus) == (2, 2)
    with pytest.raises(LauncherError, match="disagree"):
        resources_from_args(_args(ray_workers=2, nproc=4), Resources(nproc=4))
    with pytest.raises(LauncherError, match="--cpus-per-task under another name"):
        resources_from_args(_args(ray_cpus_per_worker=2, cpus_per_task=4), Resources(cpus_per_task=4))
    opts = options_from_args(_args(ray_storage="rel", ray_max_failures=1))
    assert opts.storage == os.path.abspath("rel") and opts.max_failures == 1 and opts.address == "auto"


def test_registry_and_cli_dry_run(tmp_path, capsys, monkeypatch):
    from launcher.cli import main

    assert backend_module("ray").RayTrainBackend is RayTrainBackend
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(ROOT)
    rc = main(["submit", SHAPES, "--backend", "ray", "--address", "127.0.0.1:1", "--workers", "2",
               "--max-failures", "4", "--dry-run", "--cfg-options", "data.samples_per_gpu=2"])
    out = capsys.readouterr().out
    assert rc == 0 and "FailureConfig(max_failures=4)" in out and "num_workers=2" in out
    assert not (tmp_path / "home").exists()


def test_worker_rules():
    assert checkpoint_iteration("iter_15.pth") == 15 and checkpoint_iteration("epoch_3.pth") == 3
    assert checkpoint_iteration(None) is None and checkpoint_iteration("best_bbox_AP.pth") is None
    assert contract.resume_on_restart("never", contract.restart_env(1)) == "auto"  # a restarted worker resumes
    view = CheckpointView("iter_5.pth", 5, (("loss", 1.0),), done=False)
    assert len(__import__("pickle").dumps(view)) < 1000  # fits Ray's broadcast_from_rank_zero limit


# ---- submit / status / cancel through the seams ---------------------------------------------------

class FakeDriverBackend(RayTrainBackend):
    """The real backend with the two seams replaced: no socket, no process."""

    def __init__(self, home, reachable=True):
        super().__init__(home, environ=ENV)
        self.reachable, self.started = reachable, []

    def _check_address(self, plan):
        if not self.reachable:
            raise LauncherError(f"cannot reach a Ray head (GCS) at {plan.address}: Connection refused")
        return parse_address(plan.address)

    def _start_driver(self, cmd, env, cwd, log):
        self.started.append((cmd, dict(env), cwd, log))
        return os.getpid(), int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_submit_hands_the_spec_to_a_detached_driver(tmp_path):
    backend = FakeDriverBackend(tmp_path / "home")
    spec = spec_for(RayOptions(address="127.0.0.1:6390"))
    handle = backend.submit(spec)
    (cmd, env, cwd, log), = backend.started
    assert cmd == (sys.executable, "-m", "launcher.backends.ray_train.driver", "--home", str(tmp_path / "home"), spec.id)
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["DETLAUNCH_EXPERIMENT_ID"] == spec.id
    assert cwd == spec.cwd and log == tmp_path / "home" / "ray" / spec.id / "driver.log"
    saved = json.loads((tmp_path / "home" / "ray" / spec.id / "spec.json").read_text())
    assert saved["backend_options"]["address"] == "127.0.0.1:6390"
    assert backend.load_spec(spec.id) == spec
    assert handle.get("address") == "127.0.0.1:6390" and handle.job_id == str(os.getpid())
    assert backend.status(handle).state is JobState.PENDING  # driver alive, nothing recorded yet
    assert handle.get("run_dir") == os.path.join(spec.work_dir, "runs", spec.run_id)


def test_the_driver_executes_the_plan_submit_computed_not_its_own_environment(tmp_path, monkeypatch):
    """What ``--dry-run`` printed is what runs: submit stores the plan in the job folder (``plan.json``) and the
    driver (on the submitting machine, or on the head as a Ray job, with the head's environment) executes it."""
    from launcher.backends.ray_train.driver import Driver
    from launcher.backends.ray_train.plan import TrainerPlan

    backend = FakeDriverBackend(tmp_path / "home")
    backend.environ = {**ENV, "MLFLOW_TRACKING_URI": "http://mlflow.lab:5000"}  # the submitter's logger settings
    spec = spec_for(RayOptions(address="127.0.0.1:6390"))
    dry = backend.dryrun(spec)
    backend.submit(spec, dry)
    job_dir = tmp_path / "home" / "ray" / spec.id
    stored = json.loads((job_dir / "plan.json").read_text())
    assert stored["dry_run"] == json.loads(json.dumps(dry.to_json(), default=str))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the driver's own environment lacks it
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    plan = Driver(spec, tmp_path / "home", job_dir).plan
    assert plan == TrainerPlan.from_json(dry.plan) == trainer_plan(spec, spec.backend_options, backend.environ)
    assert ("MLFLOW_TRACKING_URI", "http://mlflow.lab:5000") in plan.env_vars
    (job_dir / "plan.json").unlink()
    with pytest.raises(LauncherError, match="plan.json is missing or unreadable"):
        Driver(spec, tmp_path / "home", job_dir)


def test_unreachable_address_fails_at_submit_and_leaves_nothing(tmp_path):
    backend = FakeDriverBackend(tmp_path / "home", reachable=False)
    with pytest.raises(LauncherError, match="cannot reach"):
        backend.submit(spec_for(RayOptions(address="127.0.0.1:1")))
    assert not backend.started and not (tmp_path / "home" / "ray").exists()


def test_real_address_check_is_bounded(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = RayTrainBackend(tmp_path, environ=ENV)
    t0 = time.monotonic()
    with pytest.raises(LauncherError, match=f"cannot reach a Ray head \\(GCS\\) at 127.0.0.1:{port}"):
        backend._check_address(trainer_plan(spec_for(None), RayOptions(address=f"127.0.0.1:{port}"), ENV))
    assert time.monotonic() - t0 < 10


def test_dead_driver_is_failed_and_cancel_of_a_finished_job_is_a_no_op(tmp_path):
    backend = RayTrainBackend(tmp_path, environ=ENV)
    run_dir = backend.job_dir("0123abcd")
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "restarts": 0}))
    handle = JobHandle("0123abcd", "ray", "999999999", (("driver_start", "1"),))
    lost = backend.status(handle)
    assert lost.state is JobState.FAILED and lost.reason.startswith("monitor lost: the Ray driver (pid 999999999)")
    (run_dir / "status.json").write_text(json.dumps({"state": "succeeded", "exit_code": 0}))
    backend.cancel(handle)
    assert not (run_dir / "cancel").exists() and backend.status(handle).state is JobState.SUCCEEDED
