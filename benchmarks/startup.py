"""3. Start-up overhead: from the command to the end of the first training iteration.

``launcher submit CONFIG --backend local --nproc 2`` (as ``python -m launcher``, following the
job as a user would, in a temporary ``LAUNCHER_HOME``) against ``torchrun --standalone
--nproc-per-node 2 -m detcore.tools.cli train CONFIG`` on the shapes config with the same
overrides (2 iterations, ``log_config.interval=1``, no intermediate checkpoints) and the same
threads per worker (cores / 2, what both set by default). The clock starts just before the
process is spawned and stops when ``metrics.jsonl`` in the work dir first holds a record for
iteration 1 (polled every 20 ms). Runs alternate launcher/torchrun; the first pair is an
unmeasured warm-up in full mode (page cache, shapes data). Goal: ratio <= 1.15.

Both run the same worker, which scales the schedule for its world size (``auto_scale_lr`` in
the config) the same way under either; the measure ends before the first iteration anyway.

Slurm and Ray, each beside its plain equivalent, when the backend exists and its local test
cluster answers (``cluster/slurm/start.sh`` then ``/tmp/detlaunch-slurm/env.sh``;
``cluster/ray/start.sh`` on 127.0.0.1:6379):

* ``launcher submit --backend slurm --nproc 2 --cpus-per-task C`` against a hand-written sbatch
  script, ``srun torchrun --standalone --nproc-per-node 2 -m detcore.tools.cli train ...``
  (:mod:`benchmarks.plain_slurm`), one node, C CPUs and C threads per rank on both sides;
* ``launcher submit --backend ray --nproc 2 --cpus-per-task C`` against a plain Ray Train
  ``TorchTrainer(ScalingConfig(num_workers=2, resources_per_worker={"CPU": C}))`` whose workers
  run detcore's trainer in-process (:mod:`benchmarks.plain_ray`).

C is the launcher's default (1 + ``data.workers_per_gpu``), passed explicitly so both sides
ask the same. Two figures each, command to the end of the first iteration and command to exit
(for the plain sbatch job: to its end in ``squeue``, polled every 0.25 s), from interleaved
launcher/plain runs (a warm-up pair first in full mode), each with the ratio and its spread;
goal <= 1.15 for both. The stage breakdown of both sides (:mod:`benchmarks.startup_stages`) is
in the JSON's details. Only with ``--start-clusters`` does the benchmark start a cluster that is
down (and stops it after its runs); it never stops a cluster it found running.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from benchmarks import jobs, plain_slurm
from benchmarks import startup_stages as stages
from benchmarks.harness import Context, Goal, NotAvailable, Result, Row, compared, log, measured, not_available

TITLE = ("start-up: launcher submit --backend local/slurm/ray vs torchrun / plain sbatch / plain TorchTrainer, "
         "command to end of first iteration and to exit")
GOAL = Goal("ratio", "<=", 1.15)
OVERRIDES = ["runner.max_iters=2", "log_config.interval=1", jobs.NO_CHECKPOINTS]
SLURM_ENV_FILE = Path(os.environ.get("DETLAUNCH_SLURM_DIR", "/tmp/detlaunch-slurm")) / "env.sh"
RAY_ADDRESS = "127.0.0.1:6379"


def launcher_cmd(backend: str, nproc: int, work_dir: Path, name: str, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "launcher", "submit", str(jobs.SHAPES_CONFIG), "--backend", backend,
            "--nproc", str(nproc), "--work-dir", str(work_dir), "--name", name, *extra, "--cfg-options", *OVERRIDES]


def time_to_first_iter(cmd: list[str], work_dir: Path, env: dict, log_path: Path, timeout: float,
                       what: str) -> tuple[float, float]:
    """Seconds from spawning ``cmd`` to iteration 1 in ``work_dir/metrics.jsonl``, and to its (clean) exit."""
    job = jobs.start(cmd, log_path, env)
    try:
        first = jobs.poll_until(jobs.has_iteration(work_dir, 1), job, timeout, what)
        total = jobs.wait(job, timeout, what)
    finally:
        jobs.stop(job)
    return first, total


def backend_missing(name: str) -> str | None:
    """Why ``launcher submit --backend name`` cannot run here, or None when it can be tried."""
    try:
        from launcher.backends import backend_module
        from launcher.errors import LauncherError
    except ImportError as exc:
        return f"the launcher package is not importable ({exc})"
    try:
        backend_module(name)
    except LauncherError as exc:
        return str(exc)
    return None


def slurm_env() -> dict[str, str]:
    """The environment ``source env.sh`` gives (it only exports variables); NotAvailable when down."""
    if not SLURM_ENV_FILE.is_file():
        raise NotAvailable(f"no local Slurm test cluster ({SLURM_ENV_FILE} missing; start it with "
                           f"cluster/slurm/start.sh)")
    out = subprocess.run(["bash", "-c", f"source {shlex.quote(str(SLURM_ENV_FILE))} && env -0"], capture_output=True,
                         timeout=30)
    env = dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)
    try:
        ok = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NotAvailable(f"sinfo failed ({exc}); is the Slurm test cluster up?") from None
    if ok.returncode != 0 or "idle" not in ok.stdout and "mix" not in ok.stdout:
        raise NotAvailable(f"the Slurm test cluster does not answer with an idle node (sinfo: "
                           f"{(ok.stdout + ok.stderr).strip()[:200]!r})")
    return env


def ray_env() -> dict[str, str]:
    host, port = RAY_ADDRESS.split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        raise NotAvailable(f"no Ray head on {RAY_ADDRESS} (start it with cluster/ray/start.sh)") from None
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_ADDRESS": RAY_ADDRESS,  # before `import ray`
            "RAY_USAGE_STATS_ENABLED": "0"}


CLUSTER_DIRS = {"slurm": jobs.REPO_ROOT / "cluster" / "slurm", "ray": jobs.REPO_ROOT / "cluster" / "ray"}
PLAIN = {"slurm": "plain sbatch + srun torchrun", "ray": "plain Ray Train TorchTrainer"}


def cluster_rows(ctx: Context, backend: str, env_fn, pairs: int, warmup: int, cpus: int,
                 timeout: float) -> tuple[list[Row], dict]:
    """The backend's rows beside its plain equivalent, and their details. With ``ctx.start_clusters`` a
    cluster that is down is started first and stopped again after its runs, so its daemons do not share
    the cores with the benchmarks that follow. A cluster that was already up is used and left alone."""
    label = f"launcher submit --backend {backend} --nproc 2"
    why = backend_missing(backend)
    if why:
        return [not_available(label, why)], {}
    try:
        base_env = env_fn()
    except NotAvailable as exc:
        if not ctx.start_clusters:
            return [not_available(label, f"{exc}; or pass --start-clusters")], {}
        script = CLUSTER_DIRS[backend] / "start.sh"
        log(f"startup: starting the {backend} test cluster ({script}); it is stopped after its runs")
        out = subprocess.run([str(script)], capture_output=True, text=True, timeout=600)
        try:
            if out.returncode != 0:
                return [not_available(label, f"{script} failed: {out.stderr.strip()[-300:]}")], {}
            try:
                base_env = env_fn()
            except NotAvailable as exc2:
                return [not_available(label, f"started the cluster, but: {exc2}")], {}
            return _cluster_pairs(ctx, backend, label, base_env, pairs, warmup, cpus, timeout)
        finally:
            stop = CLUSTER_DIRS[backend] / "stop.sh"
            log(f"startup: stopping the {backend} test cluster ({stop})")
            subprocess.run([str(stop)], capture_output=True, timeout=300)
    return _cluster_pairs(ctx, backend, label, base_env, pairs, warmup, cpus, timeout)


def _launcher_run(ctx: Context, backend: str, home: Path, base_env: dict, cpus: int,
                  timeout: float) -> tuple[float, float, dict]:
    work = ctx.workdir(f"startup_{backend}")
    env = jobs.bench_env(extra={"LAUNCHER_HOME": str(home)}, base=base_env)
    cmd = launcher_cmd(backend, 2, work / "run", f"bench-startup-{backend}", ["--cpus-per-task", str(cpus)])
    spawn = time.time()
    first, total = time_to_first_iter(cmd, work / "run", env, work / "submit.log", timeout,
                                      f"launcher submit --backend {backend}")
    marks = {"spawn": spawn, "exit": spawn + total, **stages.launcher_marks(home, work / "run")}
    return first, total, marks


def _plain_run(ctx: Context, backend: str, base_env: dict, cpus: int, timeout: float) -> tuple[float, float, dict]:
    work = ctx.workdir(f"startup_{backend}_plain")
    run_dir = work / "run"
    if backend == "slurm":
        job = plain_slurm.PlainSlurmJob(name="bench-startup-plain", cwd=jobs.REPO_ROOT, output=work / "slurm.out",
                                        module_args=plain_slurm.module_args(jobs.SHAPES_CONFIG, run_dir, OVERRIDES),
                                        nproc=2, cpus_per_rank=cpus, threads_per_rank=cpus)
        first, total, marks = plain_slurm.run_plain(job, run_dir, jobs.bench_env(base=base_env), timeout)
        return first, total, {**marks, "exit": marks["spawn"] + total, **stages.detcore_marks(run_dir)}
    stamps = work / "stamps.jsonl"
    _, module, *args = jobs.detcore_train_args(jobs.SHAPES_CONFIG, run_dir, OVERRIDES, validate=True)  # -m MODULE ...
    cmd = [sys.executable, "-m", "benchmarks.plain_ray", "--address", RAY_ADDRESS, "--workers", "2",
           "--cpus-per-worker", str(cpus), "--stamps", str(stamps), "--storage", str(run_dir / "ray"),
           "--module", module, "--", *args]
    spawn = time.time()
    first, total = time_to_first_iter(cmd, run_dir, jobs.bench_env(base=base_env), work / "driver.log", timeout,
                                      PLAIN[backend])
    return first, total, {"spawn": spawn, "exit": spawn + total, **stages.plain_ray_marks(stamps, run_dir)}


def _cluster_pairs(ctx: Context, backend: str, label: str, base_env: dict, pairs: int, warmup: int, cpus: int,
                   timeout: float) -> tuple[list[Row], dict]:
    """``warmup`` then ``pairs`` interleaved launcher/plain runs; the four rows and the stage breakdown."""
    home = ctx.workdir(f"startup_{backend}_home")
    first: dict[str, list[float]] = {"launcher": [], "plain": []}
    exits: dict[str, list[float]] = {"launcher": [], "plain": []}
    marks: dict[str, list[dict]] = {"launcher": [], "plain": []}
    for r in range(warmup + pairs):
        for side in (("launcher", "plain") if r % 2 == 0 else ("plain", "launcher")):
            log(f"startup: {backend} {side} {'warm-up' if r < warmup else f'run {r - warmup + 1}/{pairs}'}")
            try:
                if side == "launcher":
                    t, total, m = _launcher_run(ctx, backend, home, base_env, cpus, timeout)
                else:
                    t, total, m = _plain_run(ctx, backend, base_env, cpus, timeout)
            except jobs.JobFailed as exc:
                what = label if side == "launcher" else PLAIN[backend]
                return [Row(label, None, note=f"error ({what}): {str(exc).splitlines()[0][:200]}")], {}
            if r >= warmup:
                first[side].append(t)
                exits[side].append(total)
                marks[side].append(stages.offsets(m))
    plain = f"{PLAIN[backend]} (same config, nproc 2, {cpus} CPUs per rank)"
    table = stages.stage_table(marks)
    where = stages.gap_note(table)
    rows = [
        compared(label, first["launcher"], first["plain"], "s", GOAL,
                 note=f"command to end of first iteration; ratio vs {PLAIN[backend]} below"
                      + (f"; {where} (details.{backend}.stages)" if where else "")),
        measured(plain, first["plain"], "s", note="command to end of first iteration"),
        compared(f"{label}, to exit", exits["launcher"], exits["plain"], "s", GOAL,
                 note="command to exit (final evaluation and checkpoint included)"),
        measured(f"{plain}, to exit", exits["plain"], "s",
                 note="sbatch to the job's end in squeue" if backend == "slurm" else "command to exit"),
    ]
    details = {"command_to_first_iter_s": first, "command_to_exit_s": exits,
               "stages": table, "stage_runs": marks}
    return rows, details


def one_local_run(ctx: Context, side: str, nproc: int, threads: int, home: Path, timeout: float) -> tuple[float, float]:
    """One ``launcher`` or ``torchrun`` run: (seconds to the first iteration, seconds to exit)."""
    work = ctx.workdir(f"startup_{side}")
    if side == "launcher":
        env = jobs.bench_env(extra={"LAUNCHER_HOME": str(home)})
        return time_to_first_iter(launcher_cmd("local", nproc, work / "run", "bench-startup"), work / "run", env,
                                  work / "submit.log", timeout, "launcher submit --backend local")
    # validating, as the launcher's job does (it builds the val loader and evaluates at the end)
    cmd = jobs.torchrun_command(nproc, jobs.detcore_train_args(jobs.SHAPES_CONFIG, work / "run", OVERRIDES,
                                                               validate=True))
    return time_to_first_iter(cmd, work / "run", jobs.bench_env(threads), work / "torchrun.log", timeout,
                              "torchrun detcore train")


def run(ctx: Context) -> Result:
    from detcore.config import load_config
    from detcore.data.shapes import ensure_shapes

    why = backend_missing("local")
    if why:
        raise NotAvailable(why)
    cfg = load_config(jobs.SHAPES_CONFIG)
    for split in ("train", "val"):
        d = cfg["data"][split]
        ensure_shapes(num_train=d["num_train"], num_val=d["num_val"], size=d["size"], seed=d["seed"])
    nproc = 2
    threads = max(1, (os.cpu_count() or 1) // nproc)
    repeats = ctx.pick(2, 5)
    warmup = ctx.pick(0, 1)
    timeout = 300.0
    home = ctx.workdir("startup_home")
    launcher_times, torchrun_times = [], []
    exits: dict[str, list[float]] = {"launcher": [], "torchrun": []}
    for r in range(warmup + repeats):
        order = ("launcher", "torchrun") if r % 2 == 0 else ("torchrun", "launcher")
        for side in order:
            tag = "warm-up" if r < warmup else f"run {r - warmup + 1}/{repeats}"
            log(f"startup: {side} {tag}")
            t, total = one_local_run(ctx, side, nproc, threads, home, timeout)
            if r >= warmup:
                (launcher_times if side == "launcher" else torchrun_times).append(t)
                exits[side].append(total)
    cpus = 1 + int(cfg["data"].get("workers_per_gpu", 0))  # the launcher's default CPUs per rank, given to both
    rows: list[Row] = [
        compared("launcher submit --backend local --nproc 2", launcher_times, torchrun_times, "s", GOAL,
                 note="ratio vs torchrun below"),
        measured("torchrun --nproc-per-node 2 detcore train", torchrun_times, "s", note="--standalone"),
    ]
    details: dict = {"command_to_exit_s": exits,
                     "note": "to exit includes the final evaluation and checkpoint of the 2-iteration job"}
    for backend, env_fn in (("slurm", slurm_env), ("ray", ray_env)):
        more, detail = cluster_rows(ctx, backend, env_fn, ctx.pick(1, 4), ctx.pick(0, 1), cpus, 600.0)
        rows += more
        if detail:
            details[backend] = detail
    settings = {"config": str(jobs.SHAPES_CONFIG), "overrides": OVERRIDES, "nproc": nproc,
                "threads_per_worker": threads, "repeats": repeats, "warmup_pairs": warmup,
                "launcher_follows_job": True, "cluster_cpus_per_rank": cpus,
                "cluster_pairs": ctx.pick(1, 4), "cluster_warmup_pairs": ctx.pick(0, 1)}
    return Result(rows, settings, details)
