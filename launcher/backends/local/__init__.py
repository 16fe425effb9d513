"""The local backend: N workers on this machine under PyTorch's own elastic agent.

``submit`` writes ``$LAUNCHER_HOME/jobs/<id>/spec.json`` and starts a detached supervisor
(:mod:`launcher.backends.local.supervisor`, its own session, so it outlives the terminal
and the submitting process). The supervisor waits for its GPU and CPU-core leases (see
:mod:`launcher.backends.local.cores`) and sweep slot, pins torchrun to the leased cores, runs

    python -m launcher.backends.local.agent --nproc-per-node N --rdzv-backend detlaunch-c10d
        --rdzv-endpoint 127.0.0.1:0 --local-addr 127.0.0.1 --max-restarts K ...
        -m launcher.runtime.shim ... -- detcore.tools.cli train ...

(torchrun itself, with its c10d rendezvous's two stores listening on 127.0.0.1 only, see
:mod:`launcher.backends.local.agent`) and keeps ``jobs/<id>/status.json`` (written atomically)
and the store row up to date. The rendezvous on port 0 lets the agent bind its store ports
itself and hand the shared one to the workers as ``MASTER_PORT``: no port is ever chosen by
binding, closing and hoping.

``status`` is :func:`~launcher.runtime.monitor.observed_status`: ``status.json`` while the
supervisor (pid + start tick) lives, its ending from ``status.json`` or the launch's
``outcome.json``, and "monitor lost" (failed, resumable) when it died without one (its
torchrun dies with it through ``PR_SET_PDEATHSIG``, and a resume first kills any process
still marked with the experiment id, so no orphaned worker keeps writing the work dir).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from detcore.contract import BACKEND_ENV, EXPERIMENT_ENV as MARKER_ENV
from detcore.net import loopback_env
from launcher.backends.protocol import DryRun
from launcher.errors import LauncherError
from launcher.backends.local.cores import core_request, describe_cores
from launcher.resources.leases import CPU_POOL, GPU_POOL, LeaseBook
from launcher.resources.procinfo import process_start
from launcher.runtime import detached
from launcher.runtime.command import import_path_env, run_dir, shim_command, thread_env
from launcher.runtime.job_folder import JobFolder
from launcher.spec import JobHandle, JobSpec, Resources

FAKE_GPUS_ENV = "LAUNCHER_FAKE_GPUS"
AGENT_MODULE = "launcher.backends.local.agent"  # torchrun with its stores on the rendezvous host only
AGENT_RENDEZVOUS = "detlaunch-c10d"  # agent.BACKEND (kept equal by a test; the agent imports torch)
LOOPBACK = "127.0.0.1"
CANCEL_GRACE_S = 20.0


@dataclass(frozen=True)
class LocalOptions:
    """Local-backend options. ``wait``: queue when GPUs or cores are busy (False: fail at submit);
    ``oversubscribe``: lease no cores, share all of them (threads as if alone)."""

    wait: bool = True
    oversubscribe: bool = False


Options = LocalOptions  # the name the backend protocol looks up (launcher.backends.protocol)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--no-wait", action="store_true",
                       help="local: fail at once when the GPUs or cores asked for are busy instead of queueing")
    group.add_argument("--oversubscribe", action="store_true",
                       help="local: lease no CPU cores; the job shares every core with the others (no pinning)")


def options_from_args(args: argparse.Namespace) -> LocalOptions:
    return LocalOptions(wait=not getattr(args, "no_wait", False), oversubscribe=getattr(args, "oversubscribe", False))


def resources_from_args(args: argparse.Namespace, resources: Resources) -> Resources:
    """The generic resources as given: the local backend has no options that change them."""
    return resources


def create(home: Path) -> LocalBackend:
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


class LocalBackend(detached.DetachedBackend):
    name = "local"
    FOLDER, START_KEY, MONITOR, OPTIONS = "jobs", "supervisor_start", "the supervisor", LocalOptions

    def __init__(self, home: Path, cores: int | None = None, gpus: tuple[str, ...] | None = None,
                 fake_gpus: bool | None = None) -> None:
        """``cores``: pretend the launcher may use cores 0..cores-1 (tests); default: what it may use."""
        self.home = Path(home)
        if cores is None:
            from detcore.engine.cores import usable_cores

            self.core_ids = tuple(str(c) for c in usable_cores())
        else:
            self.core_ids = tuple(str(c) for c in range(cores))
        self.cores = len(self.core_ids)
        self._gpus = gpus
        self.fake_gpus = (FAKE_GPUS_ENV in os.environ) if fake_gpus is None else fake_gpus

    @property
    def gpus(self) -> tuple[str, ...]:
        if self._gpus is None:
            self._gpus = detect_gpus(os.environ)
        return self._gpus

    def cores_wanted(self, spec: JobSpec) -> int:
        """The CPU cores ``spec`` leases (0 with ``--oversubscribe``); LauncherError when never possible."""
        if (spec.backend_options or LocalOptions()).oversubscribe:
            return 0
        return core_request(spec.resources, self.cores, len(self.gpus))

    def lease_wants(self, spec: JobSpec) -> list[tuple[str, tuple[str, ...], int]]:
        """``(pool, inventory, count)`` of the GPUs and cores ``spec`` leases together."""
        wants = []
        if spec.resources.gpus:
            wants.append((GPU_POOL, self.gpus, spec.resources.gpus))
        cores = self.cores_wanted(spec)
        if cores:
            wants.append((CPU_POOL, self.core_ids, cores))
        return wants

    # ---- rendering ------------------------------------------------------------------------
    def dryrun(self, spec: JobSpec) -> DryRun:
        r = spec.resources
        if r.nodes != 1:
            raise LauncherError(f"the local backend runs on one node, got --nodes {r.nodes}; pass --nodes 1, or use "
                                f"--backend slurm or ray for several nodes")
        if r.gpus > len(self.gpus):
            raise LauncherError(f"asked for {r.gpus} GPUs but this node has {len(self.gpus)} (set {FAKE_GPUS_ENV}=N "
                                f"to test with fake ones); use --nproc N for CPU workers")
        torchrun = (sys.executable, "-m", AGENT_MODULE, "--nnodes", "1", "--nproc-per-node", str(r.nproc),
                    "--rdzv-backend", AGENT_RENDEZVOUS, "--rdzv-endpoint", f"{LOOPBACK}:0", "--local-addr", LOOPBACK,
                    "--rdzv-id", spec.id,
                    "--max-restarts", str(spec.max_restarts), "--log-dir",
                    os.path.join(run_dir(spec), "torchelastic"))
        device = "cpu" if self.fake_gpus else None  # fake GPUs test the leases; the workers train on the CPU
        worker = shim_command(spec, device=device)
        leased = self.cores_wanted(spec)
        env = {**import_path_env(os.environ),
               **thread_env(leased or self.cores, r.nproc, spec.loader_workers if r.gpus else 0),
               "PYTHONUNBUFFERED": "1", MARKER_ENV: spec.id, BACKEND_ENV: "local", **device_env(r.gpus, os.environ),
               **loopback_env(os.environ)}
        notes = ["ports: torchrun's rendezvous store and the store it shares with the workers (MASTER_ADDR "
                 "127.0.0.1, MASTER_PORT) listen on 127.0.0.1 only, on ports the kernel picks at bind time; gloo "
                 "and NCCL connect the ranks over the loopback interface",
                 "a restarted worker group resumes from the newest checkpoint (--resume auto)",
                 f"facts of this launch: {run_dir(spec)}/events.jsonl"]
        if spec.hang_timeout_s:
            notes.append(f"hang watchdog: an attempt in which no rank finishes an iteration for "
                         f"{spec.hang_timeout_s:g} s is ended and restarted")
        if r.gpus:
            notes.append(f"CUDA_VISIBLE_DEVICES: {r.gpus} of GPUs {','.join(self.gpus)} leased at start "
                         f"(queued while busy); each rank uses its own (--device cuda, LOCAL_RANK)")
        else:
            notes.append("CPU workers (--device cpu); CUDA_VISIBLE_DEVICES is empty, so no GPU is touched")
        if leased:
            notes.append(f"CPU cores: {leased} of the {self.cores} this launcher may use ({describe_cores(self.core_ids)}), "
                         f"leased at start (queued while busy); torchrun and its workers are pinned to them "
                         f"(sched_setaffinity); --oversubscribe shares all cores instead")
        else:
            notes.append(f"CPU cores: none leased (--oversubscribe); the job shares all {self.cores} cores")
        if r.gpus and self.fake_gpus:
            notes.append(f"{FAKE_GPUS_ENV}: the GPUs are fake, so the workers train with --device cpu")
        if spec.worker.amp and not r.gpus:
            notes.append("--amp is ignored by CPU workers (they train in full precision and say so in their log)")
        if spec.slots:
            notes.append(f"runs when one of {spec.slots.size} slots of sweep {spec.slots.name} is free")
        return DryRun(backend=self.name, commands=(torchrun + worker,), env=tuple(sorted(env.items())),
                      resources=r, world_size=spec.world_size, scaling=spec.scaling, work_dir=spec.work_dir,
                      cwd=spec.cwd, notes=tuple(notes))

    # ---- submit -----------------------------------------------------------------------------
    def submit(self, spec: JobSpec, dry: DryRun | None = None) -> JobHandle:
        dry = dry or self.dryrun(spec)
        job_dir = self.job_dir(spec.id)
        try:
            with detached.launch_folder(job_dir, spec, dry):
                pid, start = self._start_supervisor(spec, job_dir)
        except BaseException:
            LeaseBook(self.home).release(spec.id)
            raise
        return JobHandle(spec.id, self.name, str(pid), (("supervisor_start", str(start)),
                                                        ("job_dir", str(job_dir)), ("run_dir", run_dir(spec))))

    def _start_supervisor(self, spec: JobSpec, job_dir: Path) -> tuple[int, int]:
        """With --no-wait, take the GPUs and cores now (or fail); then start the supervisor and hand the
        leases to it."""
        opts = spec.backend_options or LocalOptions()
        book = LeaseBook(self.home)
        me, my_start = os.getpid(), process_start(os.getpid()) or 0
        wants = self.lease_wants(spec)
        if wants and not opts.wait:
            if book.acquire_all(wants, spec.id, me, my_start) is None:
                held = book.held()
                busy = [f"{want} {'GPUs' if pool == GPU_POOL else 'CPU cores'} but only "
                        f"{len(inventory) - len(held.get(pool, {}))} of {len(inventory)} are free now"
                        for pool, inventory, want in wants]
                raise LauncherError(f"asked for {' and '.join(busy)}; leave out --no-wait to queue"
                                    + ("" if spec.resources.gpus else " (or pass --oversubscribe to share cores)"))
        pid, start = detached.start(
            [sys.executable, "-m", "launcher.backends.local.supervisor", "--home", str(self.home), spec.id],
            {**os.environ, **import_path_env(os.environ), MARKER_ENV: spec.id}, spec.cwd, JobFolder(job_dir).supervisor_log)
        book.transfer(spec.id, pid, start)
        return pid, start

    # ---- cancel -----------------------------------------------------------------------------
    def cancel(self, handle: JobHandle) -> None:
        detached.cancel(self.job_dir(handle.experiment_id), handle, self.START_KEY, signal.SIGTERM,
                        CANCEL_GRACE_S + 10, 0.0, self.status(handle))
        LeaseBook(self.home).release(handle.experiment_id)
