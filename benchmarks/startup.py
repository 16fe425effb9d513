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

Slurm and Ray (figures only, no goal): the same command with ``--backend slurm`` / ``--backend
ray``, when the backend exists and its local test cluster answers (``cluster/slurm/start.sh``
then ``/tmp/detlaunch-slurm/env.sh``; ``cluster/ray/start.sh`` on 127.0.0.1:6379). Only with
``--start-clusters`` does the benchmark start a cluster that is down (and it leaves it
running); it never stops one: other people's jobs may be using it.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import Context, Goal, NotAvailable, Result, Row, compared, log, measured, not_available

TITLE = "start-up: launcher submit --backend local vs torchrun, command to end of first iteration"
GOAL = Goal("ratio", "<=", 1.15)
OVERRIDES = ["runner.max_iters=2", "log_config.interval=1", jobs.NO_CHECKPOINTS]
SLURM_ENV_FILE = Path(os.environ.get("DETLAUNCH_SLURM_DIR", "/tmp/detlaunch-slurm")) / "env.sh"
RAY_ADDRESS = "127.0.0.1:6379"


def launcher_cmd(backend: str, nproc: int, work_dir: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "launcher", "submit", str(jobs.SHAPES_CONFIG), "--backend", backend,
            "--nproc", str(nproc), "--work-dir", str(work_dir), "--name", name, "--cfg-options", *OVERRIDES]


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
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_ADDRESS": RAY_ADDRESS}  # before `import ray`


CLUSTER_DIRS = {"slurm": jobs.REPO_ROOT / "cluster" / "slurm", "ray": jobs.REPO_ROOT / "cluster" / "ray"}


def cluster_figure(ctx: Context, backend: str, env_fn, repeats: int, timeout: float) -> Row:
    """The backend's figure. With ``ctx.start_clusters`` a cluster that is down is started first
    and stopped again after its runs, so its daemons do not share the cores with the benchmarks
    that follow. A cluster that was already up is used and left alone."""
    label = f"launcher submit --backend {backend} --nproc 2"
    why = backend_missing(backend)
    if why:
        return not_available(label, why)
    try:
        base_env = env_fn()
    except NotAvailable as exc:
        if not ctx.start_clusters:
            return not_available(label, f"{exc}; or pass --start-clusters")
        script = CLUSTER_DIRS[backend] / "start.sh"
        log(f"startup: starting the {backend} test cluster ({script}); it is stopped after its runs")
        out = subprocess.run([str(script)], capture_output=True, text=True, timeout=600)
        try:
            if out.returncode != 0:
                return not_available(label, f"{script} failed: {out.stderr.strip()[-300:]}")
            try:
                base_env = env_fn()
            except NotAvailable as exc2:
                return not_available(label, f"started the cluster, but: {exc2}")
            return _cluster_runs(ctx, backend, label, base_env, repeats, timeout)
        finally:
            stop = CLUSTER_DIRS[backend] / "stop.sh"
            log(f"startup: stopping the {backend} test cluster ({stop})")
            subprocess.run([str(stop)], capture_output=True, timeout=300)
    return _cluster_runs(ctx, backend, label, base_env, repeats, timeout)


def _cluster_runs(ctx: Context, backend: str, label: str, base_env: dict, repeats: int, timeout: float) -> Row:
    home = ctx.workdir(f"startup_{backend}_home")
    times, totals = [], []
    for r in range(repeats):
        log(f"startup: {backend} run {r + 1}/{repeats}")
        work = ctx.workdir(f"startup_{backend}")
        env = jobs.bench_env(extra={"LAUNCHER_HOME": str(home)}, base=base_env)
        try:
            first, total = time_to_first_iter(launcher_cmd(backend, 2, work / "run", f"bench-startup-{backend}"),
                                              work / "run", env, work / "submit.log", timeout, label)
        except jobs.JobFailed as exc:
            return Row(label, None, note=f"error: {str(exc).splitlines()[0][:200]}")
        times.append(first)
        totals.append(total)
    return measured(label, times, "s", note=f"figure only; command to end of first iteration (to exit: "
                                             f"{', '.join(f'{t:.1f}' for t in totals)} s)")


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
    rows: list[Row] = [
        compared("launcher submit --backend local --nproc 2", launcher_times, torchrun_times, "s", GOAL,
                 note="ratio vs torchrun below"),
        measured("torchrun --nproc-per-node 2 detcore train", torchrun_times, "s", note="--standalone"),
        cluster_figure(ctx, "slurm", slurm_env, ctx.pick(1, 3), 600.0),
        cluster_figure(ctx, "ray", ray_env, ctx.pick(1, 3), 600.0),
    ]
    settings = {"config": str(jobs.SHAPES_CONFIG), "overrides": OVERRIDES, "nproc": nproc,
                "threads_per_worker": threads, "repeats": repeats, "warmup_pairs": warmup,
                "launcher_follows_job": True}
    details = {"command_to_exit_s": exits,
               "note": "to exit includes the final evaluation and checkpoint of the 2-iteration job"}
    return Result(rows, settings, details)
