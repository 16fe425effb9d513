"""Fixtures shared by the integration tests."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import psutil
import pytest

from tests.integration.helpers import detcore
from tests.integration.launcher_cli import DATA, SHAPES, job_tmp
from tests.integration.leaks import leftovers, open_fds

# tests against the real Slurm or Ray cluster: their jobs' processes, ports and temporary files live in the
# cluster (its daemons, its nodes, its own temp dir), which their own fixtures start and stop
CLUSTER_FIXTURES = {"slurm_cluster", "ray_head", "ray_jobs_head"}


def _on_a_cluster(request: pytest.FixtureRequest) -> bool:
    module = Path(str(request.node.fspath)).name
    return bool(CLUSTER_FIXTURES & set(request.fixturenames)) or module.startswith(("test_ray", "test_slurm"))


@pytest.fixture
def home(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A private LAUNCHER_HOME for one test. After a local-backend test it fails (at teardown, naming each
    thing) when the test's jobs left anything behind: see :mod:`tests.integration.leaks`. Either way, anything
    its jobs left running is killed afterwards, so a failing test cannot starve the tests after it."""
    path = tmp_path / "home"
    checked = not _on_a_cluster(request)
    if checked:
        job_tmp(path).mkdir()  # launcher_cli.env_for gives it to the jobs as their TMPDIR
    fds_before = open_fds()
    yield path
    left = leftovers(path, fds_before, keeps_sockets=request.node.get_closest_marker("keeps_sockets") is not None,
                     tmp_allowed=tuple(m.args[0] for m in request.node.iter_markers("leaves_tmp"))) if checked else []
    survivors = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("LAUNCHER_HOME") == str(path):
                survivors.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in survivors:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(survivors, timeout=10)
    if left:
        pytest.fail(f"{request.node.nodeid} left {len(left)} thing(s) behind:\n  " + "\n  ".join(left), pytrace=False)


@pytest.fixture(scope="session")
def shapes_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One checkpoint of the tiny shapes config for the tests that only need a checkpoint (test jobs on a
    backend, evaluation, fine-tuning): trained once per session by ``detcore train`` itself (2 iterations,
    one process, no launcher). The file is read-only; a test that would change it copies it first."""
    work = tmp_path_factory.mktemp("shapes-checkpoint")
    detcore("train", SHAPES, "--work-dir", str(work), "--no-validate", "--cfg-options", *DATA, "runner.max_iters=2",
            "checkpoint_config.interval=2", "auto_scale_lr.enable=false", timeout=600)
    ckpt = work / (work / "last_checkpoint").read_text().strip()
    ckpt.chmod(0o444)
    return ckpt
