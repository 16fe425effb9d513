"""What the Slurm backend asks Slurm: every ``squeue``/``sacct``/``scontrol``/``scancel``/``sbatch`` call.

All of them go through :meth:`SlurmQueries._run`, the one subprocess seam; unit tests replace it
with recorded output. Queries are time-boxed (``QUERY_TIMEOUT_S``): a daemon that does not answer
(slurmctld for ``squeue``, slurmdbd for ``sacct``) is asked once per command, not once per job;
``status`` then raises :class:`SlurmUnreachable` and the experiment keeps its last known state,
marked stale, unless ``sacct`` still knows that the job completed or was cancelled. Also here:
how this cluster takes a GPU count (``scontrol show config``), the failure detail submitit recorded
and where a rank's log is. Nothing is kept in this process but short-lived caches: state lives in
Slurm and the job folder.
"""
from __future__ import annotations

import pickle
import subprocess
import time
from pathlib import Path
from typing import Sequence

from detcore.contract import rank_log
from detcore.facts import read_facts
from launcher.backends.slurm.gpus import GRES, GpuForm, choose_gpu_form, parse_scontrol_config
from launcher.backends.slurm.script import SlurmDefaults
from launcher.backends.slurm.state import (job_status, parse_sacct, parse_squeue, requeue_recorded, sacct_command,
                                           sbatch_error_line, scancel_error_is_harmless, squeue_command)
from launcher.errors import LauncherError
from launcher.spec import JobHandle, JobSpec, JobState, JobStatus

COMMAND_TIMEOUT_S = 120.0  # sbatch: a busy controller may take a while to accept a job
QUERY_TIMEOUT_S = 5.0      # squeue, sacct, scontrol: a controller that is up answers in well under a second
CANCEL_TIMEOUT_S = 30.0
UNREACHABLE_RETRY_S = 30.0  # a daemon that did not answer is asked again after this long (a command that follows)
# which daemon answers each command, and what its clients print when that daemon is down
DAEMON = {"squeue": "slurmctld", "scontrol": "slurmctld", "scancel": "slurmctld", "sbatch": "slurmctld",
          "sacct": "slurmdbd"}
# what the clients print when there is no slurm.conf (configless lookup through DNS SRV records fails)
NOT_CONFIGURED_TEXT = ("resolve_ctls_from_dns_srv", "could not establish a configuration source",
                       "unable to process configuration file", "fetch_config")
UNREACHABLE_TEXT = ("unable to contact slurm controller", "socket timed out", "connection refused",
                    "problem talking to the database", "persistent connection", "connection timed out")
STATUS_TTL_S = 2.0


class SlurmError(LauncherError):
    """A Slurm command failed; the message is its error output in one line."""


class SlurmUnreachable(SlurmError):
    """A Slurm daemon did not answer (not running, unreachable, or too slow)."""


class SlurmNotConfigured(SlurmUnreachable):
    """No Slurm cluster at all from here: client commands missing, or no slurm.conf to read."""


def no_cluster_line(why: str) -> str:
    """The one line for a submit that finds no Slurm cluster to talk to (``why``: what the client said)."""
    return (f"no Slurm cluster reachable ({why}): point SLURM_CONF at your cluster's slurm.conf and check that "
            f"`sinfo` answers, or start this project's test cluster with cluster/slurm/start.sh and "
            f"`source /tmp/detlaunch-slurm/env.sh`")


class SlurmQueries:
    """The Slurm client side of :class:`~launcher.backends.slurm.backend.SlurmBackend`: its subprocess seam
    and the questions it asks Slurm (a job's status, the cluster's GPU form, a failure's detail, a log)."""

    defaults: SlurmDefaults

    def __init__(self) -> None:
        self._status_cache: dict[str, tuple[float, JobStatus]] = {}
        self._unreachable: dict[str, tuple[float, str]] = {}  # daemon -> (when, why) it did not answer
        self._gpu_form: GpuForm | None = None

    # ---- the one subprocess seam ----------------------------------------------------------
    def _run(self, cmd: Sequence[str]) -> str:
        """Run a Slurm client command, time-boxed; its stdout, or SlurmError with its stderr in one line
        (SlurmUnreachable when its daemon did not answer, now or within the last ``UNREACHABLE_RETRY_S``)."""
        daemon = DAEMON.get(cmd[0], cmd[0])
        known = self._unreachable.get(daemon)
        if known is not None and time.monotonic() - known[0] < UNREACHABLE_RETRY_S:
            raise SlurmUnreachable(known[1])
        timeout = {"sbatch": COMMAND_TIMEOUT_S, "scancel": CANCEL_TIMEOUT_S}.get(cmd[0], QUERY_TIMEOUT_S)
        try:
            proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise SlurmNotConfigured(f"{cmd[0]} not found on PATH") from None
        except subprocess.TimeoutExpired:
            self._unreachable[daemon] = (time.monotonic(), f"{daemon} unreachable: {cmd[0]} did not answer within "
                                                            f"{timeout:g} s")
            raise SlurmUnreachable(self._unreachable[daemon][1]) from None
        if proc.returncode != 0:
            line = sbatch_error_line(proc.stderr or proc.stdout)
            if any(text in line.lower() for text in NOT_CONFIGURED_TEXT):
                self._unreachable[daemon] = (time.monotonic(), f"{cmd[0]} found no slurm.conf: {line.split('; ')[0]}")
                raise SlurmNotConfigured(self._unreachable[daemon][1])
            if any(text in line.lower() for text in UNREACHABLE_TEXT):
                self._unreachable[daemon] = (time.monotonic(), f"{daemon} unreachable: {cmd[0]}: {line}")
                raise SlurmUnreachable(self._unreachable[daemon][1])
            raise SlurmError(f"{cmd[0]} failed: {line}")
        return proc.stdout

    # ---- the cluster --------------------------------------------------------------------------
    def gpu_form(self, specs: Sequence[JobSpec], strict: bool) -> GpuForm | None:
        """How this cluster takes a GPU count, from ``scontrol show config`` (asked once per backend; None when
        no spec asks GPUs or ``slurm.gpu_request`` decides). ``strict`` (a submit): no reachable cluster raises
        its one line; otherwise (a dry run) ``--gres`` is assumed and the reason says so."""
        if self.defaults.gpu_request or not any(s.resources.gpus for s in specs):
            return None
        if self._gpu_form is None:
            try:
                config = parse_scontrol_config(self._run(["scontrol", "show", "config"]))
            except SlurmUnreachable as exc:
                if strict:
                    raise LauncherError(no_cluster_line(str(exc))) from None
                return GpuForm(GRES, f"`scontrol show config` failed ({exc}); --gres works under every select "
                                     f"plugin")
            self._gpu_form = choose_gpu_form(config)
        return self._gpu_form

    # ---- status -------------------------------------------------------------------------------
    def status(self, handle: JobHandle) -> JobStatus:
        from launcher.backends.slurm.task import master_port

        job_id = handle.job_id
        cached = self._status_cache.get(job_id)
        if cached and time.monotonic() - cached[0] < STATUS_TTL_S:
            return cached[1]
        try:
            queue = parse_squeue(self._run(squeue_command(job_id)))
        except SlurmUnreachable as exc:
            return self._status_from_accounting(job_id, str(exc))
        except SlurmError as exc:
            if "invalid job id" not in str(exc).lower():
                raise
            queue = []
        events = read_facts(handle.get("run_dir")) if handle.get("run_dir") else []
        records = []
        # sacct: the final state, and why a requeued job was requeued when rank 0 did not record it (NODE_FAIL,
        # or someone's scontrol requeue); a running job that was never requeued costs one squeue only
        if not queue or queue[0].state == "COMPLETING" or (queue[0].restarts and (
                queue[0].state == "PENDING" or not requeue_recorded(events, queue[0].restarts - 1))):
            records = parse_sacct(self._run(sacct_command(job_id)))
        st = job_status(job_id, queue, records, master_port, events, lambda: self._failure_detail(handle))
        self._status_cache[job_id] = (time.monotonic(), st)
        return st

    def _status_from_accounting(self, job_id: str, why: str) -> JobStatus:
        """The job's status while squeue does not answer (``why``): its ending when slurmdbd's records say it
        completed or was cancelled (final; a failed job might still be requeued by slurmctld), else
        SlurmUnreachable."""
        from launcher.backends.slurm.task import master_port

        try:
            records = parse_sacct(self._run(sacct_command(job_id)))
        except SlurmUnreachable:
            raise SlurmUnreachable(why) from None
        st = job_status(job_id, [], records, master_port)
        if st.state not in (JobState.SUCCEEDED, JobState.CANCELLED):
            raise SlurmUnreachable(why)
        self._status_cache[job_id] = (time.monotonic(), st)
        return st

    def _failure_detail(self, handle: JobHandle) -> str:
        """The last line of the error submitit recorded for rank 0, for a job whose facts name no failure
        (e.g. a task that failed before its worker started)."""
        folder = handle.get("folder")
        if not folder:
            return ""
        from submitit.core.utils import JobPaths

        path = JobPaths(folder, job_id=handle.job_id, task_id=0).result_pickle
        try:
            with open(path, "rb") as f:
                outcome, payload = pickle.load(f)  # ("error", traceback text) written by submitit's runner
        except (OSError, ValueError, pickle.UnpicklingError, EOFError, TypeError):
            return ""
        if outcome != "error" or not isinstance(payload, str):
            return ""
        lines = [line for line in payload.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    # ---- logs ---------------------------------------------------------------------------------
    def log_path(self, handle: JobHandle, rank: int) -> Path:
        work_dir = handle.get("work_dir")
        if not work_dir:
            raise LauncherError(f"experiment {handle.experiment_id} has no work dir recorded for its Slurm job")
        return rank_log(work_dir, rank)

    def _submitit_log(self, handle: JobHandle, rank: int) -> Path | None:
        """submitit's own stderr log of the task, when the worker never started (e.g. a broken environment)."""
        folder = handle.get("folder")
        if not folder:
            return None
        from submitit.core.utils import JobPaths

        path = JobPaths(folder, job_id=handle.job_id, task_id=rank).stderr
        return path if path.exists() and path.stat().st_size else None

    # ---- cancel -------------------------------------------------------------------------------
    def _scancel(self, job_id: str) -> None:
        try:
            self._run(["scancel", job_id])
        except SlurmError as exc:
            if not scancel_error_is_harmless(str(exc)):
                raise

