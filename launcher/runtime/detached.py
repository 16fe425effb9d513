"""The client side of a detached monitor (the local supervisor, the Ray driver): start, read, stop.

Both backends start their monitor the same way (its own session, stdin closed, output to a
log in the job's folder, so it outlives the terminal and the submitting process), read it the
same way (:func:`status`: the monitor's files and whether its pid and start tick still run)
and stop it the same way (:func:`cancel`: a ``cancel`` file, a signal, a grace period, then
SIGKILL of its session and of every process still marked with the experiment id).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from detcore.contract import EXPERIMENT_ENV
from launcher.errors import LauncherError
from launcher.resources.procinfo import is_alive, process_start
from launcher.runtime.files import follow_file, read_json, write_json_atomic
from launcher.runtime.job_folder import JobFolder
from launcher.runtime.monitor import observed_status, read_monitor_files
from launcher.runtime.scratch import remove_dead_scratch
from detcore.contract import rank_log
from launcher.backends.protocol import Backend, DryRun
from launcher.spec import JobHandle, JobSpec, JobState, JobStatus, spec_from_dict

SHARED_RAY_ACTORS = ("ray::_AutoscalingCoordinatorActor",)  # inherit the job's marker but serve every later job


def start(cmd: Sequence[str], env: Mapping[str, str], cwd: str, log: Path) -> tuple[int, int]:
    """Start ``cmd`` detached; its pid and start tick (a LauncherError naming ``log`` if it exits at once)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    for _ in range(200):
        begun = process_start(proc.pid)
        if begun is not None:
            return proc.pid, begun
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    raise LauncherError(f"the job's monitor (pid {proc.pid}) exited at once; see {log}")


class DetachedBackend(Backend):
    """A backend whose launch a detached monitor follows from the submitting side (the local supervisor, the
    Ray driver): one job folder per experiment, ``$LAUNCHER_HOME/<FOLDER>/<id>`` (:class:`JobFolder`), read
    back by ``status``, ``logs`` and ``cancel`` the same way."""

    FOLDER: str                    # the job folders' parent in $LAUNCHER_HOME
    START_KEY: str                 # the handle's entry holding the monitor's start tick
    MONITOR: str                   # the monitor's name in reasons ("the supervisor")
    OPTIONS: type | None = None    # the backend's options class (in spec.json)
    home: Path

    def job_dir(self, exp_id: str) -> Path:
        return self.home / self.FOLDER / exp_id

    def load_spec(self, exp_id: str) -> JobSpec:
        data = read_json(JobFolder(self.job_dir(exp_id)).spec)
        if data is None:
            raise LauncherError(f"experiment {exp_id} has no {self.name} job folder in {self.home / self.FOLDER}")
        return spec_from_dict(data, self.OPTIONS)

    def status(self, handle: JobHandle) -> JobStatus:
        return status(self.job_dir(handle.experiment_id), handle, self.START_KEY, self.MONITOR)

    def log_path(self, exp_id: str, rank: int) -> Path:
        return rank_log(self.load_spec(exp_id).work_dir, rank)

    def logs(self, handle: JobHandle, rank: int = 0, follow: bool = False) -> Iterator[str]:
        path = self.log_path(handle.experiment_id, rank)
        yield from logs(path, follow, lambda: self.status(handle).state.is_terminal(),
                        f"no log for rank {rank} yet ({path}); {self.not_started(handle)}")

    def not_started(self, handle: JobHandle) -> str:
        """Why a rank has no log yet, and where to look instead (the end of ``logs``' one line)."""
        return "the job has not started that rank"


def monitor_of(handle: JobHandle, start_key: str) -> tuple[int, int | None]:
    started = handle.get(start_key)
    return int(handle.job_id or 0), int(started) if started else None


def status(job_dir: Path, handle: JobHandle, start_key: str, who: str) -> JobStatus:
    """The job's status: the monitor's files, read after checking whether the monitor still runs."""
    pid, started = monitor_of(handle, start_key)
    alive = bool(pid) and is_alive(pid, started)
    folder = JobFolder(job_dir)
    st, outcome = read_monitor_files(folder.status, handle.get("run_dir"))
    return observed_status(st, outcome, alive, f"{who} (pid {pid})", folder.cancel.exists())


def logs(path: Path, follow: bool, finished: Callable[[], bool], missing: str) -> Iterator[str]:
    """Lines of a rank log; with ``follow``, until ``finished()`` and the file is drained. ``missing``: the
    error when the log does not exist yet and the caller does not follow."""
    if not follow and not path.exists():
        raise LauncherError(missing)
    yield from follow_file(path, finished if follow else None)


@contextlib.contextmanager
def launch_folder(job_dir: Path, spec: JobSpec, dry: DryRun) -> Iterator[Path]:
    """The job folder for a new launch, with ``spec.json`` and ``plan.json`` (``dry``, what the monitor will
    execute) written: a resume (the caller holds the experiment's lock and saw the last launch end) first
    clears what the previous launch left. If the block raises, nothing of this launch is left behind (a new
    folder is removed; a resumed one is cleared again)."""
    from launcher.spec import spec_to_dict

    created = not job_dir.exists()
    if not created:
        clear_previous_launch(job_dir, spec.id)
    job_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        write_json_atomic(JobFolder(job_dir).spec, spec_to_dict(spec))
        write_plan(job_dir, dry)
        yield job_dir
    except BaseException:
        if created:
            shutil.rmtree(job_dir, ignore_errors=True)
        else:
            clear_previous_launch(job_dir, spec.id)
        raise


def write_plan(job_dir: Path, dry: DryRun) -> None:
    """``plan.json``: what this launch executes, ``dry`` (``dry_run``, as ``--dry-run --json`` prints it) and the
    backend's own plan (``plan``). Every backend's submit writes it once (the Slurm backend too)."""
    write_json_atomic(JobFolder(job_dir).plan, {"dry_run": dry.to_json(), "plan": dry.plan})


def read_plan(job_dir: Path) -> dict:
    """The ``plan.json`` :func:`launch_folder` wrote (``dry_run`` and ``plan``); a LauncherError without one."""
    folder = JobFolder(job_dir)
    plan = read_json(folder.plan)
    if not isinstance(plan, dict) or not isinstance(plan.get("dry_run"), dict):
        raise LauncherError(f"{folder.plan} is missing or unreadable: this launch's plan was not written by "
                            f"`launcher submit`; resume the experiment to launch it again")
    return plan


def clear_previous_launch(job_dir: Path, exp_id: str) -> None:
    """Before a resume (the caller holds the experiment's lock): kill whatever a lost monitor left behind and
    remove the previous launch's files."""
    kill_marked(exp_id)
    remove_dead_scratch(exp_id)
    for name in JobFolder.MONITOR_FILES:
        (job_dir / name).unlink(missing_ok=True)


def cancel(job_dir: Path, handle: JobHandle, start_key: str, sig: int, grace_s: float, leftover_wait_s: float,
           current: JobStatus) -> None:
    """Stop a running job: ``cancel`` file, ``sig`` to the monitor, SIGKILL after ``grace_s``, then every
    process still marked with the experiment id (after waiting up to ``leftover_wait_s`` for them to go)."""
    if current.state.is_terminal():
        return
    folder = JobFolder(job_dir)
    folder.cancel.touch()
    pid, started = monitor_of(handle, start_key)
    if pid and is_alive(pid, started):
        os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while is_alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_alive(pid, started):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + leftover_wait_s
    while marked_processes(handle.experiment_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill_marked(handle.experiment_id)
    remove_dead_scratch(handle.experiment_id)  # the TMPDIRs of ranks killed before they could remove them
    st = read_json(folder.status) or {}
    if not JobState(st.get("state", "pending")).is_terminal():
        try:
            write_json_atomic(folder.status,
                              {**st, "state": JobState.CANCELLED.value, "reason": "cancelled", "ended": time.time()})
        except OSError:  # a full disk: the `cancel` file already makes the job read as cancelled
            pass


def marked_processes(exp_id: str) -> list:
    """This node's live processes of the experiment: ``DETLAUNCH_EXPERIMENT_ID=exp_id`` in their environment
    (except Ray's cluster-wide singleton actors, which inherit it from whichever job created them)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == os.getpid() or proc.environ().get(EXPERIMENT_ENV) != exp_id:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE or " ".join(proc.cmdline()).startswith(SHARED_RAY_ACTORS):
                continue
            found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_marked(exp_id: str) -> list[int]:
    """SIGKILL every live process of the experiment on this node; their pids."""
    import psutil

    hit = []
    for proc in marked_processes(exp_id):
        try:
            proc.kill()
            hit.append(proc.pid)
        except psutil.Error:
            pass
    return hit


def kill_tree(pid: int, include_root: bool = True) -> None:
    """SIGKILL ``pid``'s descendants and, optionally, ``pid`` itself."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + ([root] if include_root else [])
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
