"""Issue 19 on the launcher side, through dry runs and plans: the worker's device is explicit, CPU
jobs see no GPU, AMP/determinism reach the worker, Ray fractions avoid NCCL, CPUs count loaders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detcore.contract import WorkerArgs
from launcher.backends.local import LocalBackend, LocalOptions
from launcher.backends.ray_train.plan import RayOptions
from launcher.backends.ray_train.plan import trainer_plan
from launcher.backends.slurm import SlurmBackend
from launcher.backends.slurm.script import SlurmDefaults, resolve
from launcher.errors import LauncherError
from launcher.jobs import SubmitRequest, build_spec, request_from_spec
from launcher.spec import Resources

ROOT = Path(__file__).resolve().parents[3]
SHAPES = "configs/shapes/faster_rcnn_tiny_shapes.yaml"  # data.workers_per_gpu: 1


def spec_for(**kw):
    return build_spec(SubmitRequest(config=SHAPES, **kw), cwd=str(ROOT), exp_id="0123abcd")


def _device(command: tuple[str, ...]) -> str:
    return command[command.index("--device") + 1]


# ---- 5. CPU jobs never land on a GPU; GPU jobs never fall back to the CPU ---------------------------
def test_local_cpu_job_on_a_gpu_machine_sees_no_gpu(tmp_path: Path) -> None:
    dry = LocalBackend(tmp_path, cores=8, gpus=("0", "1"), fake_gpus=False).dryrun(
        spec_for(resources=Resources(nproc=2), backend_options=LocalOptions()))
    env = dict(dry.env)
    assert _device(dry.commands[0]) == "cpu"
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # torch in the workers finds no GPU at all
    assert env["OMP_NUM_THREADS"] == "1"  # one leased core per CPU worker; loader workers are not subtracted


def test_local_gpu_job_asks_for_cuda_in_pci_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    spec = spec_for(resources=Resources(nproc=2, gpus=2), backend_options=LocalOptions())
    fake = LocalBackend(tmp_path, cores=16, gpus=("0", "1"), fake_gpus=True).dryrun(spec)
    assert _device(fake.commands[0]) == "cpu"  # LAUNCHER_FAKE_GPUS tests the leases, on the CPU
    dry = LocalBackend(tmp_path, cores=16, gpus=("0", "1", "2", "3"), fake_gpus=False).dryrun(spec)
    env = dict(dry.env)
    assert _device(dry.commands[0]) == "cuda"  # no usable CUDA then fails in the worker, with one line
    assert "CUDA_VISIBLE_DEVICES" not in env  # the supervisor sets the leased ones
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["OMP_NUM_THREADS"] == str(16 // 4 - 1)  # 3: each GPU's 4 cores less its DataLoader worker


# ---- 11/12. --amp and --deterministic through `launcher submit` ------------------------------------
def test_submit_dry_run_passes_amp_and_deterministic_and_says_cpu_ignores_amp(tmp_path: Path) -> None:
    env = {**os.environ, "LAUNCHER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT), "LAUNCHER_FAKE_GPUS": "2"}
    out = {}
    for name, res in (("gpu", ["--gpus", "2"]), ("cpu", ["--nproc", "2"])):
        proc = subprocess.run([sys.executable, "-m", "launcher", "submit", SHAPES, *res, "--amp", "--deterministic",
                               "--dry-run", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out[name] = json.loads(proc.stdout)
    gpu_cmd, cpu_cmd = out["gpu"]["commands"][0], out["cpu"]["commands"][0]
    assert _device(tuple(gpu_cmd)) == "cpu"  # fake GPUs: the workers train on the CPU, and say why
    assert any("the GPUs are fake" in n for n in out["gpu"]["notes"])
    assert "--amp" in gpu_cmd and "--deterministic" in gpu_cmd
    assert "--cfg-options" not in gpu_cmd  # no user overrides, and the scaling is the worker's to apply
    assert _device(tuple(cpu_cmd)) == "cpu" and out["cpu"]["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert any("--amp is ignored by CPU workers" in n for n in out["cpu"]["notes"])


def test_a_test_job_refuses_training_flags_instead_of_dropping_them(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"")  # the check comes before the checkpoint is read
    with pytest.raises(LauncherError) as err:
        spec_for(checkpoint=str(ckpt), worker=WorkerArgs(amp=True, seed=3))
    assert str(err.value).startswith("--seed, --amp: apply to training; a --test job does not use them")
    assert spec_for(checkpoint=str(ckpt), worker=WorkerArgs()).worker.to_argv()[:1] == ("test",)


def test_resume_keeps_amp_and_determinism() -> None:
    spec = spec_for(worker=WorkerArgs(amp=True, deterministic=True))
    req = request_from_spec(spec)
    assert req.worker.amp and req.worker.deterministic


# ---- 4. Ray with fractional GPUs ------------------------------------------------------------------------
def plan_for(resources: Resources, options: RayOptions | None = None):
    spec = spec_for(backend="ray", resources=resources, backend_options=options)
    return trainer_plan(spec, spec.backend_options, {})


def test_ray_fractional_gpus_use_gloo_and_say_so() -> None:
    half = plan_for(Resources(nproc=2), RayOptions(gpus_per_worker=0.5))
    assert half.torch_backend == "gloo" and half.use_gpu
    assert any("NCCL refuses" in n for n in half.notes)
    assert _device(half.worker.args) == "cuda"
    whole = plan_for(Resources(nproc=2, gpus=2))
    assert whole.torch_backend == "nccl" and not whole.notes and _device(whole.worker.args) == "cuda"
    cpu = plan_for(Resources(nproc=2))
    assert cpu.torch_backend == "gloo" and _device(cpu.worker.args) == "cpu"
    with pytest.raises(LauncherError, match="a detcore rank trains on one GPU"):
        plan_for(Resources(nproc=2), RayOptions(gpus_per_worker=2))


def test_ray_dry_run_shows_the_fraction_note(tmp_path: Path) -> None:
    from launcher.backends.ray_train import RayTrainBackend

    spec = spec_for(backend="ray", resources=Resources(nproc=2),
                    backend_options=RayOptions(address="127.0.0.1:6390", gpus_per_worker=0.5))
    dry = RayTrainBackend(tmp_path, environ={"PYTHONPATH": ""}).dryrun(spec)
    assert "TorchConfig(backend='gloo', timeout_s=1800)" in dict(dry.files)["ray_driver"]
    assert any("NCCL refuses" in n for n in dry.notes)


# ---- 11. Slurm CPUs per task count the DataLoader workers --------------------------------------------
def test_slurm_default_cpus_per_task_and_threads() -> None:
    gpu = spec_for(backend="slurm", resources=Resources(nproc=4, gpus=4), overrides=("data.workers_per_gpu=4",))
    request = resolve(gpu, SlurmDefaults())
    assert request.cpus_per_task == 5  # the worker + 4 loaders (Slurm's own default is 1)
    assert resolve(gpu, SlurmDefaults(cpus_per_task=8)).cpus_per_task == 8  # launcher.yaml wins
    backend = SlurmBackend(Path("/tmp/h"), SlurmDefaults(), python="/usr/bin/python3", repo_root=str(ROOT))
    env = dict(backend.dryrun(gpu).env)
    assert env["OMP_NUM_THREADS"] == "1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    cpu = spec_for(backend="slurm", resources=Resources(nproc=2), overrides=("data.workers_per_gpu=0",))
    cpu_env = dict(backend.dryrun(cpu).env)
    assert resolve(cpu, SlurmDefaults()).cpus_per_task == 1 and cpu_env["CUDA_VISIBLE_DEVICES"] == ""
