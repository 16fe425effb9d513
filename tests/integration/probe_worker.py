"""A cheap worker for tests whose point is the launcher (ports, leases, slots, bursts, recording, process
accounting), not training: ``launcher submit ... --worker-module tests.integration.probe_worker``.

It speaks the worker contract as the detcore trainer does, through the same shim and torchrun: it takes
the trainer's arguments (``train CONFIG --work-dir D ... [--cfg-options runner.max_iters=N ...]``), joins
the gloo group from ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``, all-reduces a tensor, and
writes ``probe<rank>.json`` (the port it met on, the all-reduced sum, the world size). Rank 0 appends one
``mode: train`` record per asked iteration (``ITER_S`` apart) to ``metrics.jsonl``, the way the trainer
does, so the store records ``last_iter`` from it; a long run (``runner.max_iters=10000``) sleeps until the
test cancels it. It builds no model and reads no data: it costs one torch import per rank.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist

ITER_S = 0.1  # one "iteration": a run of 10_000 lasts until a test ends it, yet costs no CPU


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _max_iters(argv: list[str]) -> int:
    """``runner.max_iters`` from ``--cfg-options`` (1 when not given)."""
    if "--cfg-options" not in argv:
        return 1
    for item in argv[argv.index("--cfg-options") + 1:]:
        if item.startswith("runner.max_iters="):
            return int(item.split("=", 1)[1])
    return 1


def main(argv: list[str]) -> int:
    work_dir = _option(argv, "--work-dir")
    os.makedirs(work_dir, exist_ok=True)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.ones(1)
    dist.all_reduce(total)
    if total.item() != world:
        raise RuntimeError(f"all-reduce of ones over {world} ranks gave {total.item()}")
    with open(os.path.join(work_dir, f"probe{rank}.json"), "w") as f:
        json.dump({"port": int(os.environ["MASTER_PORT"]), "sum": total.item(), "world_size": world}, f)
    with open(os.path.join(work_dir, "metrics.jsonl"), "a") if rank == 0 else open(os.devnull, "w") as metrics:
        for it in range(1, _max_iters(argv) + 1):
            time.sleep(ITER_S)
            metrics.write(json.dumps({"mode": "train", "epoch": 0, "iter": it, "loss": 1.0 / it}) + "\n")
            metrics.flush()
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    from detcore.shutdown import skip_exit_collection

    skip_exit_collection()  # as detcore's own program exits (detcore.tools.cli.console)
    sys.exit(code)
