"""Training jobs as subprocesses: command lines, environments, waiting, reading their logs, peak RSS.

Every process started here runs in its own session, so stopping it (``stop``) signals that
process group and nothing else on the machine.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Sequence

from benchmarks.harness import REPO_ROOT

SHAPES_CONFIG = REPO_ROOT / "configs" / "shapes" / "faster_rcnn_tiny_shapes.yaml"
MOBILENET_CONFIG = REPO_ROOT / "benchmarks" / "configs" / "faster_rcnn_mobilenet_v3_320_shapes.yaml"
# no checkpoint until the last iteration, no evaluation: the runs time training steps only
NO_CHECKPOINTS = "checkpoint_config.interval=100000000"


class JobFailed(RuntimeError):
    """A subprocess exited non-zero or timed out; the message holds the tail of its log."""


def bench_env(threads: int | None = None, extra: Mapping[str, str] | None = None,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every subprocess: ``base`` (default ours) with this checkout first on
    PYTHONPATH, thread counts pinned when given, and ``extra`` on top."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                           if p])
    env["PYTHONUNBUFFERED"] = "1"
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    env.update(extra or {})
    return env


def detcore_train_args(config: Path, work_dir: Path, overrides: Sequence[str] = (), validate: bool = False) -> list[str]:
    """``-m detcore.tools.cli train CONFIG --work-dir D [--no-validate] --cfg-options ...`` (no python)."""
    args = ["-m", "detcore.tools.cli", "train", str(config), "--work-dir", str(work_dir)]
    if not validate:
        args.append("--no-validate")
    if overrides:
        args += ["--cfg-options", *overrides]
    return args


def torchrun_command(nproc: int, module_args: Sequence[str]) -> list[str]:
    """``torchrun --standalone --nproc-per-node N -m ...``; --standalone picks a free rendezvous port."""
    exe = shutil.which("torchrun")
    head = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    return head + ["--standalone", "--nproc-per-node", str(nproc), *module_args]


@dataclass
class Job:
    """A started subprocess with its log file."""

    proc: subprocess.Popen
    log_path: Path
    started: float  # time.perf_counter() just before the Popen call

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def start(cmd: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path = REPO_ROOT) -> Job:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=str(cwd),
                                start_new_session=True)
    return Job(proc, log_path, t0)


def stop(job: Job, grace_s: float = 10.0) -> None:
    """TERM then KILL the job's own process group (it runs in a session of its own)."""
    if job.proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(job.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            job.proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait(job: Job, timeout_s: float, what: str) -> float:
    """Wait for a zero exit; the wall seconds since start. JobFailed (with the log tail) otherwise."""
    try:
        rc = job.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(job)
        raise JobFailed(f"{what} did not finish within {timeout_s:.0f} s; log {job.log_path}:\n{job.tail()}") from None
    if rc != 0:
        raise JobFailed(f"{what} exited with {rc}; log {job.log_path}:\n{job.tail()}")
    return time.perf_counter() - job.started


def run(cmd: Sequence[str], log_path: Path, env: Mapping[str, str], timeout_s: float, what: str) -> float:
    return wait(start(cmd, log_path, env), timeout_s, what)


def poll_until(check: Callable[[], bool], job: Job | None, timeout_s: float, what: str,
               interval_s: float = 0.02) -> float:
    """Poll ``check`` until true; the seconds since the job started (or since the call).

    Fails early with the job's log when the job exits before ``check`` holds.
    """
    t0 = job.started if job else time.perf_counter()
    deadline = time.perf_counter() + timeout_s
    while True:
        if check():
            return time.perf_counter() - t0
        if job is not None and job.proc.poll() is not None and not check():
            if job.proc.returncode != 0:
                raise JobFailed(f"{what}: the command exited with {job.proc.returncode} first; log "
                                f"{job.log_path}:\n{job.tail()}")
        if time.perf_counter() > deadline:
            raise JobFailed(f"{what}: nothing after {timeout_s:.0f} s" +
                            (f"; log {job.log_path}:\n{job.tail()}" if job else ""))
        time.sleep(interval_s)


# ---- reading a work dir ------------------------------------------------------------------------

def read_metrics(work_dir: Path) -> list[dict]:
    """The train records of ``metrics.jsonl`` (a partly written last line is skipped)."""
    path = Path(work_dir) / "metrics.jsonl"
    records = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("mode") == "train":
            records.append(rec)
    return records


def has_iteration(work_dir: Path, iteration: int = 1) -> Callable[[], bool]:
    """A check for :func:`poll_until`: ``metrics.jsonl`` has a train record for ``iteration`` or later."""
    path = Path(work_dir) / "metrics.jsonl"

    def check() -> bool:
        try:
            if path.stat().st_size == 0:
                return False
        except FileNotFoundError:
            return False
        return any(r.get("iter", 0) >= iteration for r in read_metrics(work_dir))
    return check


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO detcore\.engine\.hooks: iter (\d+)/(\d+) ")


def log_times(work_dir: Path) -> dict[int, float]:
    """``{iteration: wall time (epoch s)}`` of the trainer's log lines in ``train.log`` (ms resolution).

    The logger hook writes its line right after the step of that iteration, so the time
    between two lines includes everything the trainer does per iteration: data, step, hooks.
    """
    out = {}
    try:
        lines = (Path(work_dir) / "train.log").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        m = _LOG_LINE.match(line)
        if m:
            out[int(m.group(2))] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return out


@dataclass(frozen=True)
class Throughput:
    """Steady-state images/s of one detcore run, two ways."""

    wall: float        # from log-line times: everything per iteration (data, step, hooks, logging)
    iter_time: float   # from metrics.jsonl iter_time: data + step only (the trainer's own figure)
    data_share: float  # mean data_time / iter_time over the steady iterations


def detcore_throughput(work_dir: Path, warmup: int, iters: int, images_per_iter: int) -> Throughput:
    """Images/s over iterations ``warmup+1 .. iters`` (``warmup`` and ``iters`` must be logged)."""
    times = log_times(work_dir)
    if warmup not in times or iters not in times:
        raise JobFailed(f"{work_dir}/train.log has no log line for iteration {warmup} or {iters} "
                        f"(found {sorted(times)[:3]}...{sorted(times)[-3:]}); is log_config.interval a divisor?")
    wall = images_per_iter * (iters - warmup) / (times[iters] - times[warmup])
    recs = [r for r in read_metrics(work_dir) if warmup < r["iter"] <= iters]
    spans = []  # (iterations in the logged window, mean iter_time, mean data_time)
    prev = warmup
    for r in sorted(recs, key=lambda r: r["iter"]):
        spans.append((r["iter"] - prev, r["iter_time"], r["data_time"]))
        prev = r["iter"]
    total = sum(n * t for n, t, _ in spans)
    data = sum(n * d for n, _, d in spans)
    return Throughput(wall, images_per_iter * (iters - warmup) / total if total else 0.0, data / total if total else 0.0)


# ---- memory ----------------------------------------------------------------------------------

@dataclass
class RssSampler:
    """Polls the resident memory of processes that ``select`` picks, keeping each one's peak.

    ``select()`` returns ``{pid: role}`` for the processes of interest right now (it is called
    every poll, so processes that appear later are picked up). Peaks between two polls are
    missed: this is a lower bound at ``interval_s`` resolution.
    """

    select: Callable[[], Mapping[int, str]]
    interval_s: float = 0.05
    peaks: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (role, peak rss bytes)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        import psutil

        procs: dict[int, psutil.Process] = {}
        while not self._stop.is_set():
            try:
                chosen = self.select()
            except Exception:  # a process vanished while we looked at it
                chosen = {}
            for pid, role in chosen.items():
                try:
                    proc = procs.setdefault(pid, psutil.Process(pid))
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                first_role, old = self.peaks.get(pid, (role, 0))
                self.peaks[pid] = (first_role, max(old, rss))  # a pid keeps the role it was first seen with
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def descendants(pid: int) -> list:
    """psutil processes under ``pid`` (recursively), empty when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def role_of(proc) -> str | None:
    """Name a process of a training job by its command line; None when it is gone."""
    try:
        argv = proc.cmdline()
    except Exception:  # psutil.NoSuchProcess / ZombieProcess / AccessDenied
        return None
    if not argv:
        return None
    if "launcher.backends.local.supervisor" in argv:
        return "launcher supervisor"
    if {"torch.distributed.run", "launcher.backends.local.agent"} & set(argv) or \
            any(Path(a).name == "torchrun" for a in argv[:2]):
        return "torchrun agent"
    if "launcher.runtime.shim" in argv:
        return "worker shim"  # the launcher's parent of a rank; the rank is its detcore.tools.cli child
    if "detcore.tools.cli" in argv:
        return "worker"
    if "launcher" in argv:
        return "launcher cli"
    return "other"
