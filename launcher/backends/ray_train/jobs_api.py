"""The Ray driver as a Ray job: submitted, read and stopped through the head's job-submission API.

With ``--address http(s)://HEAD:8265`` (the dashboard) the run monitor, the same
:mod:`launcher.backends.ray_train.driver` a local submit starts detached, is the entrypoint of a
Ray job (``JobSubmissionClient.submit_job``). Ray runs it on the head, so it outlives the
submitting machine, and ``ray job status/logs/stop`` work beside ``launcher``. The Ray job's
submission id is derived from the experiment and the launch (:func:`submission_id`), so a resume is
a new Ray job and the row names the one it follows.

The driver's own files (``status.json``, the launch's ``outcome.json``) stay the facts; the Ray
job's state says whether the driver still runs (:func:`observed_job_status`, pure): a Ray job that
ended while the driver recorded no ending is "monitor lost" (killed on the head, or the head lost),
and ``launcher resume`` continues it. The client is one seam (:func:`connect`), replaced in tests.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from launcher.backends.ray_train.plan import Address, parse_address
from launcher.errors import LauncherError
from launcher.runtime.job_folder import JobFolder
from launcher.runtime.monitor import observed_status, read_monitor_files
from launcher.spec import JobSpec, JobState, JobStatus

API_KEY = "api"  # JobHandle extra: "jobs" when the driver is a Ray job
API_JOBS = "jobs"
RUNNING_STATES = ("PENDING", "RUNNING")
ENDED_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


def submission_id(spec: JobSpec) -> str:
    """The Ray job's submission id: the experiment and its launch (a resume is a new Ray job)."""
    return f"detlaunch-{spec.id}" + (f"-{spec.run_id}" if spec.run_id else "")


def stop_env(grace_s: float) -> dict[str, str]:
    """Runtime-env variables that make ``stop_job`` a graceful cancel: SIGINT (Ray Train's abort) and
    ``grace_s`` before Ray's job supervisor SIGKILLs the driver (default SIGTERM and 3 s)."""
    return {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": str(int(grace_s))}


def entrypoint(cmd: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    """The Ray job's entrypoint (a shell command line): the driver with ``env``, run from the job's cwd;
    ``exec`` keeps the driver the process Ray's job supervisor watches and signals. The driver's variables
    go here, not into the Ray job's runtime env: Ray refuses to merge a job's ``env_vars`` with the ones the
    driver's own ``ray.init`` passes to its workers when both name a variable."""
    assigns = [f"{k}={v}" for k, v in sorted(env.items())]
    return f"cd {shlex.quote(cwd)} && exec {shlex.join(['env', *assigns, *cmd])}"


def job_api_address(text: str, environ: Mapping[str, str]) -> Address | None:
    """The dashboard address when ``--address`` picks the job API: an ``http(s)://`` address, or ``auto`` with
    ``RAY_ADDRESS`` one (as for ``ray job submit``); None for the local driver (pure)."""
    addr = parse_address(text)
    if addr.is_auto:
        found = (environ.get("RAY_ADDRESS") or "").strip()
        addr = parse_address(found) if found.startswith(("http://", "https://")) else addr
    return addr if addr.jobs else None


def state_name(state: Any) -> str:
    """``ray.job_submission.JobStatus`` (a str enum) or a plain string, as ``"RUNNING"``."""
    return str(getattr(state, "value", state)).upper()


def observed_job_status(ray_state: str | None, driver_status: Mapping | None, outcome: Mapping | None,
                        submission: str, cancel_requested: bool, ray_message: str = "") -> JobStatus:
    """The job's status from the driver's files and the Ray job's state (pure). The driver's recorded ending
    wins; ``ray_state`` None (the job API did not answer) trusts the driver's files; a Ray job still pending
    says so; a Ray job that ended without the driver recording an ending is a lost monitor (or cancelled,
    when ``launcher cancel`` asked)."""
    if ray_state == "PENDING" and not driver_status:
        return JobStatus(JobState.PENDING, reason=f"Ray job {submission} pending: waiting for the cluster to start "
                                                  f"its driver")
    alive = ray_state is None or ray_state in RUNNING_STATES
    detail = f"; Ray: {ray_message.strip()[:200]}" if ray_message.strip() else ""
    who = f"the Ray driver (Ray job {submission}, {ray_state or 'unknown'}{detail})"
    return observed_status(driver_status, outcome, alive, who, cancel_requested)


def connect(address: str) -> Any:
    """A ``JobSubmissionClient`` for ``address`` (the seam tests replace); a LauncherError when the job API
    does not answer or ``ray[default]`` is missing."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise LauncherError(f"--address {address}: the Ray job API needs ray's client ({exc}); "
                            f"pip install 'detlaunch[ray]'") from None
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, or a RuntimeError with the HTTP answer
        raise LauncherError(no_job_api(address, exc)) from None


def no_job_api(address: str, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return (f"no Ray job API at {address}: {first}; start the head with its dashboard (cluster/ray/start.sh "
            f"--dashboard, or `ray start --head --include-dashboard=true`), or pass --address HOST:PORT (the GCS "
            f"port) to run the driver on this machine")


class RayJobs:
    """Submit, read and stop one experiment's driver as a Ray job at ``address``."""

    def __init__(self, address: str, connector: Callable[[str], Any] = connect) -> None:
        self.address = address
        self._connector = connector
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connector(self.address)
        return self._client

    def submit(self, cmd: Sequence[str], cwd: str, env: Mapping[str, str], job_env: Mapping[str, str],
               submission: str) -> str:
        """Submit the driver ``cmd`` with ``env``; ``job_env`` is the Ray job's runtime env (its supervisor's
        variables, e.g. :func:`stop_env`)."""
        try:
            return self.client.submit_job(entrypoint=entrypoint(cmd, cwd, env), runtime_env={"env_vars": dict(job_env)},
                                          submission_id=submission, entrypoint_num_cpus=0)
        except LauncherError:
            raise
        except Exception as exc:
            raise LauncherError(f"Ray's job API at {self.address} refused the driver: "
                                f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None

    def state(self, submission: str) -> tuple[str | None, str]:
        """The Ray job's state name and message; ``(None, why)`` when the API does not answer."""
        try:
            info = self.client.get_job_info(submission)
        except Exception as exc:
            return None, str(exc)
        return state_name(info.status), getattr(info, "message", "") or ""

    def status(self, submission: str, job_dir: Path, run_dir: str | None) -> JobStatus:
        st, outcome = read_monitor_files(JobFolder(job_dir).status, run_dir)
        ray_state, message = self.state(submission)
        return observed_job_status(ray_state, st, outcome, submission, JobFolder(job_dir).cancel.exists(),
                                   message if ray_state in ENDED_STATES else "")

    def stop(self, submission: str, wait_s: float, poll_s: float = 0.5) -> str | None:
        """``stop_job`` (SIGINT to the driver, see :func:`stop_env`), then wait up to ``wait_s`` for the Ray job
        to end; its last state (None when the API does not answer)."""
        try:
            self.client.stop_job(submission)
        except Exception as exc:
            raise LauncherError(f"Ray's job API at {self.address} could not stop {submission}: "
                                f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None
        deadline = time.monotonic() + wait_s
        while True:
            state, _ = self.state(submission)
            if state not in RUNNING_STATES or time.monotonic() >= deadline:
                return state
            time.sleep(poll_s)

    def logs(self, submission: str) -> str:
        """The driver's output as Ray keeps it (``ray job logs``)."""
        try:
            return self.client.get_job_logs(submission)
        except Exception as exc:
            raise LauncherError(f"Ray's job API at {self.address} has no logs for {submission}: "
                                f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None
