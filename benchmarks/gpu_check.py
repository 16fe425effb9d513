"""``python -m benchmarks --gpu``: the first GPU run of issue 19, checked on one GPU node in minutes.

Steps (each reports its own row; one failing does not stop the others):

1. ``nccl job``: ``launcher submit --gpus R`` (R = 2 when the node has 2 GPUs, else 1) of the
   shapes job, followed to the end: NCCL process group, one GPU per rank, leases.
2. ``amp job``: the same job on 1 GPU with ``--amp``: finishes with finite losses.
3. ``cpu checkpoint -> --amp resume``: 2 iterations with ``--device cpu``, then ``--resume auto
   --amp`` on the GPU (the empty scaler state of a CPU checkpoint).
4. ``leases``: two ``--gpus 1`` jobs submitted at once: distinct GPUs (or, on a 1-GPU node, one
   after the other), both succeed, no lease left.
5. ``R50-FPN``: Faster R-CNN and Mask R-CNN R50-FPN training (batch 2, 800x1333 generated
   images), detcore against a plain torchvision loop in the same run, fp32 and AMP: s/iter,
   images/s, peak GPU memory, inference images/s, beside the published figures
   (``benchmarks/gpu_train.py``). About 2-4 minutes of the run on one modern GPU.

``--cpu-smoke`` runs the same steps on the CPU with tiny settings (the leases on 2 fake GPUs,
whose jobs train on the CPU), so CI knows the script at least starts; ``--dry-run``
prints the steps and runs nothing. A check that fails is a row with ``met: false`` and makes the
command exit 1. No timing is a goal here: the figures are for the closing note of the issue.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from benchmarks import jobs
from benchmarks.harness import REPO_ROOT, Context, NotAvailable, Result, Row, log

TITLE = "GPU check: NCCL job, AMP, CPU checkpoint resumed with AMP, concurrent leases, R50-FPN figures"
SHAPES = REPO_ROOT / "configs" / "shapes" / "faster_rcnn_tiny_shapes.yaml"
R50 = REPO_ROOT / "configs" / "faster_rcnn" / "faster_rcnn_r50_fpn_1x_coco.yaml"
STEPS = ("nccl job", "amp job", "cpu checkpoint -> --amp resume", "leases", "R50-FPN")


def describe(gpus: int, smoke: bool) -> list[str]:
    """What :func:`run` would do on a node with ``gpus`` GPUs (``--dry-run``)."""
    ranks = 2 if gpus >= 2 else 1
    where = "CPU smoke (tiny settings; GPU leases on 2 fake GPUs, training on the CPU)" if smoke else \
        f"{gpus} GPU(s)"
    return [f"GPU check on {where}:",
            f"  1. {STEPS[0]}: launcher submit {SHAPES.name} " + ("--nproc 2 (gloo)" if smoke else f"--gpus {ranks}"),
            f"  2. {STEPS[1]}: detcore train --device {'cpu' if smoke else 'cuda'} --amp",
            f"  3. {STEPS[2]}: detcore train --device cpu (2 iters), then --resume auto --amp "
            f"--device {'cpu' if smoke else 'cuda'}",
            f"  4. {STEPS[3]}: two launcher submit --gpus 1 --detach at once"
            + (" (LAUNCHER_FAKE_GPUS=2)" if smoke else ""),
            f"  5. {STEPS[4]}: Faster and Mask R-CNN, detcore vs plain torchvision loop, fp32 and AMP, batch 2, "
            f"{'96x160' if smoke else '800x1333'}; s/iter, img/s, peak memory, inference"]


def _fail(name: str, exc: BaseException) -> Row:
    return Row(name, None, note=f"FAILED: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc!r}",
               met=False)


def _shapes_overrides(iters: int) -> list[str]:
    return [f"runner.max_iters={iters}", "log_config.interval=1", "data.samples_per_gpu=2", "data.workers_per_gpu=1",
            "data.train.num_train=32"]


def _launcher(args: list[str], env: dict, timeout: float, log_path: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "launcher", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    log_path.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc


def _rank0_log(work_dir: Path) -> str:
    path = work_dir / "logs" / "rank0.log"
    return path.read_text(errors="replace") if path.exists() else ""


def step_nccl_job(ctx: Context, gpus: int, smoke: bool, env: dict) -> Row:
    work = ctx.workdir("nccl_job")
    ranks = 2 if (smoke or gpus >= 2) else 1
    res = ["--nproc", "2"] if smoke else ["--gpus", str(ranks)]
    t0, submitted = time.perf_counter(), time.time()
    proc = _launcher(["submit", str(SHAPES), *res, "--work-dir", str(work / "w"), "--cfg-options",
                      *_shapes_overrides(4 if smoke else 40)], env, 600, work / "launcher.log")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"launcher submit exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    text = _rank0_log(work / "w")
    backend = "gloo" if smoke else ("nccl" if ranks > 1 else None)
    if backend and f"backend={backend}" not in text:
        raise RuntimeError(f"rank 0's log does not say backend={backend}")
    want_dev = "cpu" if smoke else "cuda:0"
    if ranks > 1 and f"device={want_dev}" not in text:
        raise RuntimeError(f"rank 0's log does not say device={want_dev}")
    logged = jobs.log_times(work / "w")
    startup = f"; submit to iteration {min(logged)} logged: {min(logged.values()) - submitted:.1f} s (start-up)" \
        if logged else ""
    return Row(f"{STEPS[0]} ({ranks} rank{'s' if ranks > 1 else ''}, {backend or 'single GPU'})", wall, "s",
               note=f"submit to finish, start-up included{startup}", met=True)


def _detcore(args: list[str], env: dict, log_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    log_path.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"detcore {args[0]} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return proc


def step_amp_job(ctx: Context, gpus: int, smoke: bool, env: dict) -> Row:
    work = ctx.workdir("amp_job")
    device = "cpu" if smoke else "cuda"
    _detcore(["train", str(SHAPES), "--work-dir", str(work / "w"), "--device", device, "--amp", "--no-validate",
              "--cfg-options", *_shapes_overrides(2 if smoke else 30)], env, work / "detcore.log")
    records = jobs.read_metrics(work / "w")
    if not records or not all(math.isfinite(r["loss"]) for r in records):
        raise RuntimeError("no finite training losses in metrics.jsonl")
    log_text = (work / "w" / "train.log").read_text(errors="replace")
    if smoke and "--amp needs a CUDA device" not in log_text:
        raise RuntimeError("a CPU run with --amp did not say that AMP is ignored")
    tail = records[len(records) // 2:]
    img_s = sum(r["throughput"] for r in tail) / len(tail)
    return Row(f"{STEPS[1]} (shapes, 1 {'CPU' if smoke else 'GPU'})", img_s, "img/s",
               note=f"final loss {records[-1]['loss']:.3f}; peak {records[-1].get('memory_mb', 0):.0f} MiB", met=True)


def step_cpu_checkpoint_amp_resume(ctx: Context, gpus: int, smoke: bool, env: dict) -> Row:
    work = ctx.workdir("amp_resume")
    w = work / "w"
    common = ["--no-validate", "--cfg-options", "checkpoint_config.interval=2", *_shapes_overrides(2)]
    _detcore(["train", str(SHAPES), "--work-dir", str(w), "--device", "cpu", *common], env, work / "cpu.log")
    resumed = ["--no-validate", "--cfg-options", "checkpoint_config.interval=2", *_shapes_overrides(4)]
    _detcore(["train", str(SHAPES), "--work-dir", str(w), "--device", "cpu" if smoke else "cuda", "--amp",
              "--resume", "auto", *resumed], env, work / "resume.log")
    iters = sorted({r["iter"] for r in jobs.read_metrics(w)})
    if iters[-2:] != [3, 4]:
        raise RuntimeError(f"the resumed run logged iterations {iters}, expected it to continue with 3 and 4")
    text = (w / "train.log").read_text(errors="replace")
    if not smoke and "no AMP loss-scaler state" not in text:
        raise RuntimeError("the resume did not report the CPU checkpoint's missing scaler state")
    return Row(STEPS[2], 4, "iters", note="resumed at iteration 3 and finished", met=True)


def step_leases(ctx: Context, gpus: int, smoke: bool, env: dict) -> Row:
    work = ctx.workdir("leases")
    home = Path(env["LAUNCHER_HOME"])
    ids = []
    for i in range(2):
        proc = _launcher(["submit", str(SHAPES), "--gpus", "1", "--detach", "--json", "--max-restarts", "0",
                          "--work-dir", str(work / f"w{i}"), "--cfg-options", *_shapes_overrides(2 if smoke else 20)],
                         env, 120, work / f"submit{i}.log")
        if proc.returncode != 0:
            raise RuntimeError(f"submit {i} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        ids.append(json.loads(proc.stdout)["id"])
    statuses = {}
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline and len(statuses) < 2:
        for exp in ids:
            st = jobs_status(home, exp)
            if st and st.get("state") in ("succeeded", "failed", "cancelled"):
                statuses[exp] = st
        time.sleep(1.0)
    if len(statuses) < 2:
        raise RuntimeError("the two jobs did not end within 8 minutes")
    devices = [tuple(statuses[e].get("devices") or ()) for e in ids]
    if not all(statuses[e]["state"] == "succeeded" for e in ids):
        raise RuntimeError(f"not both succeeded: { {e: statuses[e].get('reason') for e in ids} }")
    if (smoke or gpus >= 2) and devices[0] == devices[1]:
        raise RuntimeError(f"both jobs got GPU(s) {devices[0]}")
    if not smoke and gpus == 1 and statuses[ids[1]]["started"] < statuses[ids[0]]["ended"] and \
            statuses[ids[0]]["started"] < statuses[ids[1]]["ended"]:
        raise RuntimeError("on one GPU the two jobs overlapped")
    held = json.loads((home / "leases.json").read_text()) if (home / "leases.json").exists() else {}
    if any(held.values()):
        raise RuntimeError(f"leases left after both jobs ended: {held}")
    return Row(STEPS[3], 2, "jobs", note=f"devices {devices[0]} and {devices[1]}; no lease left", met=True)


def jobs_status(home: Path, exp_id: str) -> dict | None:
    path = home / "jobs" / exp_id / "status.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def step_r50(ctx: Context, gpus: int, smoke: bool, env: dict) -> list[Row]:
    """R50-FPN Faster and Mask R-CNN, detcore vs a plain torchvision loop, fp32 and AMP (``gpu_train``)."""
    from benchmarks import gpu_train

    device, size = ("cpu", (96, 160)) if smoke else ("cuda", (800, 1333))
    warmup, iters = (0, 1) if smoke else (5, 20)
    rows, figures = gpu_train.run_all(device, size, warmup, iters, budget_s=600 if smoke else 300)
    ctx.shared["gpu_train_figures"] = figures
    print(gpu_train.table(figures), file=sys.stderr, flush=True)
    return rows


CHECKS: tuple[Callable[..., Row | list[Row]], ...] = (step_nccl_job, step_amp_job, step_cpu_checkpoint_amp_resume,
                                                      step_leases, step_r50)


def run(ctx: Context) -> Result:
    import torch

    smoke = bool(ctx.shared.get("cpu_smoke"))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not smoke and gpus == 0:
        raise NotAvailable("no CUDA device here; run it on a GPU node, or --cpu-smoke to check that it starts")
    home = ctx.workdir("launcher_home")
    extra = {"LAUNCHER_HOME": str(home)}
    if smoke:
        extra.update({"LAUNCHER_FAKE_GPUS": "2", "CUDA_VISIBLE_DEVICES": ""})
    env = jobs.bench_env(threads=None if not smoke else 1, extra=extra)
    only = ctx.shared.get("gpu_steps")
    rows: list[Row] = []
    for name, check in zip(STEPS, CHECKS):
        if only and name not in only:
            continue
        log(f"gpu check: {name}")
        try:
            got = check(ctx, gpus, smoke, env)
            rows += got if isinstance(got, list) else [got]
        except Exception as exc:  # one failed check must not hide the others
            rows.append(_fail(name, exc))
    return Result(rows, {"gpus": gpus, "cpu_smoke": smoke, "cuda_visible_devices": os.environ.get(
        "CUDA_VISIBLE_DEVICES")}, {"r50_fpn": ctx.shared.get("gpu_train_figures", [])})
