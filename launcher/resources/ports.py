"""The TCP port ranges the launcher's clusters use, stated once (pure data, stdlib only).

* Ray worker ports (``ray start --min-worker-port/--max-worker-port`` in ``cluster/ray/start.sh``):
  10002-15999, Ray's default start, ending below the test Slurm cluster's daemons.
* Slurm ``MASTER_PORT`` (``launcher.backends.slurm.task.master_port``): 20000-31999.
* Both lie below Linux's ephemeral range (``net.ipv4.ip_local_port_range``, 32768-60999 by
  default), from which the kernel picks the local port of every outgoing connection, and clear
  of the fixed ports of the test clusters (``cluster/ray/start.sh``, ``cluster/slurm/start.sh``).

``python -m launcher.resources.ports ray-workers`` prints ``MIN MAX`` for shell scripts; ``python -m
launcher.resources.ports`` prints every range and exits non-zero if two overlap.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class PortRange:
    """Ports ``first`` to ``last``, both included."""

    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def overlaps(self, other: PortRange) -> bool:
        return self.first <= other.last and other.first <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


RAY_WORKER_PORTS = PortRange(10002, 15999)
SLURM_MASTER_PORTS = PortRange(20000, 31999)
SLURM_MASTER_PORT_BASE = SLURM_MASTER_PORTS.first
SLURM_MASTER_PORT_SPAN = SLURM_MASTER_PORTS.size
EPHEMERAL_PORTS = PortRange(32768, 60999)  # Linux's default ip_local_port_range
# Fixed ports of the local test clusters (their start.sh defaults): Ray GCS, dashboard, Ray Client;
# Slurm's MariaDB, slurmctld, slurmdbd and the two emulated slurmd nodes.
TEST_CLUSTER_PORTS = {"ray-gcs": PortRange(6379, 6379), "ray-dashboard": PortRange(8265, 8265),
                      "ray-client": PortRange(10001, 10001), "slurm-mariadb": PortRange(16306, 16306),
                      "slurmctld": PortRange(16817, 16817), "slurmdbd": PortRange(16819, 16819),
                      "slurmd": PortRange(17001, 17002)}


def all_ranges() -> dict[str, PortRange]:
    """Every range above by name."""
    return {"ray-workers": RAY_WORKER_PORTS, "slurm-master-port": SLURM_MASTER_PORTS,
            "linux-ephemeral": EPHEMERAL_PORTS, **TEST_CLUSTER_PORTS}


def overlaps(ranges: dict[str, PortRange]) -> list[tuple[str, str]]:
    """The pairs of names whose ranges share a port (pure; empty when the plan is sound)."""
    items = sorted(ranges.items())
    return [(a, b) for i, (a, ra) in enumerate(items) for b, rb in items[i + 1:] if ra.overlaps(rb)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ranges = all_ranges()
    if args:
        if len(args) != 1 or args[0] not in ranges:
            print(f"usage: python -m launcher.resources.ports [{'|'.join(ranges)}]", file=sys.stderr)
            return 2
        print(ranges[args[0]].first, ranges[args[0]].last)
        return 0
    for name, r in ranges.items():
        print(f"{name} {r}")
    clashes = overlaps(ranges)
    for a, b in clashes:
        print(f"launcher.resources.ports: error: {a} ({ranges[a]}) overlaps {b} ({ranges[b]})", file=sys.stderr)
    return 1 if clashes else 0


if __name__ == "__main__":
    sys.exit(main())
