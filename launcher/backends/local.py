"""The local backend: N workers on this machine under PyTorch's own elastic agent.

``submit`` writes ``$LAUNCHER_HOME/jobs/<id>/spec.json`` and starts a detached supervisor
(:mod:`launcher.backends.local_supervisor`, its own session, so it outlives the terminal
and the submitting process). The supervisor waits for GPU leases and sweep slots, runs

    python -m torch.distributed.run --nproc-per-node N --rdzv-backend c10d
        --rdzv-endpoint 127.0.0.1:0 --max-restarts K ... -m launcher.worker ... -- detcore.tools.cli train ...

and keeps ``jobs/<id>/status.json`` (written atomically) and the store row up to date. The
c10d rendezvous on port 0 lets the agent bind its store port itself and hand it to the
workers as ``MASTER_PORT``: no port is ever chosen by binding, closing and hoping.

``status`` trusts ``status.json`` while the supervisor (pid + start tick) lives; a supervisor
that died without a terminal status is reported failed (its torchrun dies with it through
``PR_SET_PDEATHSIG``, so no orphaned workers keep GPUs the lease book thinks are free).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from launcher.backends.base import (DryRun, import_path_env, read_json, shim_command, thread_env,
                                    write_json_atomic)
from launcher.errors import LauncherError
from launcher.leases import GPU_POOL, LeaseBook
from launcher.procinfo import is_alive, process_start
from launcher.spec import JobHandle, JobSpec, JobState, JobStatus, spec_from_dict, spec_to_dict

MARKER_ENV = "DETLAUNCH_EXPERIMENT_ID"
FAKE_GPUS_ENV = "LAUNCHER_FAKE_GPUS"
CANCEL_GRACE_S = 20.0
RUN_FILES = ("spec.json", "status.json", "cancel", "attempts.jsonl")  # one run's state in jobs/<id>/


@dataclass(frozen=True)
class Options:
    """Local-backend options. ``wait``: queue when GPUs are busy (False: fail at submit)."""

    wait: bool = True


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--no-wait", action="store_true",
                       help="local: fail at once when the GPUs asked for are busy instead of queueing")


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(wait=not getattr(args, "no_wait", False))


def create(home: Path) -> "LocalBackend":
    return LocalBackend(home)


def detect_gpus(environ: Mapping[str, str]) -> tuple[str, ...]:
    """GPU ids this node offers: ``LAUNCHER_FAKE_GPUS=N`` (tests), else ``CUDA_VISIBLE_DEVICES``, else nvidia-smi."""
    fake = environ.get(FAKE_GPUS_ENV)
    if fake is not None:
        if not fake.isdigit():
            raise LauncherError(f"{FAKE_GPUS_ENV}={fake!r} must be a number of fake GPUs, e.g. 4")
        return tuple(str(i) for i in range(int(fake)))
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return tuple(ids) if ids and ids[0] != "-1" else ()
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip().isdigit())


def device_env(gpus: int, environ: Mapping[str, str]) -> dict[str, str]:
    """What the workers' environment says about GPUs. A CPU job sees none (``CUDA_VISIBLE_DEVICES``
    empty: it can never land on another job's GPU). A GPU job numbers GPUs as nvidia-smi and the
    lease book do (``CUDA_DEVICE_ORDER=PCI_BUS_ID``, unless the caller already chose an order);
    the supervisor adds the leased ``CUDA_VISIBLE_DEVICES`` at start."""
    if not gpus:
        return {"CUDA_VISIBLE_DEVICES": ""}
    return {"CUDA_DEVICE_ORDER": environ.get("CUDA_DEVICE_ORDER") or "PCI_BUS_ID"}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LocalBackend:
    name = "local"

    def __init__(self, home: Path, cores: int | None = None, gpus: tuple[str, ...] | None = None,
                 fake_gpus: bool | None = None) -> None:
        self.home = Path(home)
        self.cores = cores if cores is not None else available_cores()
        self._gpus = gpus
        self.fake_gpus = (FAKE_GPUS_ENV in os.environ) if fake_gpus is None else fake_gpus

    @property
    def gpus(self) -> tuple[str, ...]:
        if self._gpus is None:
            self._gpus = detect_gpus(os.environ)
        return self._gpus

    def job_dir(self, exp_id: str) -> Path:
        return self.home / "jobs" / exp_id

    # ---- rendering ------------------------------------------------------------------------
    def dryrun(self, spec: JobSpec) -> DryRun:
        r = spec.resources
        if r.nodes != 1:
            raise LauncherError(f"the local backend runs on one node, got --nodes {r.nodes}; use --backend slurm "
                                f"or ray for several nodes")
        if r.gpus > len(self.gpus):
            raise LauncherError(f"asked for {r.gpus} GPUs but this node has {len(self.gpus)} (set {FAKE_GPUS_ENV}=N "
                                f"to test with fake ones); use --nproc N for CPU workers")
        job_dir = self.job_dir(spec.id)
        torchrun = (sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(r.nproc),
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", spec.id,
                    "--max-restarts", str(spec.max_restarts), "--log-dir", str(job_dir / "torchelastic"))
        device = "cpu" if self.fake_gpus else None  # fake GPUs test the leases; the workers train on the CPU
        worker = shim_command(spec, log_dir=os.path.join(spec.work_dir, "logs"),
                              attempts_file=str(job_dir / "attempts.jsonl"), device=device)
        env = {**import_path_env(os.environ), **thread_env(self.cores, r.nproc, spec.loader_workers if r.gpus else 0),
               "PYTHONUNBUFFERED": "1", MARKER_ENV: spec.id, **device_env(r.gpus, os.environ)}
        notes = ["ports: the c10d rendezvous binds 127.0.0.1:0, so the agent owns its port (MASTER_PORT)",
                 "a restarted worker group resumes from the newest checkpoint (--resume auto)"]
        if r.gpus:
            notes.append(f"CUDA_VISIBLE_DEVICES: {r.gpus} of GPUs {','.join(self.gpus)} leased at start "
                         f"(queued while busy); each rank uses its own (--device cuda, LOCAL_RANK)")
        else:
            notes.append("CPU workers (--device cpu); CUDA_VISIBLE_DEVICES is empty, so no GPU is touched")
        if r.gpus and self.fake_gpus:
            notes.append(f"{FAKE_GPUS_ENV}: the GPUs are fake, so the workers train with --device cpu")
        if spec.amp and not r.gpus:
            notes.append("--amp is ignored by CPU workers (they train in full precision and say so in their log)")
        if spec.slots:
            notes.append(f"runs when one of {spec.slots.size} slots of sweep {spec.slots.name} is free")
        return DryRun(backend=self.name, commands=(torchrun + worker,), env=tuple(sorted(env.items())),
                      resources=r, world_size=spec.world_size, scaling=spec.scaling, work_dir=spec.work_dir,
                      cwd=spec.cwd, notes=tuple(notes))

    # ---- submit -----------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> JobHandle:
        self.dryrun(spec)
        job_dir = self.job_dir(spec.id)
        created = not job_dir.exists()
        if not created:  # a resume: the previous run must be over; its supervisor.log is kept
            previous = read_json(job_dir / "status.json")
            if previous is not None and not JobState(previous["state"]).is_terminal():
                raise LauncherError(f"experiment {spec.id} still has a {previous['state']} run; cancel it first")
            for name in RUN_FILES:
                (job_dir / name).unlink(missing_ok=True)
        job_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        try:
            write_json_atomic(job_dir / "spec.json", spec_to_dict(spec))
            opts = spec.backend_options or Options()
            book = LeaseBook(self.home)
            me, my_start = os.getpid(), process_start(os.getpid()) or 0
            if spec.resources.gpus and not opts.wait:
                got = book.acquire(GPU_POOL, self.gpus, spec.resources.gpus, spec.id, me, my_start)
                if got is None:
                    free = len(self.gpus) - sum(1 for _ in book.held().get(GPU_POOL, {}))
                    raise LauncherError(f"asked for {spec.resources.gpus} GPUs but only {free} of {len(self.gpus)} "
                                        f"are free now; leave out --no-wait to queue")
            log = open(job_dir / "supervisor.log", "ab")
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "launcher.backends.local_supervisor", "--home", str(self.home), spec.id],
                    cwd=spec.cwd, env={**os.environ, **import_path_env(os.environ), MARKER_ENV: spec.id},
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    close_fds=True)
            finally:
                log.close()
            start = _wait_for_start(proc.pid)
            book.transfer(spec.id, proc.pid, start)
        except BaseException:
            LeaseBook(self.home).release(spec.id)
            if created:
                shutil.rmtree(job_dir, ignore_errors=True)
            else:
                for name in RUN_FILES:
                    (job_dir / name).unlink(missing_ok=True)
            raise
        return JobHandle(spec.id, self.name, str(proc.pid), (("supervisor_start", str(start)),
                                                              ("job_dir", str(job_dir))))

    # ---- status -----------------------------------------------------------------------------
    def _supervisor(self, handle: JobHandle) -> tuple[int, int | None]:
        start = handle.get("supervisor_start")
        return int(handle.job_id or 0), int(start) if start else None

    def status(self, handle: JobHandle) -> JobStatus:
        job_dir = self.job_dir(handle.experiment_id)
        st = read_json(job_dir / "status.json")
        if st is not None and JobState(st["state"]).is_terminal():
            return status_from_json(st)
        pid, start = self._supervisor(handle)
        if pid and is_alive(pid, start):
            return status_from_json(st) if st else JobStatus(JobState.PENDING)
        st = read_json(job_dir / "status.json")  # it may have finished between the two reads
        if st is not None and JobState(st["state"]).is_terminal():
            return status_from_json(st)
        if not job_dir.exists():
            return JobStatus(JobState.FAILED, reason=f"job folder {job_dir} is gone; the job cannot be tracked")
        restarts = int(st.get("restarts", 0)) if st else 0
        return JobStatus(JobState.FAILED, restarts=restarts, ended=time.time(),
                         reason=f"supervisor (pid {pid}) died without recording a result; its workers were stopped "
                                f"with it (see {job_dir / 'supervisor.log'})")

    # ---- logs -------------------------------------------------------------------------------
    def _work_dir(self, exp_id: str) -> Path:
        spec = read_json(self.job_dir(exp_id) / "spec.json")
        if spec is None:
            raise LauncherError(f"experiment {exp_id} has no local job folder in {self.home / 'jobs'}")
        return Path(spec["work_dir"])

    def log_path(self, exp_id: str, rank: int) -> Path:
        return self._work_dir(exp_id) / "logs" / f"rank{rank}.log"

    def logs(self, handle: JobHandle, rank: int = 0, follow: bool = False) -> Iterator[str]:
        path = self.log_path(handle.experiment_id, rank)
        if not follow and not path.exists():
            raise LauncherError(f"no log for rank {rank} yet ({path}); the job has not started that rank")
        yield from follow_file(path, (lambda: self.status(handle).state.is_terminal()) if follow else None)

    # ---- cancel -----------------------------------------------------------------------------
    def cancel(self, handle: JobHandle) -> None:
        job_dir = self.job_dir(handle.experiment_id)
        if self.status(handle).state.is_terminal():
            return
        (job_dir / "cancel").touch()
        pid, start = self._supervisor(handle)
        if pid and is_alive(pid, start):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + CANCEL_GRACE_S + 10
            while is_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.1)
            if is_alive(pid, start):
                os.killpg(pid, signal.SIGKILL)
        kill_marked_processes(handle.experiment_id)
        st = read_json(job_dir / "status.json") or {}
        if not JobState(st.get("state", "pending")).is_terminal():
            write_json_atomic(job_dir / "status.json",
                              {**st, "state": JobState.CANCELLED.value, "reason": "cancelled", "ended": time.time()})
        LeaseBook(self.home).release(handle.experiment_id)

    def list(self) -> list[JobHandle]:
        handles = []
        for job_dir in sorted((self.home / "jobs").glob("*")):
            st = read_json(job_dir / "status.json") or {}
            pid = st.get("supervisor_pid")
            extra = (("supervisor_start", str(st.get("supervisor_start", ""))), ("job_dir", str(job_dir)))
            handles.append(JobHandle(job_dir.name, self.name, str(pid or ""), extra))
        return handles

    def load_spec(self, exp_id: str) -> JobSpec:
        data = read_json(self.job_dir(exp_id) / "spec.json")
        if data is None:
            raise LauncherError(f"experiment {exp_id} has no local job folder in {self.home / 'jobs'}")
        return spec_from_dict(data, Options)


def status_from_json(st: Mapping) -> JobStatus:
    return JobStatus(JobState(st["state"]), exit_code=st.get("exit_code"), restarts=int(st.get("restarts", 0)),
                     reason=st.get("reason", ""), ports=tuple(st.get("ports", ())), started=st.get("started"),
                     ended=st.get("ended"))


def _wait_for_start(pid: int) -> int:
    for _ in range(100):
        start = process_start(pid)
        if start is not None:
            return start
        time.sleep(0.01)
    raise LauncherError(f"the job supervisor (pid {pid}) exited at once; see its log under $LAUNCHER_HOME/jobs")


def follow_file(path: Path, finished=None, poll_s: float = 0.2) -> Iterator[str]:
    """Lines of ``path``; when ``finished`` is given, keep reading until it returns True and the file is drained."""
    pos, buf = 0, b""
    while True:
        done = finished() if finished is not None else True
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            chunk = b""
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
        if done and not chunk:
            if buf:
                yield buf.decode("utf-8", "replace")
            return
        if not chunk:
            time.sleep(poll_s)


def kill_marked_processes(exp_id: str, sig: int = signal.SIGKILL) -> list[int]:
    """Signal every process whose environment carries ``DETLAUNCH_EXPERIMENT_ID=exp_id``; their pids."""
    import psutil

    me = os.getpid()
    hit = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(MARKER_ENV) == exp_id:
                proc.send_signal(sig)
                hit.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return hit
