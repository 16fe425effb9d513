"""Join a second Ray node, on this machine and on 127.0.0.1 only, to a head from ``start.sh``.

    python3 cluster/ray/add_node.py --address 127.0.0.1:6379 [--num-cpus 2] [--timeout 120]

For testing multi-node jobs on one machine. ``start.sh`` keeps the head on loopback with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's single-node mode), and in that mode the
``ray start --address`` command refuses to add a node. A node is just a raylet registered with
the head's GCS, so this does what ``ray start --address`` does (and what Ray's own
``ray.cluster_utils.Cluster.add_node`` does in Ray's tests): it starts one through
``ray._private.node.Node`` with ``node_ip_address=127.0.0.1``, detached, and returns once the
head lists it. The raylet's command line names the head's GCS address and temp dir, so
``stop.sh --port P --temp-dir D`` stops it with the head.

Ray's private API: checked against the Ray versions ``pyproject.toml`` allows (2.40+).
Prints the new node's id on stdout.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(prog="cluster/ray/add_node.py", description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the head's GCS address, 127.0.0.1:PORT")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--min-worker-port", type=int, help="default: the start of launcher/resources/ports.py's Ray range")
    parser.add_argument("--max-worker-port", type=int, help="default: the end of launcher/resources/ports.py's Ray range (give "
                        "each node on one machine its own part of it)")
    args = parser.parse_args()
    if not args.address.startswith(("127.", "localhost:")):
        print(f"add_node.py: --address must be a loopback head (127.0.0.1:PORT), got {args.address!r}",
              file=sys.stderr)
        return 2
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before `import ray`: everything stays on 127.0.0.1
    import ray
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    from launcher.resources.ports import RAY_WORKER_PORTS

    params = RayParams(gcs_address=args.address, node_ip_address="127.0.0.1", num_cpus=args.num_cpus, num_gpus=0,
                       min_worker_port=args.min_worker_port or RAY_WORKER_PORTS.first,
                       max_worker_port=args.max_worker_port or RAY_WORKER_PORTS.last,
                       node_manager_port=0, include_log_monitor=False, object_store_memory=150 * 2 ** 20)
    node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
    ray.init(address=args.address, log_to_driver=False, logging_level="ERROR")
    deadline = time.monotonic() + args.timeout
    try:
        while not any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()):
            if time.monotonic() > deadline:
                print(f"add_node.py: the new node did not register with {args.address} within {args.timeout:.0f} s",
                      file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        ray.shutdown()
    print(node.node_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
