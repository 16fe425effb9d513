"""What a local submit would run, as a value: exact argv, environment, scaling; and the worker shim's rules."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from detcore.contract import WorkerArgs
from launcher.runtime.command import worker_args
from launcher.backends.local import LocalBackend, LocalOptions
from launcher.errors import LauncherError
from launcher.jobs import SubmitRequest, build_spec, request_from_spec
from launcher.spec import Resources
from detcore import contract

ROOT = Path(__file__).resolve().parents[3]
SHAPES = "configs/shapes/faster_rcnn_tiny_shapes.yaml"


def spec_for(**kw):
    req = SubmitRequest(config=SHAPES, **kw)
    return build_spec(req, cwd=str(ROOT), exp_id="0123abcd")


def test_local_dryrun_renders_torchrun_shim_and_worker(tmp_path):
    spec = spec_for(resources=Resources(nproc=2), overrides=("runner.max_iters=8",), max_restarts=1,
                    backend_options=LocalOptions())
    dry = LocalBackend(tmp_path, cores=8, gpus=()).dryrun(spec)
    work = str(ROOT / "work_dirs" / "faster_rcnn_tiny_shapes-0123abcd")
    assert dry.commands == ((
        sys.executable, "-m", "launcher.backends.local.agent", "--nnodes", "1", "--nproc-per-node", "2",
        "--rdzv-backend", "detlaunch-c10d", "--rdzv-endpoint", "127.0.0.1:0", "--local-addr", "127.0.0.1",
        "--rdzv-id", "0123abcd", "--max-restarts", "1",
        "--log-dir", f"{work}/runs/{spec.run_id}/torchelastic",
        "-m", "launcher.runtime.shim", "--log-dir", f"{work}/logs", "--run-dir", f"{work}/runs/{spec.run_id}", "--",
        "detcore.tools.cli", "train", str(ROOT / SHAPES), "--work-dir", work, "--device", "cpu", "--resume", "auto",
        "--cfg-options", "runner.max_iters=8"),)  # never pre-scaled: the worker applies auto_scale_lr itself
    env = dict(dry.env)
    assert env["OMP_NUM_THREADS"] == "1" and env["DETLAUNCH_EXPERIMENT_ID"] == "0123abcd"  # 1 leased core each
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT)
    assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "lo"  # collectives on loopback too
    text = dry.render()
    assert "scaled lr: 0.04" in text and "127.0.0.1:0" in text
    assert dry.to_json()["lr"] == 0.04


def test_dryrun_scales_by_the_batch_the_train_loader_uses(tmp_path):
    """A per-split training batch, typed as MMDetection users type it (no '+'), is the batch the
    dry run scales by, and the same decision the worker makes."""
    from detcore.config import load_config
    from detcore.engine.scaling import scale_config

    overrides = ("data.train.samples_per_gpu=2",)  # the shapes base says data.samples_per_gpu: 4
    dry = LocalBackend(tmp_path, cores=8, gpus=()).dryrun(spec_for(resources=Resources(nproc=2), overrides=overrides))
    text = dry.render()
    assert "world size 2 x 2 per worker = total batch 4" in text and "scaled lr: 0.02\n" in text
    worker = scale_config(load_config(ROOT / SHAPES, overrides), 2)[1]
    assert worker.describe() in text and dry.to_json()["lr"] == worker.lr


def test_threads_never_below_one_and_gpu_note(tmp_path):
    dry = LocalBackend(tmp_path, cores=2, gpus=("0", "1", "2", "3")).dryrun(spec_for(resources=Resources(nproc=2, gpus=2)))
    assert dict(dry.env)["OMP_NUM_THREADS"] == "1"
    assert any("CUDA_VISIBLE_DEVICES" in n for n in dry.notes)
    dry = LocalBackend(tmp_path, cores=2, gpus=()).dryrun(spec_for(resources=Resources(nproc=8),
                                                                   backend_options=LocalOptions(oversubscribe=True)))
    assert dict(dry.env)["OMP_NUM_THREADS"] == "1"


def test_test_mode_and_resume_policies(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"x")
    spec = spec_for(checkpoint=str(ckpt), eval_metrics=("bbox",), resources=Resources(nproc=2))
    assert spec.scaling is None
    args = worker_args(spec)
    assert args[:3] == ("test", str(ROOT / SHAPES), str(ckpt))
    assert args[args.index("--out") + 1] == f"{spec.work_dir}/results.json" and args[-2:] == ("--eval", "bbox")
    assert "--resume" not in worker_args(spec_for(resume="never"))
    assert worker_args(spec_for(resume=str(ckpt), worker=WorkerArgs(seed=7)))[4:10] == (
        "--device", "cpu", "--resume", str(ckpt), "--seed", "7")


@pytest.mark.parametrize("kw,match", [
    (dict(resources=Resources(nodes=2)), "one node"),
    (dict(resources=Resources(nproc=2, gpus=2)), "asked for 2 GPUs but this node has 0"),
    (dict(resources=Resources(nproc=3)), "needs 3 CPU cores .* may use 2 .* --oversubscribe"),
    (dict(resources=Resources(nproc=1, cpus_per_task=4)), r"needs 4 CPU cores \(--cpus-per-task 4 x 1 workers\)"),
])
def test_local_refuses(tmp_path, kw, match):
    with pytest.raises(LauncherError, match=match):
        LocalBackend(tmp_path, cores=2, gpus=()).dryrun(spec_for(**kw))


@pytest.mark.parametrize("kw,match", [
    (dict(config="configs/nope.yaml"), "not found"),
    (dict(overrides=("optimizer.lrr=1",)), "closest existing key is 'optimizer.lr'"),
    (dict(resume="missing.pth"), "auto, never or an existing checkpoint"),
    (dict(checkpoint="missing.pth"), "checkpoint 'missing.pth' not found"),
    (dict(name="a;b"), "may only hold"),
])
def test_build_spec_user_errors(kw, match):
    from detcore.errors import DetcoreError

    kw = {"config": SHAPES, **kw}
    with pytest.raises(DetcoreError, match=match):
        build_spec(SubmitRequest(**kw), cwd=str(ROOT), exp_id="0123abcd")


def test_a_restart_resumes_from_the_newest_checkpoint_and_a_first_attempt_as_asked():
    """The shim (and Ray's train loop) set DETCORE_RESTART on a restart; detcore train then resumes auto."""
    assert contract.restart_env(0) == {}
    assert contract.resume_on_restart("/x.pth", contract.restart_env(0)) == "/x.pth"
    assert contract.resume_on_restart(None, {}) is None
    for asked in ("/x.pth", None, "auto"):
        assert contract.resume_on_restart(asked, contract.restart_env(2)) == "auto"
    assert contract.resume_on_restart("/x.pth", {contract.RESTART_ENV: "garbage"}) == "/x.pth"


def test_load_from_and_no_validate_reach_the_worker_like_detcore_train(tmp_path):
    (tmp_path / "iter_4.pth").write_bytes(b"x")
    (tmp_path / "latest.pth").symlink_to("iter_4.pth")
    latest = str(tmp_path / "latest.pth")
    spec = spec_for(worker=WorkerArgs(load_from=latest, validate=False), overrides=("runner.max_iters=8",))
    args = worker_args(spec)
    assert args[args.index("--load-from") + 1] == latest and "--no-validate" in args
    assert args.index("--no-validate") < args.index("--cfg-options")
    assert "--no-validate" not in worker_args(spec_for()) and "--load-from" not in worker_args(spec_for())
    again = request_from_spec(spec)  # a resume keeps them
    assert (again.worker.load_from, again.worker.validate) == (latest, False)
