"""Which MLflow / W&B run a training run writes to: one per experiment, across resumes and restarts.

Each logger keeps a small record in the work dir, ``WORK_DIR/loggers/<kind>.json``: the run id,
where it lives (tracking URI, W&B project), the launcher experiment that made it and the newest
iteration sent. The same run id and place also travel in every checkpoint (the logger hook's
state). :func:`choose_run` decides, from those two records, whether this start continues a run
and which iterations that run already holds, so no step is sent twice.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from detcore.atomic import write_text_atomic

LOGGERS_DIR = "loggers"


@dataclass(frozen=True)
class SavedRun:
    """A logger run as recorded: ``where`` is the tracking URI (MLflow) or ``entity/project`` (W&B);
    ``experiment`` the launcher experiment id that started it (None without the launcher);
    ``last_step`` the newest iteration it holds (0: none)."""

    run_id: str
    where: str
    experiment: str | None = None
    last_step: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> SavedRun | None:
        """The record in ``data``, or None when it is not one (an older or foreign file, another hook's state)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("run_id"), str) or not data["run_id"]:
            return None
        step = data.get("last_step", 0)
        experiment = data.get("experiment")
        return cls(data["run_id"], str(data.get("where", "")), experiment if isinstance(experiment, str) else None,
                   step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 0)


@dataclass(frozen=True)
class RunChoice:
    """Continue ``run_id`` (None: start a new run); iterations up to ``logged_through`` are already there."""

    run_id: str | None
    logged_through: int
    why: str


def choose_run(in_checkpoint: SavedRun | None, in_work_dir: SavedRun | None, *, where: str,
               resumed_at: int | None, experiment: str | None) -> RunChoice:
    """The run this start writes to (pure).

    - Resuming from a checkpoint that names a run here: that run. It holds the iterations up to the
      checkpoint's, and up to the work dir's ``last_step`` when the work dir names the same run (a
      run killed after it sent iterations past its newest checkpoint).
    - Resuming from a checkpoint that names no run here (saved before the logger was switched on, or
      when it sent elsewhere): the work dir's run, if it is here.
    - Starting fresh: the work dir's run when the same launcher experiment made it (a restart that
      came before the first checkpoint), else a new run. A fresh start of a finished run's work dir
      without the launcher is a new run: MLflow cannot take back the points the old one sent.
    """
    work = in_work_dir if in_work_dir is not None and in_work_dir.where == where else None
    if resumed_at is not None:
        if in_checkpoint is not None and in_checkpoint.where == where:
            sent = work.last_step if work is not None and work.run_id == in_checkpoint.run_id else 0
            return RunChoice(in_checkpoint.run_id, max(resumed_at, sent), "the checkpoint's run")
        if work is not None:
            return RunChoice(work.run_id, max(resumed_at, work.last_step), "the work dir's run")
        return RunChoice(None, resumed_at, "a new run (neither the checkpoint nor the work dir names one here)")
    if work is not None and experiment is not None and work.experiment == experiment:
        return RunChoice(work.run_id, work.last_step, f"the run of experiment {experiment} (restarted)")
    return RunChoice(None, 0, "a new run")


def record_path(work_dir: str | os.PathLike, kind: str) -> Path:
    """``WORK_DIR/loggers/<kind>.json``."""
    return Path(work_dir) / LOGGERS_DIR / f"{kind}.json"


def read_record(work_dir: str | os.PathLike, kind: str) -> SavedRun | None:
    """The work dir's record of ``kind``'s run (None when there is none or it cannot be read)."""
    try:
        return SavedRun.from_dict(json.loads(record_path(work_dir, kind).read_text()))
    except (OSError, ValueError):
        return None


def write_record(work_dir: str | os.PathLike, kind: str, run: SavedRun) -> None:
    """Replace the work dir's record atomically; errors ignored (a full disk must not stop training: the
    checkpoint still names the run)."""
    path = record_path(work_dir, kind)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(asdict(run), sort_keys=True) + "\n")
    except OSError:
        pass


class Ledger:
    """The work dir's record of one logger's run, kept current as points are sent (any one thread)."""

    def __init__(self, work_dir: str | os.PathLike, kind: str, where: str, experiment: str | None,
                 last_step: int) -> None:
        self.work_dir, self.kind, self.where, self.experiment = work_dir, kind, where, experiment
        self.last_step = last_step
        self.run_id = ""

    def opened(self, run_id: str) -> None:
        self.run_id = run_id
        self._write()

    def sent(self, step: int) -> None:
        """Note that the run now holds iteration ``step``."""
        if step > self.last_step:
            self.last_step = step
            self._write()

    def saved_run(self) -> SavedRun:
        return SavedRun(self.run_id, self.where, self.experiment, self.last_step)

    def _write(self) -> None:
        if self.run_id:
            write_record(self.work_dir, self.kind, self.saved_run())
