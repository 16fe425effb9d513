"""Ray Train callbacks that append what its controller knows to the launch's facts (why: see
:mod:`launcher.backends.ray_train.reports`). They run in Ray Train's controller process, which reaches
the run directory in the work dir like every worker does.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from ray.train import UserCallback

from detcore.facts import Stage, append_fact, read_facts
from launcher.backends.ray_train.reports import failure_facts


class RecordFailures(UserCallback):
    """Appends what Ray Train reports about failed workers to the launch's facts (in its controller)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def after_exception(self, run_context: Any, worker_exceptions: Mapping[int, BaseException]) -> None:
        for fact in failure_facts(worker_exceptions, read_facts(self.run_dir), time.time()):
            append_fact(self.run_dir, fact)


try:  # Ray Train's developer interface for worker-group events
    from ray.train.v2._internal.execution.callback import WorkerGroupCallback
except ImportError:  # pragma: no cover - another Ray: stages come from the workers' facts only
    WorkerGroupCallback = None

if WorkerGroupCallback is not None:
    class RecordStages(WorkerGroupCallback):
        """Appends ``stage`` facts when the controller places a worker group and when its workers started."""

        def __init__(self, run_dir: str) -> None:
            self.run_dir = run_dir

        def before_worker_group_start(self, worker_group_context: Any) -> None:
            append_fact(self.run_dir, Stage(
                stage="placing", workers=getattr(worker_group_context, "num_workers", None),
                resources=dict(getattr(worker_group_context, "resources_per_worker", None) or {}), time=time.time()))

        def after_worker_group_start(self, worker_group: Any) -> None:
            workers = getattr(worker_group, "get_workers", lambda: [])()
            append_fact(self.run_dir, Stage(stage="starting", workers=len(workers) or None, time=time.time()))


def train_callbacks(run_dir: str) -> list:
    """The callbacks for ``RunConfig(callbacks=...)``: failures always, stages where Ray offers them."""
    return [RecordFailures(run_dir)] + ([RecordStages(run_dir)] if WorkerGroupCallback is not None else [])
