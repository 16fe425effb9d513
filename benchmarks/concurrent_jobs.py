"""Concurrent jobs on one node: N one-worker launcher jobs submitted at once, against the machine's ceiling.

The launcher side submits N jobs together with the launcher's defaults (``launcher submit``
with no ``--nproc``, no thread setting: the local backend leases each job its cores, pins it
and sets its threads). The ceiling is N independent plain 1-thread ``detcore train`` jobs
(``torchrun --standalone``, ``OMP_NUM_THREADS=1``) started at once, as the scaling
benchmark measures it. Both run the shapes config with the same overrides (no loader
processes, no checkpoints, no evaluation), so the only difference is what the launcher does.

How the total is counted, honestly when jobs queue: each job's steady images (iterations
``warmup+1 .. iters``) are added up and divided by the wall time from the first job's
iteration ``warmup`` to the last job's iteration ``iters``. With 4 jobs on 2 cores two of
them queue and start when the first two end, so the gap while they start up is in the total
time; the plain jobs instead all run at once, 4 threads time-sharing 2 cores.

Fairness: each job's own steady images/s; the row shows max / min over the jobs (goal <= 1.25,
each within 25% of the others).
"""
from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import Context, Goal, Result, compared, log, measured

TITLE = "concurrent jobs: N one-worker launcher jobs at once vs N plain 1-thread jobs (the ceiling)"
TOTAL_GOAL = Goal("ratio", ">=", 0.9)
FAIR_GOAL = Goal("value", "<=", 1.25)


def _overrides(iters: int, interval: int) -> list[str]:
    """The same on both sides. A launcher job evaluates once at its end (it has no --no-validate):
    4 validation images keep that from holding its cores, and a queued job from them, for long."""
    return [f"runner.max_iters={iters}", f"log_config.interval={interval}", jobs.NO_CHECKPOINTS,
            "data.workers_per_gpu=0", "evaluation.interval=100000000", "data.val.num_val=4"]


def _rates(works: list[Path], warmup: int, iters: int, batch: int) -> tuple[float, list[float]]:
    """(total images/s over the span of all jobs' steady windows, each job's own images/s)."""
    windows = []
    for w in works:
        times = jobs.log_times(w)
        if warmup not in times or iters not in times:
            raise jobs.JobFailed(f"{w}/train.log has no log line for iteration {warmup} or {iters}")
        windows.append((times[warmup], times[iters]))
    images = batch * (iters - warmup)
    own = [images / (end - start) for start, end in windows]
    span = max(end for _, end in windows) - min(start for start, _ in windows)
    return images * len(works) / span, own


def _run_all(commands: list[tuple[list[str], Path, dict]], timeout: float, what: str) -> None:
    started = [jobs.start(cmd, log_path, env) for cmd, log_path, env in commands]
    try:
        for job in started:
            jobs.wait(job, timeout, what)
    finally:
        for job in started:
            jobs.stop(job)


def plain_jobs(ctx: Context, n: int, batch: int, warmup: int, iters: int, interval: int,
               timeout: float) -> tuple[float, list[float]]:
    works = [ctx.workdir(f"concurrent_plain{n}") for _ in range(n)]
    cmds = [(jobs.torchrun_command(1, jobs.detcore_train_args(jobs.SHAPES_CONFIG, w / "run",
                                                              _overrides(iters, interval))),
             w / "torchrun.log", jobs.bench_env(threads=1)) for w in works]
    _run_all(cmds, timeout, "plain 1-thread job")
    return _rates([w / "run" for w in works], warmup, iters, batch)


def launcher_jobs(ctx: Context, n: int, batch: int, warmup: int, iters: int, interval: int,
                  timeout: float, flags: tuple[str, ...] = ()) -> tuple[float, list[float]]:
    home = ctx.workdir(f"concurrent_home{n}")
    works = [ctx.workdir(f"concurrent_launcher{n}") for _ in range(n)]
    env = jobs.bench_env(extra={"LAUNCHER_HOME": str(home)})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the launcher's defaults decide
        env.pop(var, None)
    cmds = [([sys.executable, "-m", "launcher", "submit", str(jobs.SHAPES_CONFIG), "--work-dir", str(w / "run"),
              "--name", f"concurrent{i}", "--max-restarts", "0", *flags, "--cfg-options", *_overrides(iters, interval)],
             w / "submit.log", env) for i, w in enumerate(works)]
    _run_all(cmds, timeout, "launcher job")
    return _rates([w / "run" for w in works], warmup, iters, batch)


def run(ctx: Context) -> Result:
    from detcore.config import load_config

    batch = int(load_config(jobs.SHAPES_CONFIG)["data"]["samples_per_gpu"])
    warmup, iters, interval = ctx.pick((5, 20, 5), (10, 60, 10))
    repeats = ctx.pick(1, 2)
    timeout = ctx.pick(600, 1200)
    rows = []
    details: dict = {}
    # Before core leases: each job told to use every core, all sharing them. Once only: it is the
    # slow case (about 10x slower than with leases on this machine), shown for comparison.
    log("concurrent_jobs: 2 launcher jobs with --oversubscribe")
    total, own = launcher_jobs(ctx, 2, batch, warmup, iters, interval, timeout, ("--oversubscribe",))
    oversubscribed = [total]
    details["2_oversubscribe_own_img_s"] = own
    for n in (2, 4):
        plain, launched, fair, plain_fair = [], [], [], []
        for r in range(repeats):
            for side in (("plain", "launcher") if r % 2 == 0 else ("launcher", "plain")):
                log(f"concurrent_jobs: {n} {side} jobs, run {r + 1}/{repeats}")
                fn = plain_jobs if side == "plain" else launcher_jobs
                total, own = fn(ctx, n, batch, warmup, iters, interval, timeout)
                (plain if side == "plain" else launched).append(total)
                (plain_fair if side == "plain" else fair).append(max(own) / min(own))
                details.setdefault(f"{n}_{side}_own_img_s", []).append(own)
        rows += [
            compared(f"{n} launcher jobs at once (defaults): total", launched, plain, "img/s", TOTAL_GOAL,
                     note=f"ratio vs the ceiling below; total work / total wall time"
                          f"{' (2 of them queue for cores)' if n > 2 else ''}"),
            measured(f"{n} launcher jobs at once: fairness (max/min of each job's img/s)", fair, "x", goal=FAIR_GOAL),
            measured(f"{n} plain 1-thread jobs at once (the machine's ceiling)", plain, "img/s",
                     note=f"fairness {max(plain_fair):.2f}x"),
        ]
        if n == 2:
            rows.append(compared("2 launcher jobs at once with --oversubscribe (no core leases, as before)",
                                 oversubscribed, plain, "img/s", pairwise=False,
                                 note="ratio vs the ceiling; threads = cores per job, all jobs on all cores"))
    settings = {"config": str(jobs.SHAPES_CONFIG), "per_worker_batch": batch, "loader_workers": 0,
                "warmup": warmup, "iters": iters, "log_interval": interval, "repeats": repeats, "jobs": [2, 4]}
    return Result(rows, settings, details)
