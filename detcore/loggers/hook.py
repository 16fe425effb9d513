"""The trainer hook that sends a run to MLflow and W&B (rank 0 only).

At the start it opens each logger's run (:func:`~detcore.loggers.runs.choose_run`: a resume or a
restart continues the experiment's run) and sends the resolved config; then it sends what the
trainer logs (each record of its :class:`~detcore.engine.metrics_log.MetricsLog`: the text log's averages every ``log_config.interval``
iterations, or every logger ``interval``, and the metrics of each evaluation), keyed by
iteration, skipping the iterations the run already holds; at the end it uploads the checkpoints
(``log_model``) and closes the run. A logger that cannot be reached is one warning: training
goes on without it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from detcore.contract import BACKEND_ENV, EXPERIMENT_ENV, WorkDir
from detcore.engine.hooks import HookBase
from detcore.engine.metrics_log import scalar_values
from detcore.loggers.runs import Ledger, SavedRun, choose_run, read_record
from detcore.loggers.settings import LoggerSettings, enabled_loggers
from detcore.loggers.writer import RunContext, RunWriter, one_line

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenRun:
    """A logger's open run: where it lives, and the iterations it held when this start opened it."""

    writer: RunWriter
    settings: LoggerSettings
    where: str
    held: int


def writer_class(kind: str) -> type[RunWriter]:
    if kind == "mlflow":
        from detcore.loggers.mlflow_run import MlflowWriter

        return MlflowWriter
    from detcore.loggers.wandb_run import WandbWriter

    return WandbWriter


class ExperimentLoggerHook(HookBase):
    """Sends the run to each logger of ``settings``; its state (in every checkpoint) names their runs."""

    def __init__(self, settings: list[LoggerSettings], environ: Mapping[str, str]) -> None:
        self.settings = list(settings)
        self.experiment = environ.get(EXPERIMENT_ENV) or None
        self.backend = environ.get(BACKEND_ENV) or None
        self.open: dict[str, OpenRun] = {}
        self.saved: dict[str, SavedRun] = {}  # the runs the resumed checkpoint names

    def before_train(self) -> None:
        t = self.trainer
        if not t.dist.is_main:
            return
        for settings in self.settings:
            self._open(settings)
        if self.open:
            t.metrics.add_sink(self.send)

    def _open(self, settings: LoggerSettings) -> None:
        t = self.trainer
        cls = writer_class(settings.kind)
        try:
            where = cls.where(settings)
            choice = choose_run(self.saved.get(settings.kind), read_record(t.work_dir, settings.kind), where=where,
                                resumed_at=t.iter if t.resumed else None, experiment=self.experiment)
            ledger = Ledger(t.work_dir, settings.kind, where, self.experiment, choice.logged_through)
            ctx = RunContext(work_dir=Path(t.work_dir), config=t.cfg, name=Path(t.work_dir).resolve().name,
                             experiment=self.experiment, backend=self.backend, choice=choice, ledger=ledger)
            writer = cls(settings, ctx)
        except Exception as exc:  # a dashboard that is down (or refuses us) never stops training
            logger.warning("%s: not logging this run (%s); training goes on", cls.label, one_line(exc))
            return
        ledger.opened(writer.run_id)
        self.open[settings.kind] = OpenRun(writer, settings, where, choice.logged_through)
        continued = choice.run_id == writer.run_id
        why = choice.why if continued or choice.run_id is None else f"run {choice.run_id} could not be reopened"
        held = f"; iterations up to {choice.logged_through} are not sent again" if choice.logged_through else ""
        logger.info("%s: %s run %s at %s (%s%s)", cls.label, "continuing" if continued else "new", writer.run_id,
                    writer.address(), why, held)

    def send(self, record: Mapping[str, Any], prefix: str, step: int) -> None:
        """A record of the metrics log to every open run, unless the run already holds its iteration."""
        step = int(record.get("iter", step))
        values = scalar_values(record, prefix)
        for run in self.open.values():
            if step <= run.held or not values:
                continue
            if prefix == "train" and step % run.settings.interval and step != self.trainer.max_iters:
                continue
            run.writer.log_metrics(values, step)

    def after_train(self) -> None:
        for run in self.open.values():
            if run.settings.log_model:
                run.writer.upload(self._checkpoints())
            run.writer.finish(True)

    def _checkpoints(self) -> list[Path]:
        """The newest checkpoint and the best ones (``best_*.pth``)."""
        work = Path(self.trainer.work_dir)
        newest = [p for p in [WorkDir(work).newest_checkpoint()] if p is not None]
        return [p for p in [*newest, *sorted(work.glob("best_*.pth"))] if p.is_file()]

    def state_dict(self) -> dict:
        runs = {kind: asdict(saved) for kind, saved in self.saved.items()}  # a logger down this time keeps its run
        for kind, run in self.open.items():
            runs[kind] = {"run_id": run.writer.run_id, "where": run.where}
        return {"experiment_loggers": runs}

    def load_state_dict(self, state: dict) -> None:
        runs = state.get("experiment_loggers") if isinstance(state, dict) else None
        for kind, data in (runs.items() if isinstance(runs, dict) else ()):
            saved = SavedRun.from_dict(data)
            if saved is not None:
                self.saved[str(kind)] = saved


def experiment_logger_hook(cfg: Mapping[str, Any], environ: Mapping[str, str] | None = None
                           ) -> ExperimentLoggerHook | None:
    """The hook for the loggers ``cfg``, the tools' variables and ``DETCORE_LOGGERS`` switch on (None when
    none is)."""
    environ = os.environ if environ is None else environ
    settings = enabled_loggers(cfg, environ)
    return ExperimentLoggerHook(settings, environ) if settings else None
