"""4. Scaling on CPU: 2 gloo workers with 1 thread each against 1 worker with 1 thread (goal: >= 1.7x).

Both run ``detcore train`` on the shapes config under ``torchrun --standalone`` (nproc 1 and 2)
with ``OMP_NUM_THREADS=MKL_NUM_THREADS=1``, the same per-worker batch (``samples_per_gpu``),
the same number of iterations, and ``workers_per_gpu=0`` so each worker really is one
busy thread (its data is loaded in the training process; loader processes would compete
for the same cores). The figure is steady-state images/s of the whole job (all ranks'
images) from rank 0's log-line times between iterations ``warmup`` and ``iters``.
The limit is 2 (and less on a machine with fewer free cores than workers).

A third figure is the machine's own ceiling: two independent 1-worker jobs started at once
(no communication at all), their images/s added. What separates the 2-worker job from it is
the cost of data parallelism itself (gloo all-reduce, waiting for the slower rank); what
separates it from 2x is the machine (shared caches and memory bandwidth, the OS).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from benchmarks import jobs
from benchmarks.harness import Context, Goal, Result, compared, log, measured

TITLE = "scaling: 2 gloo workers x 1 thread vs 1 worker x 1 thread"
GOAL = Goal("ratio", ">=", 1.7)


def _command(work: Path, nproc: int, batch: int, iters: int, interval: int, extra: Sequence[str] = ()) -> list[str]:
    overrides = [f"runner.max_iters={iters}", f"log_config.interval={interval}", jobs.NO_CHECKPOINTS,
                 f"data.samples_per_gpu={batch}", "data.workers_per_gpu=0",
                 "auto_scale_lr.enable=false", *extra]  # the worker would scale the schedule for the world size
    return jobs.torchrun_command(nproc, jobs.detcore_train_args(jobs.SHAPES_CONFIG, work / "run", overrides))


def one_run(ctx: Context, nproc: int, batch: int, warmup: int, iters: int, interval: int, timeout: float,
            extra: Sequence[str] = ()) -> float:
    """Images/s of one ``nproc``-worker job; ``extra``: more ``--cfg-options`` (e.g. ``dist_params.*``)."""
    work = ctx.workdir(f"scaling_{nproc}")
    jobs.run(_command(work, nproc, batch, iters, interval, extra), work / "torchrun.log", jobs.bench_env(threads=1), timeout,
             f"torchrun --nproc-per-node {nproc}")
    return jobs.detcore_throughput(work / "run", warmup, iters, batch * nproc).wall


def independent_pair(ctx: Context, batch: int, warmup: int, iters: int, interval: int, timeout: float) -> float:
    """Images/s of two 1-worker jobs running at the same time, added."""
    works = [ctx.workdir("scaling_independent") for _ in range(2)]
    started = [jobs.start(_command(w, 1, batch, iters, interval), w / "torchrun.log", jobs.bench_env(threads=1))
               for w in works]
    try:
        for job in started:
            jobs.wait(job, timeout, "independent 1-worker job")
    finally:
        for job in started:
            jobs.stop(job)
    return sum(jobs.detcore_throughput(w / "run", warmup, iters, batch).wall for w in works)


def run(ctx: Context) -> Result:
    from detcore.config import load_config

    batch = int(load_config(jobs.SHAPES_CONFIG)["data"]["samples_per_gpu"])
    warmup, iters, interval = ctx.pick((5, 20, 5), (10, 60, 10))
    repeats = ctx.shared.get("pairs") or ctx.pick(1, 5)
    timeout = ctx.pick(300, 600)
    one, two, pair = [], [], []
    for r in range(repeats):
        for side in (("1", "2", "pair") if r % 2 == 0 else ("pair", "2", "1")):
            log(f"scaling: {side} worker(s), run {r + 1}/{repeats}")
            if side == "pair":
                pair.append(independent_pair(ctx, batch, warmup, iters, interval, timeout))
            else:
                nproc = int(side)
                (one if nproc == 1 else two).append(one_run(ctx, nproc, batch, warmup, iters, interval, timeout))
    rows = [
        compared("2 workers x 1 thread (gloo)", two, one, "img/s", GOAL, note="ratio vs 1 worker below; limit 2"),
        measured("1 worker x 1 thread", one, "img/s"),
        compared("2 independent 1-worker jobs at once (the machine's ceiling)", pair, one, "img/s",
                 note="no communication; ratio vs 1 worker: what 2 cores give here"),
    ]
    settings = {"config": str(jobs.SHAPES_CONFIG), "per_worker_batch": batch, "threads_per_worker": 1,
                "loader_workers": 0, "warmup": warmup, "iters": iters, "log_interval": interval, "repeats": repeats}
    return Result(rows, settings)
