"""8. Memory: peak resident memory (RSS) per worker of the shapes job, and of the launcher itself.

The shapes job (``iters`` iterations, 2 CPU workers, validation at the end as configured,
``auto_scale_lr`` off so both sides run the same iterations at the same LR) runs twice: under ``launcher submit --backend local --nproc 2`` (following the job, temporary
``LAUNCHER_HOME``) and under ``torchrun --standalone --nproc-per-node 2 -m detcore.tools.cli
train``. A thread polls (psutil, every ``interval`` s) every process under the command it
started and keeps each one's peak RSS, naming it by its command line and parent:

* ``worker``: a training rank (``detcore.tools.cli``);
* ``worker shim``: the launcher's small parent of each rank (``launcher.runtime.shim``, no torch);
* ``loader worker``: a DataLoader process forked by a rank;
* ``torchrun agent``: PyTorch's elastic agent (both sides run one);
* ``launcher supervisor``, ``launcher cli`` and the shims: what the launcher adds.

RSS counts shared pages (torch's libraries) in every process, so figures do not add up to
the machine's use; peaks shorter than the poll interval are missed. As a cross-check, rank
0's own ``ru_maxrss`` (``memory_mb`` in ``metrics.jsonl``) is reported too. No goal: figures.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import Context, Result, Row, log, measured, not_available

TITLE = "memory: peak RSS per worker of the shapes job, and of the launcher while it runs"
ROLE_ORDER = ("worker", "loader worker", "torchrun agent", "worker shim", "launcher supervisor", "launcher cli")


def classify(root_pid: int) -> dict[int, str]:
    """``{pid: role}`` for ``root_pid`` and everything under it (see the module docstring)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return {}
    roles: dict[int, str] = {}
    for proc in procs:  # parents come before their children in this list
        try:
            ppid = proc.ppid()
        except psutil.Error:
            continue
        role = jobs.role_of(proc)
        if role is None:
            continue
        if role == "worker" and roles.get(ppid) in ("worker", "loader worker"):
            role = "loader worker"
        roles[proc.pid] = role
    return roles


def sample(ctx: Context, side: str, cmd: list[str], work: Path, env: dict, interval: float, timeout: float) -> dict:
    job = jobs.start(cmd, work / f"{side}.log", env)
    sampler = jobs.RssSampler(lambda: classify(job.proc.pid), interval_s=interval)
    try:
        with sampler:
            jobs.wait(job, timeout, f"{side} shapes job")
    finally:
        jobs.stop(job)
    by_role: dict[str, list[float]] = {}
    for role, peak in sampler.peaks.values():
        by_role.setdefault(role, []).append(peak / 2 ** 20)
    ru = [r.get("memory_mb") for r in jobs.read_metrics(work / "run") if r.get("memory_mb")]
    return {"peaks_mb": by_role, "rank0_ru_maxrss_mb": max(ru) if ru else None}


def run(ctx: Context) -> Result:
    from benchmarks.startup import backend_missing

    iters = ctx.pick(10, 60)
    interval = 0.05
    timeout = ctx.pick(300.0, 900.0)
    # auto_scale_lr off: the launcher would otherwise halve the iterations of its 2-worker job
    overrides = [f"runner.max_iters={iters}", f"log_config.interval={max(1, iters // 5)}", jobs.NO_CHECKPOINTS,
                 "auto_scale_lr.enable=false"]
    threads = max(1, (os.cpu_count() or 1) // 2)
    runs: dict[str, dict] = {}

    work = ctx.workdir("memory_torchrun")
    log("memory: torchrun --nproc-per-node 2")
    cmd = jobs.torchrun_command(2, jobs.detcore_train_args(jobs.SHAPES_CONFIG, work / "run", overrides, validate=True))
    runs["torchrun"] = sample(ctx, "torchrun", cmd, work, jobs.bench_env(threads), interval, timeout)

    why = backend_missing("local")
    if why is None:
        work = ctx.workdir("memory_launcher")
        log("memory: launcher submit --backend local --nproc 2")
        cmd = [sys.executable, "-m", "launcher", "submit", str(jobs.SHAPES_CONFIG), "--backend", "local", "--nproc",
               "2", "--work-dir", str(work / "run"), "--name", "bench-memory", "--cfg-options", *overrides]
        env = jobs.bench_env(extra={"LAUNCHER_HOME": str(work / "home")})
        runs["launcher"] = sample(ctx, "launcher", cmd, work, env, interval, timeout)

    rows: list[Row] = []
    for side in ("launcher", "torchrun"):
        if side not in runs:
            rows.append(not_available(f"{side}: peak RSS per process", why or "not run"))
            continue
        peaks = runs[side]["peaks_mb"]
        for role in ROLE_ORDER:
            if role in peaks:
                n = len(peaks[role])
                rows.append(measured(f"{side}: {role} peak RSS", peaks[role], "MiB",
                                     note=f"median of {n} processes, spread across them" if n > 1 else "1 process"))
        ru = runs[side]["rank0_ru_maxrss_mb"]
        if ru is not None:
            rows.append(Row(f"{side}: rank 0 ru_maxrss (metrics.jsonl)", ru, "MiB", note="the trainer's own figure"))
    if "launcher" in runs:
        ours = runs["launcher"]["peaks_mb"].get("worker")
        theirs = runs["torchrun"]["peaks_mb"].get("worker")
        if ours and theirs:
            rows[0].ratio = max(ours) / max(theirs)
            rows[0].note += "; ratio: largest worker vs torchrun's"
        own = runs["launcher"]["peaks_mb"]
        extra = sum(max(own.get(r, [0])) for r in ("launcher supervisor", "launcher cli")) + sum(own.get("worker shim", []))
        rows.append(Row("launcher's own processes (supervisor + cli + one shim per rank), peak RSS", extra, "MiB",
                        note="added on top of what torchrun runs"))
    settings = {"config": str(jobs.SHAPES_CONFIG), "iters": iters, "nproc": 2, "poll_interval_s": interval,
                "overrides": overrides, "validate": True}
    return Result(rows, settings, {"runs": runs})
