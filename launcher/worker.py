"""``python -m launcher.worker [--log-dir D] [--attempts-file F] -- MODULE ARGS...``: the worker shim.

Every local worker runs through this shim, in the worker process itself (no extra process):

1. Its stdout and stderr are appended to ``D/rank{RANK}.log`` (every attempt appends).
2. One JSON line per attempt goes to ``F``: rank, attempt (``TORCHELASTIC_RESTART_COUNT``),
   ``MASTER_ADDR``/``MASTER_PORT``, pid, ``CUDA_VISIBLE_DEVICES``. The supervisor reads
   restarts and ports from it.
3. On a restart (attempt > 0) the worker continues from the newest checkpoint: a ``--resume``
   value becomes ``auto``, or ``--resume auto`` is added for a ``train`` command. (detcore
   itself namespaces torchrun's store per attempt, see ``detcore.engine.dist.attempt_store``.)
4. Then ``MODULE`` runs as ``__main__`` with ``ARGS`` (``runpy``), exactly as ``python -m``.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time


def attempt_number() -> int:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or os.environ.get("SLURM_RESTART_COUNT") or 0)


def restart_argv(argv: list[str], attempt: int) -> list[str]:
    """Worker arguments for ``attempt``: from the second attempt on, resume from the newest checkpoint."""
    if attempt == 0 or not argv or argv[0] != "train":
        return list(argv)
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--resume" and i + 1 < len(out):
            out[i + 1] = "auto"
            return out
        if arg.startswith("--resume="):
            out[i] = "--resume=auto"
            return out
    return out + ["--resume", "auto"]


def redirect_output(log_dir: str, rank: int) -> None:
    """Append this process's stdout and stderr (fds 1 and 2) to ``log_dir/rank{rank}.log``."""
    os.makedirs(log_dir, exist_ok=True)
    fd = os.open(os.path.join(log_dir, f"rank{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _record_attempt(path: str, rank: int, attempt: int) -> None:
    record = {"rank": rank, "attempt": attempt, "pid": os.getpid(), "time": time.time(),
              "master_addr": os.environ.get("MASTER_ADDR"), "master_port": int(os.environ.get("MASTER_PORT") or 0),
              "world_size": int(os.environ.get("WORLD_SIZE") or 1),
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        sys.exit("usage: python -m launcher.worker [--log-dir D] [--attempts-file F] -- MODULE [ARGS...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m launcher.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", help="append this rank's stdout/stderr to LOG_DIR/rank{RANK}.log")
    parser.add_argument("--attempts-file", help="append one JSON line per attempt (rank, attempt, port, pid)")
    args = parser.parse_args(argv[:split])
    module, worker_args = argv[split + 1], argv[split + 2:]
    rank = int(os.environ.get("RANK") or 0)
    attempt = attempt_number()
    if args.log_dir:
        redirect_output(args.log_dir, rank)
    if args.attempts_file:
        _record_attempt(args.attempts_file, rank, attempt)
    sys.argv = [module, *restart_argv(worker_args, attempt)]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
