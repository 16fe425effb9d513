"""The plain Ray equivalent of ``launcher submit --backend ray``: a Ray Train ``TorchTrainer`` script.

``python -m benchmarks.plain_ray --address HOST:PORT --workers N --cpus-per-worker C --stamps FILE
-- ARGS...`` is what a user without the launcher writes: ``ray.init`` with the checkout on the
workers' ``PYTHONPATH``, ``TorchTrainer(train_loop, scaling_config=ScalingConfig(num_workers=N,
resources_per_worker={"CPU": C}))`` and ``fit()``. Each worker runs detcore's trainer in-process
(``detcore.tools.cli.main(ARGS)``) on the process group Ray Train already set up, as the launcher's
Ray backend does (detcore's ``init_distributed`` finds the group and uses it), minus the launcher's
facts, rank logs, checkpoint reports and hang watchdog.

The script appends ``{"stage": ..., "time": epoch seconds}`` lines to ``FILE`` (a handful of small
writes): ``driver_start`` (before ``import ray``), ``connected`` (after ``ray.init``),
``worker_loop`` (each rank entering the train loop) and ``fit_done``; the start-up benchmark turns
them into the stage breakdown it shows beside the launcher's.
"""
from __future__ import annotations

import time

_START = time.time()  # noqa: E402 - the first thing this process does

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def stamp(path: str, stage: str, at: float | None = None, **extra: object) -> None:
    """One ``{"stage", "time", ...}`` line appended to ``path`` (a single write, so ranks do not interleave)."""
    with open(path, "a") as f:
        f.write(json.dumps({"stage": stage, "time": time.time() if at is None else at, **extra}) + "\n")


def train_loop_per_worker(config: dict) -> None:
    import importlib

    import ray.train

    stamp(config["stamps"], "worker_loop", rank=ray.train.get_context().get_world_rank())
    os.chdir(config["cwd"])  # Ray starts workers in its session folder
    try:
        code = importlib.import_module(config["module"]).main(list(config["args"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code:
        raise RuntimeError(f"{config['module']} exited with {code}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plain_ray")
    p.add_argument("--address", required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--cpus-per-worker", type=float, required=True)
    p.add_argument("--stamps", required=True)
    p.add_argument("--storage", required=True, help="Ray Train's storage_path")
    p.add_argument("--module", default="detcore.tools.cli")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    stamp(a.stamps, "driver_start", at=_START)

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(address=a.address, runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                                                          "PYTHONUNBUFFERED": "1"}})
    stamp(a.stamps, "connected")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"module": a.module, "args": args, "cwd": os.getcwd(), "stamps": a.stamps},
        scaling_config=ScalingConfig(num_workers=a.workers, resources_per_worker={"CPU": a.cpus_per_worker}),
        run_config=RunConfig(name=f"plain-{Path(a.stamps).parent.name}", storage_path=a.storage))
    result = trainer.fit()
    stamp(a.stamps, "fit_done")
    ray.shutdown()
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
