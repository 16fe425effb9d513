"""Concurrent jobs on one node: N one-worker launcher jobs submitted at once, against the machine's ceiling.

The launcher side submits N jobs together with the launcher's defaults (``launcher submit``
with no ``--nproc``, no thread setting: the local backend leases each job its cores, pins it
and sets its threads). The ceiling is N independent plain 1-thread ``detcore train`` jobs
(``torchrun --standalone``, ``OMP_NUM_THREADS=1``) started at once, as the scaling
benchmark measures it. Both run the shapes config with the same overrides (no loader
processes, no checkpoints, no evaluation), so the only difference is what the launcher does.

Two totals, both over all N jobs and counted the same way on both sides:

* end to end (the goal): every image of every iteration of every job, divided by the wall time
  from the moment the N commands start until the last of them exits. Start-up, queueing and
  shutdown are in it on both sides; it is what a user who submits N jobs at once gets. With 4
  jobs on 2 cores two launcher jobs queue and start when the first two end; the plain jobs all
  run at once instead, 4 threads time-sharing 2 cores.
* steady: each job's steady images (iterations ``warmup+1 .. iters``) added up and divided by
  the wall time from the first job's iteration ``warmup`` to the last job's iteration
  ``iters``. For N = 2 both jobs run side by side the whole time, so this is the rate while
  they run. For N = 4 it is not shown: the window of the queued jobs starts after their
  start-up and warm-up, which the plain jobs did before their windows, so it would charge the
  launcher for the start-up twice.

Fairness: each job's own steady images/s; the row shows max / min over the jobs (goal <= 1.25,
each within 25% of the others).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import Context, Goal, Result, compared, log, measured

TITLE = "concurrent jobs: N one-worker launcher jobs at once vs N plain 1-thread jobs (the ceiling)"
TOTAL_GOAL = Goal("ratio", ">=", 0.9)
FAIR_GOAL = Goal("value", "<=", 1.25)


def _overrides(iters: int, interval: int) -> list[str]:
    """The same on both sides: no loader processes, no checkpoint before the end; both sides run
    with --no-validate."""
    return [f"runner.max_iters={iters}", f"log_config.interval={interval}", jobs.NO_CHECKPOINTS,
            "data.workers_per_gpu=0"]


@dataclass
class Totals:
    """What one side did with N jobs: end-to-end and steady total images/s, each job's own rate."""

    end_to_end: float
    steady: float
    own: list[float]


def _totals(works: list[Path], warmup: int, iters: int, batch: int, wall: float) -> Totals:
    windows = []
    for w in works:
        times = jobs.log_times(w)
        if warmup not in times or iters not in times:
            raise jobs.JobFailed(f"{w}/train.log has no log line for iteration {warmup} or {iters}")
        windows.append((times[warmup], times[iters]))
    steady_images = batch * (iters - warmup)
    own = [steady_images / (end - start) for start, end in windows]
    span = max(end for _, end in windows) - min(start for start, _ in windows)
    return Totals(batch * iters * len(works) / wall, steady_images * len(works) / span, own)


def _run_all(commands: list[tuple[list[str], Path, dict]], timeout: float, what: str) -> float:
    """Start every command at once; the wall seconds until the last one has exited (zero exits only)."""
    started = [jobs.start(cmd, log_path, env) for cmd, log_path, env in commands]
    try:
        # the last exit is the largest of these: a job waited for after it ended returns at once
        return max(jobs.wait(job, timeout, what) + job.started for job in started) - started[0].started
    finally:
        for job in started:
            jobs.stop(job)


def plain_jobs(ctx: Context, n: int, batch: int, warmup: int, iters: int, interval: int,
               timeout: float) -> Totals:
    works = [ctx.workdir(f"concurrent_plain{n}") for _ in range(n)]
    cmds = [(jobs.torchrun_command(1, jobs.detcore_train_args(jobs.SHAPES_CONFIG, w / "run",
                                                              _overrides(iters, interval))),
             w / "torchrun.log", jobs.bench_env(threads=1)) for w in works]
    wall = _run_all(cmds, timeout, "plain 1-thread job")
    return _totals([w / "run" for w in works], warmup, iters, batch, wall)


def launcher_jobs(ctx: Context, n: int, batch: int, warmup: int, iters: int, interval: int,
                  timeout: float, flags: tuple[str, ...] = ()) -> Totals:
    home = ctx.workdir(f"concurrent_home{n}")
    works = [ctx.workdir(f"concurrent_launcher{n}") for _ in range(n)]
    env = jobs.bench_env(extra={"LAUNCHER_HOME": str(home)})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the launcher's defaults decide
        env.pop(var, None)
    cmds = [([sys.executable, "-m", "launcher", "submit", str(jobs.SHAPES_CONFIG), "--work-dir", str(w / "run"),
              "--name", f"concurrent{i}", "--max-restarts", "0", "--no-validate", *flags,
              "--cfg-options", *_overrides(iters, interval)],
             w / "submit.log", env) for i, w in enumerate(works)]
    wall = _run_all(cmds, timeout, "launcher job")
    return _totals([w / "run" for w in works], warmup, iters, batch, wall)


def run(ctx: Context) -> Result:
    from detcore.config import load_config

    batch = int(load_config(jobs.SHAPES_CONFIG)["data"]["samples_per_gpu"])
    # long enough that start-up is a fair share of a job, not most of it (about 30 s on one core
    # of this machine, quiet; real jobs run for hours)
    warmup, iters, interval = ctx.pick((5, 20, 5), (10, 150, 10))
    repeats = ctx.pick(1, 2)
    timeout = ctx.pick(600, 1800)
    rows = []
    details: dict = {}
    plain_steady2: list[float] = []
    for n in (2, 4):
        sides: dict[str, list[Totals]] = {"plain": [], "launcher": []}
        for r in range(repeats):
            for side in (("plain", "launcher") if r % 2 == 0 else ("launcher", "plain")):
                log(f"concurrent_jobs: {n} {side} jobs, run {r + 1}/{repeats}")
                fn = plain_jobs if side == "plain" else launcher_jobs
                totals = fn(ctx, n, batch, warmup, iters, interval, timeout)
                sides[side].append(totals)
                details.setdefault(f"{n}_{side}", []).append(asdict(totals))
        launched, plain = sides["launcher"], sides["plain"]
        queue_note = " (2 of them queue for cores)" if n > 2 else ""
        rows += [
            compared(f"{n} launcher jobs submitted at once (defaults): total, end to end",
                     [t.end_to_end for t in launched], [t.end_to_end for t in plain], "img/s", TOTAL_GOAL,
                     note=f"all images / wall time from start to the last exit{queue_note}; ratio vs the ceiling"),
            measured(f"{n} plain 1-thread jobs at once (the ceiling), end to end", [t.end_to_end for t in plain],
                     "img/s", note=f"fairness {max(max(t.own) / min(t.own) for t in plain):.2f}x"),
        ]
        if n == 2:
            plain_steady2 = [t.steady for t in plain]
            rows += [
                compared("2 launcher jobs at once: total while both run (steady)", [t.steady for t in launched],
                         plain_steady2, "img/s", TOTAL_GOAL, note="ratio vs the plain jobs' steady total"),
                measured("2 plain 1-thread jobs at once: total while both run (steady)", plain_steady2, "img/s"),
            ]
        rows.append(measured(f"{n} launcher jobs at once: fairness (max/min of each job's steady img/s)",
                             [max(t.own) / min(t.own) for t in launched], "x", goal=FAIR_GOAL))
    # Before core leases: each job told to use every core, all sharing them. Once, and shorter: it
    # is the slow case (about 10x slower than with leases here), shown for comparison.
    log("concurrent_jobs: 2 launcher jobs with --oversubscribe")
    over_iters = ctx.pick(iters, 40)
    over = launcher_jobs(ctx, 2, batch, warmup, over_iters, interval, timeout, ("--oversubscribe",))
    details["2_oversubscribe"] = asdict(over)
    rows.append(compared("2 launcher jobs at once with --oversubscribe (no core leases, as before): steady",
                         [over.steady], plain_steady2, "img/s", pairwise=False,
                         note=f"ratio vs the plain steady total; {over_iters} iterations; "
                              f"threads = cores per job, all jobs on all cores"))
    settings = {"config": str(jobs.SHAPES_CONFIG), "per_worker_batch": batch, "loader_workers": 0,
                "warmup": warmup, "iters": iters, "log_interval": interval, "repeats": repeats, "jobs": [2, 4],
                "validate": False}
    return Result(rows, settings, details)
