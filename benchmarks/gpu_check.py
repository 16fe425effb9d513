"""``python -m benchmarks --gpu``: the first run on a GPU node, checked in minutes.

Steps (each reports its own row; one failing does not stop the others):

1. ``nccl job``: ``launcher submit --gpus R`` (R = 2 when the node has 2 GPUs, else 1) of the
   shapes job, followed to the end: NCCL process group (2 GPUs), one GPU per rank, leases.
2. ``nccl + ddp (1 rank)``: a world-size-1 NCCL group made by detcore (device bound, so NCCL
   connects at start), an all-reduce, and a DDP-wrapped model trained a few steps, its gradient
   buckets all-reduced; the group destroyed, then a second one aborted (:mod:`benchmarks.gpu_ddp`),
   so one GPU still runs NCCL and DDP.
3. ``amp job``: the shapes job on 1 GPU with ``--amp``: finishes with finite losses.
4. ``cpu checkpoint -> --amp resume``: a short run with ``--device cpu``, then ``--resume auto
   --amp`` on the GPU (the empty scaler state of a CPU checkpoint); the schedules are read from
   the runs themselves (``config.yaml`` after LR/schedule scaling, the checkpoint's iteration).
5. ``leases``: two ``--gpus 1`` jobs submitted at once: distinct GPUs (or, on a 1-GPU node, one
   after the other), both succeed, and both supervisors release their leases.
6. ``R50-FPN``: Faster R-CNN and Mask R-CNN R50-FPN training (batch 2, 800x1333 generated
   images), detcore against a plain torchvision loop in the same run, fp32 and AMP: s/iter,
   images/s, peak GPU memory, inference images/s, beside the published figures
   (``benchmarks/gpu_train.py``). About 2-4 minutes of the run on one modern GPU.

First it checks that the packages the steps import are there (a bare GPU image has PyTorch
but not pycocotools: ``bash benchmarks/gpu_node.sh`` installs wheels brought along). The
steps' logs go to ``OUT_DIR/gpu_check_logs.tar.gz`` beside ``gpu_check.json``.

``--cpu-smoke`` runs every step on the CPU with tiny settings (gloo instead of NCCL, the leases
on 2 fake GPUs whose jobs train on the CPU, AMP skipped with a line since it needs CUDA), so CI
runs the check's logic; ``--dry-run`` prints the steps and runs nothing. A check that fails is a
row with ``met: false`` and makes the command exit 1. No timing is a goal here.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable, Sequence

from benchmarks import jobs
from benchmarks.harness import REPO_ROOT, Context, NotAvailable, Result, Row, log

TITLE = "GPU check: NCCL job, NCCL + DDP, AMP, CPU checkpoint resumed with AMP, concurrent leases, R50-FPN figures"
SHAPES = REPO_ROOT / "configs" / "shapes" / "faster_rcnn_tiny_shapes.yaml"
STEPS = ("nccl job", "nccl + ddp (1 rank)", "amp job", "cpu checkpoint -> --amp resume", "leases", "R50-FPN")
# what the steps' processes import (pyproject's dependencies less the Slurm and Ray backends'), by
# module -> pip name; a bare CUDA image lacks pycocotools (benchmarks/gpu_wheels.py brings it)
NEEDED = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow", "yaml": "pyyaml",
          "pycocotools": "pycocotools", "tensorboard": "tensorboard", "filelock": "filelock", "tqdm": "tqdm",
          "psutil": "psutil"}
CPU_AMP_SKIPPED = "CPU smoke: AMP skipped (it needs CUDA); trained in fp32, as the trainer's warning says"
NO_SCALER_STATE = "no AMP loss-scaler state"  # the trainer's words on resuming a checkpoint saved without AMP
RELEASE_WAIT_S = 60.0  # a supervisor releases its leases right after it records the ending
LOG_SUFFIXES = (".log", ".json", ".jsonl", ".yaml")


def missing_modules(needed: dict[str, str] = NEEDED) -> list[str]:
    """The pip names of the ``needed`` modules this Python cannot import (nothing is imported)."""
    return [pip for module, pip in needed.items() if importlib.util.find_spec(module) is None]


def describe(gpus: int, smoke: bool) -> list[str]:
    """What :func:`run` would do on a node with ``gpus`` GPUs (``--dry-run``), and what it imports from where."""
    ranks = 2 if gpus >= 2 else 1
    where = "CPU smoke (tiny settings; gloo; GPU leases on 2 fake GPUs, training on the CPU)" if smoke else \
        f"{gpus} GPU(s)"
    dev = "cpu" if smoke else "cuda"
    lines = [f"GPU check on {where}:",
             f"  1. {STEPS[0]}: launcher submit {SHAPES.name} " + ("--nproc 2 (gloo)" if smoke else f"--gpus {ranks}"),
             f"  2. {STEPS[1]}: python -m benchmarks.gpu_ddp --device {dev} ({'gloo' if smoke else 'nccl'}, world size "
             f"1, DDP, group destroyed then aborted)",
             f"  3. {STEPS[2]}: detcore train --device {dev} --amp" + (f" ({CPU_AMP_SKIPPED})" if smoke else ""),
             f"  4. {STEPS[3]}: detcore train --device cpu, then --resume auto --amp --device {dev}",
             f"  5. {STEPS[4]}: two launcher submit --gpus 1 --detach at once, then their leases released"
             + (" (LAUNCHER_FAKE_GPUS=2)" if smoke else ""),
             f"  6. {STEPS[5]}: Faster and Mask R-CNN, detcore vs plain torchvision loop, fp32 and AMP, batch 2, "
             + ("64x96, Faster R-CNN fp32 only" if smoke else "800x1333") + "; s/iter, img/s, peak memory, inference",
             "needs (this Python):"]
    for module, pip in NEEDED.items():
        spec = importlib.util.find_spec(module)
        lines.append(f"  {pip}: {spec.origin if spec else 'MISSING'}")
    return lines


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


def step_ddp(ctx: Context, gpus: int, smoke: bool, env: dict) -> Row:
    work = ctx.workdir("nccl_ddp")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_ddp", "--device", "cpu" if smoke else "cuda",
                           "--store", str(work / "store")], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    (work / "gpu_ddp.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines() if line.startswith("gpu_ddp: FAILED")]
        raise RuntimeError(said[-1] if said else f"python -m benchmarks.gpu_ddp exited {proc.returncode}: "
                                                 f"{proc.stderr.strip()[-300:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    second = f"aborted; NCCL {got['nccl']}" if got["backend"] == "nccl" else \
        "ended as a failed rank's (gloo: destroyed)"
    return Row(f"{STEPS[1]} ({got['backend']}, {got['device']})", got["seconds"], "s", met=True,
               note=f"{got['steps']} DDP steps, {got['buckets']} gradient bucket(s) all-reduced, same parameters as "
                    f"the plain model; group destroyed, then a second one {second}")


def step_amp_job(ctx: Context, gpus: int, smoke: bool, env: dict) -> Row:
    work = ctx.workdir("amp_job")
    device = "cpu" if smoke else "cuda"
    _detcore(["train", str(SHAPES), "--work-dir", str(work / "w"), "--device", device, "--amp", "--no-validate",
              "--cfg-options", *_shapes_overrides(2 if smoke else 30)], env, work / "detcore.log")
    records = jobs.read_metrics(work / "w")
    if not records or not all(math.isfinite(r["loss"]) for r in records):
        raise RuntimeError("no finite training losses in metrics.jsonl")
    log_text = (work / "w" / "train.log").read_text(errors="replace")
    if smoke:
        if "needs a CUDA device" not in log_text:
            raise RuntimeError("a CPU run with --amp did not say that AMP is ignored")
        log(f"gpu check: {CPU_AMP_SKIPPED}")
    tail = records[len(records) // 2:]
    img_s = sum(r["throughput"] for r in tail) / len(tail)
    note = f"final loss {records[-1]['loss']:.3f}; peak {records[-1].get('memory_mb', 0):.0f} MiB"
    return Row(f"{STEPS[2]} (shapes, 1 {'CPU' if smoke else 'GPU'})", img_s, "img/s", met=True,
               note=f"{CPU_AMP_SKIPPED}; {note}" if smoke else note)


def _detcore(args: list[str], env: dict, log_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    log_path.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"detcore {args[0]} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return proc


def trained_schedule(work_dir: Path) -> tuple[int, int]:
    """``(last iteration of the schedule, iteration of the newest checkpoint)`` of a run's work dir,
    as the run used them: ``config.yaml`` holds ``runner.max_iters`` after LR/schedule scaling
    (``auto_scale_lr.scale_schedule``), the checkpoint its loop position."""
    from detcore.checkpoint import load_checkpoint
    from detcore.config import load_config
    from detcore.engine.trainer import latest_checkpoint

    end = int(load_config(work_dir / "config.yaml")["runner"]["max_iters"])
    ckpt = latest_checkpoint(work_dir)
    if ckpt is None:
        raise RuntimeError(f"no checkpoint in {work_dir}")
    return end, int(load_checkpoint(ckpt)["loop"]["iter"])


def resume_problem(logged: Sequence[int], saved: int, end: int) -> str | None:
    """What is wrong with a resume from a checkpoint at iteration ``saved`` to a schedule ending at
    ``end``, given the iterations ``metrics.jsonl`` logged over both runs (every iteration logged),
    or None. The first run logs 1..saved, the resumed one saved+1..end, each iteration once."""
    if not 0 < saved < end:
        return f"nothing to resume: the checkpoint is at iteration {saved} and the schedule ends at {end}"
    seen = sorted(logged)
    again = sorted({i for i in seen if seen.count(i) > 1})
    if again:
        return f"iterations {again[:5]} were trained twice (the resume did not start from the checkpoint)"
    if seen != list(range(1, end + 1)):
        missing = sorted(set(range(1, end + 1)) - set(seen))
        return (f"logged iterations {seen[0] if seen else '-'}..{seen[-1] if seen else '-'} ({len(seen)}), expected "
                f"1..{saved} then {saved + 1}..{end}" + (f"; missing {missing[:5]}" if missing else ""))
    return None


def step_cpu_checkpoint_amp_resume(ctx: Context, gpus: int, smoke: bool, env: dict) -> Row:
    work = ctx.workdir("amp_resume")
    w = work / "w"
    common = ["--no-validate", "--cfg-options", "checkpoint_config.interval=2"]
    _detcore(["train", str(SHAPES), "--work-dir", str(w), "--device", "cpu", *common, *_shapes_overrides(2)], env,
             work / "cpu.log")
    first_end, saved = trained_schedule(w)
    if saved != first_end:
        raise RuntimeError(f"the CPU run's newest checkpoint is at iteration {saved}, its schedule ends at {first_end}")
    _detcore(["train", str(SHAPES), "--work-dir", str(w), "--device", "cpu" if smoke else "cuda", "--amp",
              "--resume", "auto", *common, *_shapes_overrides(4)], env, work / "resume.log")
    end, last = trained_schedule(w)
    problem = resume_problem([r["iter"] for r in jobs.read_metrics(w)], saved, end)
    if problem is None and last != end:
        problem = f"the resumed run's newest checkpoint is at iteration {last}, its schedule ends at {end}"
    if problem:
        raise RuntimeError(f"the resumed run: {problem}")
    text = (w / "train.log").read_text(errors="replace")
    if not smoke and NO_SCALER_STATE not in text:
        raise RuntimeError("the resume did not report the CPU checkpoint's missing scaler state")
    note = f"CPU run to iteration {saved}, resumed at {saved + 1} and finished at {end} (the scaled schedule)"
    return Row(STEPS[3], end - saved, "iters", met=True, note=f"{CPU_AMP_SKIPPED}; {note}" if smoke else
               f"{note}; the CPU checkpoint's empty scaler state was reported")


def leases_of(home: Path, holders: Sequence[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """This host's leases held by ``holders`` (holder -> pool -> units), as written in ``leases.json``:
    every keeper counted alive, so a lease shows until its holder releases it."""
    from launcher.resources.leases import LeaseBook

    book = LeaseBook(home, alive=lambda lease: True)
    return {h: held for h in holders if (held := book.held_by(h))}


def wait_for_release(home: Path, holders: Sequence[str], timeout_s: float = RELEASE_WAIT_S,
                     poll_s: float = 0.2) -> dict[str, dict[str, tuple[str, ...]]]:
    """Poll until ``holders`` hold no lease (their supervisors release after recording the ending);
    the leases still held after ``timeout_s`` (empty when all were released)."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = leases_of(home, holders)
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(poll_s)


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
    held = wait_for_release(home, ids)
    if held:
        raise RuntimeError(f"leases still held {RELEASE_WAIT_S:.0f} s after both jobs ended: {held}")
    return Row(STEPS[4], 2, "jobs", note=f"devices {devices[0]} and {devices[1]}; both released their leases", met=True)


def jobs_status(home: Path, exp_id: str) -> dict | None:
    path = home / "jobs" / exp_id / "status.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def step_r50(ctx: Context, gpus: int, smoke: bool, env: dict) -> list[Row]:
    """R50-FPN Faster and Mask R-CNN, detcore vs a plain torchvision loop, fp32 and AMP (``gpu_train``);
    the CPU smoke runs the Faster R-CNN fp32 pair only (the unit tests run the Mask R-CNN AMP pair)."""
    from benchmarks import gpu_train

    if smoke:
        rows, figures = gpu_train.run_all("cpu", (64, 96), 0, 1, budget_s=600,
                                          only=[gpu_train.Case("faster", side, False) for side in ("detcore", "plain")])
    else:
        rows, figures = gpu_train.run_all("cuda", (800, 1333), 5, 20, budget_s=300)
    ctx.shared["gpu_train_figures"] = figures
    print(gpu_train.table(figures), file=sys.stderr, flush=True)
    return rows


CHECKS: tuple[Callable[..., Row | list[Row]], ...] = (step_nccl_job, step_ddp, step_amp_job,
                                                      step_cpu_checkpoint_amp_resume, step_leases, step_r50)


def archive_logs(tmp: Path, dest: Path) -> Path:
    """The steps' text files under ``tmp`` (logs, status and metrics files, configs; no checkpoints,
    event files or stores) as one ``.tar.gz`` at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(tmp.rglob("*")):
            if path.is_file() and path.suffix in LOG_SUFFIXES and path.stat().st_size < 16 * 2 ** 20:
                tar.add(path, arcname=str(path.relative_to(tmp)))
    return dest


def run(ctx: Context) -> Result:
    import torch

    smoke = bool(ctx.shared.get("cpu_smoke"))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not smoke and gpus == 0:
        raise NotAvailable("no CUDA device here; run it on a GPU node, or --cpu-smoke to run its steps on the CPU")
    settings = {"gpus": gpus, "cpu_smoke": smoke, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    missing = missing_modules()
    if missing:
        return Result([Row("packages", None, met=False, note=f"FAILED: this Python lacks {', '.join(missing)}; "
                           f"pip install them, or on a machine without PyPI bring wheels made elsewhere with "
                           f"`python -m benchmarks.gpu_wheels` and run `bash benchmarks/gpu_node.sh`")], settings)
    home = ctx.workdir("launcher_home")
    extra = {"LAUNCHER_HOME": str(home)}
    if smoke:
        extra.update({"LAUNCHER_FAKE_GPUS": "2", "CUDA_VISIBLE_DEVICES": ""})
    env = jobs.bench_env(threads=None if not smoke else 1, extra=extra)
    rows: list[Row] = []
    for name, check in zip(STEPS, CHECKS):
        log(f"gpu check: {name}")
        try:
            got = check(ctx, gpus, smoke, env)
            rows += got if isinstance(got, list) else [got]
        except Exception as exc:  # one failed check must not hide the others
            rows.append(_fail(name, exc))
    logs = archive_logs(ctx.tmp, ctx.out_dir / "gpu_check_logs.tar.gz")
    log(f"gpu check: the steps' logs are in {logs}")
    return Result(rows, settings, {"r50_fpn": ctx.shared.get("gpu_train_figures", [])})
