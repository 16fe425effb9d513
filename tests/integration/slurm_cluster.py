"""A real Slurm cluster for the Slurm integration tests: ``cluster/slurm/start.sh --nodes 2``, then ``stop.sh``.

Two emulated nodes (n1, n2, 4 CPUs each) cover both one-node jobs and jobs across nodes.
The fixture never skips: if the cluster cannot start, the tests fail with start.sh's output
(which ends with the daemon logs). Use it from a test module with
``from tests.integration.slurm_cluster import slurm_cluster  # noqa: F401``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "cluster" / "slurm"
CLUSTER_DIR = Path(os.environ.get("DETLAUNCH_SLURM_DIR", "/tmp/detlaunch-slurm"))


@dataclass(frozen=True)
class SlurmCluster:
    env: dict[str, str]     # os.environ plus SLURM_CONF
    nodes: tuple[str, ...]

    def run(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def state(self, job_id: str) -> str:
        """squeue's state of the job ("" once it has left the queue)."""
        return self.run("squeue", "-h", "-j", job_id, "-O", "State:|", check=False).strip().rstrip("|")

    def start_time(self, job_id: str) -> float | None:
        text = self.run("squeue", "-h", "-j", job_id, "-O", "StartTime:|", check=False).strip().rstrip("|")
        try:
            return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None

    def release(self, job_id: str, timeout: float = 60, **fields: str) -> None:
        """Make a requeued job eligible now (Slurm holds it for cred_expire seconds otherwise).

        Waits until the job is PENDING: while it is still COMPLETING, the requeue would set the
        hold again after this update.
        """
        deadline = time.monotonic() + timeout
        while (state := self.state(job_id)) != "PENDING":
            assert time.monotonic() < deadline, f"requeued job {job_id} is {state or 'gone'}, not PENDING"
            time.sleep(0.2)
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", *(f"{k}={v}" for k, v in fields.items()))


def _fail(what: str, proc: subprocess.CompletedProcess | None = None) -> None:
    out = "" if proc is None else (proc.stdout + proc.stderr)[-6000:]
    pytest.fail(f"the Slurm test cluster {what}; see cluster/slurm/README.md\n{out}", pytrace=False)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """Start (or reuse, if the same 2-node cluster already runs) the local cluster; stop it after the session."""
    if os.geteuid() != 0:
        _fail("needs root (slurmd runs jobs as root here)")
    missing = [c for c in ("slurmctld", "slurmd", "slurmdbd", "munged", "sbatch", "mariadbd") if shutil.which(c) is None
               and not Path(f"/usr/sbin/{c}").exists()]
    if missing:
        _fail(f"is not installed (missing {', '.join(missing)}); run sudo cluster/slurm/install.sh")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(SCRIPTS / "start.sh"), "--nodes", "2", "--dir", str(CLUSTER_DIR)],
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        _fail("did not start within 240 s")
    if proc.returncode != 0:
        _fail(f"did not start (start.sh exit {proc.returncode})", proc)
    env_sh = (CLUSTER_DIR / "env.sh").read_text()
    conf = re.search(r"SLURM_CONF=['\"]?([^'\"\n]+)", env_sh)
    if conf is None:
        _fail(f"wrote no SLURM_CONF into {CLUSTER_DIR / 'env.sh'}")
    env = {**os.environ, "SLURM_CONF": conf.group(1)}
    cluster = SlurmCluster(env, ("n1", "n2"))
    print(f"slurm cluster up in {time.monotonic() - t0:.1f} s: {cluster.run('sinfo', '-h').strip()}")
    yield cluster
    subprocess.run(["bash", str(SCRIPTS / "stop.sh"), "--dir", str(CLUSTER_DIR), "--quiet"], capture_output=True,
                   text=True, timeout=120)
