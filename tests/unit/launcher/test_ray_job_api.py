"""The Ray driver as a Ray job, without a cluster: addresses, the dry run's choice, and submit/status/logs/cancel
through a fake ``JobSubmissionClient`` (the state mapping of every Ray job state against the driver's files)."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher.backends.ray_train import RayTrainBackend
from launcher.backends.ray_train.driver import job_cluster
from launcher.backends.ray_train.jobs_api import RayJobs, job_api_address, observed_job_status
from launcher.backends.ray_train.plan import RayOptions, parse_address
from launcher.errors import LauncherError
from launcher.jobs import SubmitRequest, build_spec
from launcher.spec import JobState, Resources

ROOT = Path(__file__).resolve().parents[3]
SHAPES = "configs/shapes/faster_rcnn_tiny_shapes.yaml"
API = "http://127.0.0.1:8265"


def spec_for(address: str = API):
    req = SubmitRequest(config=SHAPES, backend="ray", backend_options=RayOptions(address=address),
                        resources=Resources(nproc=2))
    return build_spec(req, cwd=str(ROOT), exp_id="0123abcd")


class FakeJobClient:
    """``JobSubmissionClient``'s calls the backend makes, over a dict of jobs."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.stopped: list[str] = []
        self.answering = True

    def _check(self) -> None:
        if not self.answering:
            raise ConnectionError("Failed to connect to Ray at address: http://127.0.0.1:8265.")

    def submit_job(self, *, entrypoint, runtime_env, submission_id, entrypoint_num_cpus):
        self._check()
        if submission_id in self.jobs:
            raise RuntimeError(f"Request failed with status code 400: Job with submission_id {submission_id} "
                               f"already exists. Please use a different submission_id.")
        self.jobs[submission_id] = {"entrypoint": entrypoint, "runtime_env": runtime_env, "status": "PENDING",
                                    "message": "Job has not started yet."}
        return submission_id

    def get_job_info(self, job_id):
        self._check()
        job = self.jobs[job_id]
        return SimpleNamespace(status=job["status"], message=job["message"])

    def stop_job(self, job_id):
        self._check()
        self.stopped.append(job_id)
        self.jobs[job_id].update(status="STOPPED", message="Job was intentionally stopped.")
        return True

    def get_job_logs(self, job_id):
        return "connected to Ray at 127.0.0.1:6379\nstarting 2 Ray Train workers\n"


@pytest.fixture()
def fake():
    return FakeJobClient()


@pytest.fixture()
def backend(tmp_path, fake, monkeypatch):
    monkeypatch.setattr("launcher.backends.ray_train.driver.check_reachable", lambda address: None)
    be = RayTrainBackend(tmp_path, environ={"PYTHONPATH": ""})
    be._jobs = lambda address: RayJobs(address, connector=lambda a: fake)
    return be


# ---- addresses and the dry run ----------------------------------------------------------------

def test_a_dashboard_address_is_the_job_api():
    assert parse_address("http://10.0.0.5").port == 8265 and parse_address("http://10.0.0.5").jobs
    addr = parse_address("https://head.example:443/")
    assert (addr.host, addr.port, addr.jobs, addr.client, addr.text) == ("head.example", 443, True, False,
                                                                           "https://head.example:443")
    with pytest.raises(LauncherError, match=r"http://HOST:PORT \(the dashboard's job API"):
        parse_address("http://head:99999")
    assert job_api_address("auto", {"RAY_ADDRESS": "http://127.0.0.1:8265"}).port == 8265  # as `ray job submit`
    assert job_api_address("auto", {"RAY_ADDRESS": "127.0.0.1:6379"}) is None
    assert job_api_address("127.0.0.1:6379", {"RAY_ADDRESS": API}) is None
    assert job_api_address("ray://127.0.0.1:10001", {}) is None


def test_the_dry_run_says_which_driver_path_and_why(tmp_path):
    be = RayTrainBackend(tmp_path, environ={"PYTHONPATH": ""})
    jobs = be.dryrun(spec_for())
    note = jobs.notes[0]
    assert note.startswith(f"driver: a Ray job through the job API at {API} (submission id detlaunch-0123abcd-")
    assert "because --address is the dashboard's" in note and "ray job status/logs" in note
    env = dict(jobs.env)
    assert env["RAY_JOB_STOP_SIGNAL"] == "SIGINT" and env["RAY_JOB_STOP_WAIT_TIME_S"] == "45"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # a loopback dashboard: the driver stays on loopback
    local = be.dryrun(spec_for("127.0.0.1:6379")).notes[0]
    assert "(detached, on this machine" in local and "is not a job-API (dashboard) address" in local
    assert "RAY_JOB_STOP_SIGNAL" not in dict(be.dryrun(spec_for("127.0.0.1:6379")).env)


# ---- submit, status, logs, cancel ---------------------------------------------------------------

def test_submit_hands_the_driver_to_ray_as_a_job(backend, fake, tmp_path):
    spec = spec_for()
    handle = backend.submit(spec)
    sid = f"detlaunch-0123abcd-{spec.run_id}"
    assert handle.job_id == sid and handle.get("api") == "jobs" and handle.get("address") == API
    job = fake.jobs[sid]
    cmd = (sys.executable, "-m", "launcher.backends.ray_train.driver", "--home", str(tmp_path), "0123abcd")
    cd, _, run = job["entrypoint"].partition(" && exec ")
    assert cd == f"cd {shlex.quote(str(ROOT))}" and shlex.split(run)[0] == "env"
    assert tuple(shlex.split(run)[-len(cmd):]) == cmd
    env = dict(a.split("=", 1) for a in shlex.split(run)[1:-len(cmd)])
    assert env["DETLAUNCH_EXPERIMENT_ID"] == "0123abcd" and env["PYTHONPATH"] == str(ROOT)
    # the Ray job's own runtime env holds only what its supervisor reads (Ray refuses to merge the same
    # variable from the job and from the driver's ray.init)
    assert job["runtime_env"] == {"env_vars": {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "45"}}
    assert json.loads((tmp_path / "ray" / "0123abcd" / "spec.json").read_text())["id"] == "0123abcd"
    assert backend.status(handle).state is JobState.PENDING
    assert "waiting for the cluster to start its driver" in backend.status(handle).reason


def test_a_refused_submission_is_one_line_and_leaves_no_job_folder(backend, fake, tmp_path):
    spec = spec_for()
    fake.jobs[f"detlaunch-0123abcd-{spec.run_id}"] = {"status": "SUCCEEDED", "message": ""}
    with pytest.raises(LauncherError, match=r"^Ray's job API at http://127.0.0.1:8265 refused the driver: Request "
                                            r"failed with status code 400: Job with submission_id .* already exists"):
        backend.submit(spec)
    assert not (tmp_path / "ray" / "0123abcd").exists()


def write_status(tmp_path: Path, state: str, **extra) -> None:
    (tmp_path / "ray" / "0123abcd" / "status.json").write_text(json.dumps({"state": state, **extra}))


@pytest.mark.parametrize("ray_state, driver_state, expected, reason", [
    ("RUNNING", "running", JobState.RUNNING, "training at iteration 7"),
    ("RUNNING", None, JobState.PENDING, ""),  # the driver has not written its status yet
    ("SUCCEEDED", "succeeded", JobState.SUCCEEDED, "finished on Ray"),
    ("FAILED", "failed", JobState.FAILED, "rank 1: exit code 1"),  # the driver's own verdict wins over Ray's
    ("SUCCEEDED", "running", JobState.FAILED, "monitor lost: the Ray driver (Ray job detlaunch-0123abcd-"),
    ("FAILED", "running", JobState.FAILED, "monitor lost: the Ray driver (Ray job detlaunch-0123abcd-"),
    ("STOPPED", "pending", JobState.FAILED, "monitor lost"),  # someone's `ray job stop`
])
def test_the_row_follows_the_ray_job_reconciled_with_the_drivers_facts(backend, fake, tmp_path, ray_state,
                                                                        driver_state, expected, reason):
    handle = backend.submit(spec_for())
    fake.jobs[handle.job_id].update(status=ray_state, message="Job entrypoint command failed with exit code -9")
    if driver_state:
        write_status(tmp_path, driver_state, reason=reason)
    st = backend.status(handle)
    assert st.state is expected and st.reason.startswith(reason), st
    if reason.startswith("monitor lost") and ray_state == "FAILED":
        assert "FAILED; Ray: Job entrypoint command failed with exit code -9)" in st.reason
        assert "`launcher resume` continues" in st.reason


def test_an_unanswering_job_api_trusts_the_drivers_files(backend, fake, tmp_path):
    handle = backend.submit(spec_for())
    write_status(tmp_path, "running", reason="training at iteration 3")
    fake.answering = False
    st = backend.status(handle)
    assert st.state is JobState.RUNNING and st.reason == "training at iteration 3"


def test_cancel_stops_the_ray_job_and_reads_cancelled(backend, fake, tmp_path):
    handle = backend.submit(spec_for())
    fake.jobs[handle.job_id]["status"] = "RUNNING"
    write_status(tmp_path, "running")
    backend.cancel(handle)
    assert fake.stopped == [handle.job_id] and (tmp_path / "ray" / "0123abcd" / "cancel").exists()
    assert backend.status(handle).state is JobState.CANCELLED
    backend.cancel(handle)  # idempotent: an ended job is not stopped again
    assert fake.stopped == [handle.job_id]


def test_logs_before_any_worker_are_the_drivers_from_ray(backend, fake):
    handle = backend.submit(spec_for())
    assert list(backend.logs(handle)) == ["connected to Ray at 127.0.0.1:6379", "starting 2 Ray Train workers"]


def test_pure_mapping_of_a_pending_ray_job():
    st = observed_job_status("PENDING", None, None, "detlaunch-x", False)
    assert st.state is JobState.PENDING and st.reason.startswith("Ray job detlaunch-x pending")
    assert observed_job_status("STOPPED", None, None, "detlaunch-x", True).state is JobState.CANCELLED


def test_the_driver_of_a_ray_job_connects_to_the_gcs_ray_names():
    api = parse_address(API)
    assert job_cluster(api, {"RAY_ADDRESS": "127.0.0.1:6379"}).text == "127.0.0.1:6379"
    with pytest.raises(LauncherError, match="runs only as a Ray job"):
        job_cluster(api, {})
    with pytest.raises(LauncherError, match="runs only as a Ray job"):
        job_cluster(api, {"RAY_ADDRESS": API})
