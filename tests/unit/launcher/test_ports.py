"""The port plan: Ray's worker ports, Slurm's MASTER_PORT range and the test clusters' daemons never share a port."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from launcher.resources import ports
from launcher.backends.slurm.task import PORT_BASE, PORT_SPAN, master_port
from launcher.resources.ports import EPHEMERAL_PORTS, RAY_WORKER_PORTS, SLURM_MASTER_PORTS, PortRange, overlaps

ROOT = Path(__file__).resolve().parents[3]


def test_ranges_are_disjoint_and_below_the_ephemeral_range() -> None:
    assert overlaps(ports.all_ranges()) == []
    assert RAY_WORKER_PORTS.last < SLURM_MASTER_PORTS.first and SLURM_MASTER_PORTS.last < EPHEMERAL_PORTS.first == 32768
    assert (RAY_WORKER_PORTS.first, SLURM_MASTER_PORTS.first, SLURM_MASTER_PORTS.last) == (10002, 20000, 31999)
    assert overlaps({"a": PortRange(10, 20), "b": PortRange(20, 30), "c": PortRange(31, 40)}) == [("a", "b")]
    assert subprocess.run([sys.executable, "-m", "launcher.resources.ports"], cwd=ROOT, capture_output=True).returncode == 0


def test_slurm_master_port_uses_the_plan() -> None:
    assert (PORT_BASE, PORT_BASE + PORT_SPAN - 1) == (SLURM_MASTER_PORTS.first, SLURM_MASTER_PORTS.last)
    assert {master_port(j) for j in range(5 * PORT_SPAN)} == set(range(PORT_BASE, PORT_BASE + PORT_SPAN))


def ray_start_dry_run(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DETLAUNCH_RAY_")}
    proc = subprocess.run(["bash", str(ROOT / "cluster/ray/start.sh"), "--dry-run"], env={**environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_ray_start_takes_its_worker_ports_from_the_plan() -> None:
    cmd = ray_start_dry_run()
    assert f"'--min-worker-port={RAY_WORKER_PORTS.first}' '--max-worker-port={RAY_WORKER_PORTS.last}'" in cmd
    assert "'--port=6379'" in cmd and "'--ray-client-server-port=10001'" in cmd
    cmd = ray_start_dry_run(DETLAUNCH_RAY_MIN_WORKER_PORT="32000", DETLAUNCH_RAY_MAX_WORKER_PORT="32499")
    assert "'--min-worker-port=32000' '--max-worker-port=32499'" in cmd  # a second head beside the first


def test_test_cluster_ports_match_their_start_scripts() -> None:
    """The fixed ports in launcher/resources/ports.py are the start scripts' defaults (so the overlap check is about them)."""
    defaults = {}
    for script in ("cluster/slurm/start.sh", "cluster/ray/start.sh"):
        text = (ROOT / script).read_text()
        defaults.update({k: int(v) for k, v in re.findall(r'"\$\{(DETLAUNCH_\w+):-(\d+)\}"', text)})
    fixed = ports.TEST_CLUSTER_PORTS
    assert defaults["DETLAUNCH_SLURMCTLD_PORT"] == fixed["slurmctld"].first
    assert defaults["DETLAUNCH_SLURMDBD_PORT"] == fixed["slurmdbd"].first
    assert defaults["DETLAUNCH_SLURM_MYSQL_PORT"] == fixed["slurm-mariadb"].first
    assert defaults["DETLAUNCH_SLURMD_PORT"] == fixed["slurmd"].first
    assert defaults["DETLAUNCH_RAY_CLIENT_PORT"] == fixed["ray-client"].first
    assert defaults["DETLAUNCH_RAY_DASHBOARD_PORT"] == fixed["ray-dashboard"].first
