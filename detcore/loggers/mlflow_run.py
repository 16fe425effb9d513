"""A training run as an MLflow run: the resolved config as params, tags, metrics by iteration, checkpoints.

Every request goes through :class:`~detcore.loggers.writer.Sender` (one daemon thread), so a slow or
down tracking server never stalls training; opening the run waits at most :data:`OPEN_TIMEOUT_S`.
An http(s) tracking URI is asked for ``/health`` first, so a server that is down costs seconds,
not the client's minutes of retries.
"""
from __future__ import annotations

import atexit
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

from detcore.loggers.settings import MlflowSettings, flatten_params
from detcore.loggers.writer import RunContext, RunWriter, Sender, one_line

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 120.0   # creating or reopening the run (a first SQLite store creates its tables)
FINISH_TIMEOUT_S = 60.0  # sending what is queued when training ends
EXIT_TIMEOUT_S = 10.0    # the same when the process exits before the end (a crash, a stop)
HEALTH_TIMEOUT_S = 5.0


class MlflowWriter(RunWriter):
    kind, label = "mlflow", "MLflow"

    @staticmethod
    def where(settings: MlflowSettings) -> str:
        import mlflow

        return settings.tracking_uri or mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI, else MLflow's default

    def __init__(self, settings: MlflowSettings, ctx: RunContext) -> None:
        from mlflow.tracking import MlflowClient

        self.settings, self.ctx = settings, ctx
        self.uri = self.where(settings)
        self.experiment_id = ""
        check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.sender = Sender(self.label)
        self.run_id = self.sender.call(self._open, OPEN_TIMEOUT_S)
        self.finished = False
        atexit.register(self._at_exit)

    def address(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return self.uri

    # ---- opening (on the sender thread) ----------------------------------------------------
    def _open(self) -> str:
        from mlflow.exceptions import MlflowException

        run = None
        if self.ctx.choice.run_id:
            try:
                run = self.client.get_run(self.ctx.choice.run_id)
            except MlflowException as exc:
                logger.warning("MLflow: run %s of this work dir is gone from %s (%s); starting a new run",
                               self.ctx.choice.run_id, self.uri, one_line(exc, 120))
            if run is not None and run.info.lifecycle_stage == "deleted":
                logger.warning("MLflow: run %s of this work dir was deleted; starting a new run", run.info.run_id)
                run = None
        tags = {**self.ctx.tags(), **{str(k): str(v) for k, v in self.settings.tags.items()}}
        if run is None:
            run = self.client.create_run(self._experiment_id(), run_name=self.settings.run_name or self.ctx.name,
                                         tags=tags)
            old: Mapping[str, str] = {}
        else:
            self.client.update_run(run.info.run_id, status="RUNNING")
            old = run.data.params
        run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        self._send_params(run_id, old, tags)
        return run_id

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.settings.exp_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=self.settings.artifact_location)
            except MlflowException:  # another job of the sweep created it first
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise RuntimeError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore "
                               f"--experiment-id {found.experiment_id}) or set exp_name to another name")
        return found.experiment_id

    def _send_params(self, run_id: str, old: Mapping[str, str], tags: Mapping[str, str]) -> None:
        """The resolved config (and the entry's ``params``) as params. MLflow never changes a param, so on
        a reopened run a value that changed since is kept as tag ``param_changed.<key>`` instead."""
        from mlflow.entities import Param, RunTag
        from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

        params = flatten_params({**self.ctx.config, **dict(self.settings.params)},
                                only=self.settings.tracked_config_keys,
                                key_limit=MAX_ENTITY_KEY_LENGTH, value_limit=MAX_PARAM_VAL_LENGTH)
        new = [Param(k, v) for k, v in params.items() if k not in old]
        changed = {k: v for k, v in params.items() if k in old and old[k] != v}
        if changed:
            logger.info("MLflow: %d param(s) changed since run %s started (%s); MLflow keeps the first values, the "
                        "new ones are tags param_changed.<key>", len(changed), run_id, ", ".join(sorted(changed)[:5]))
        limit = MAX_TAG_VAL_LENGTH
        run_tags = [RunTag(k, v[:limit]) for k, v in tags.items() if len(k) <= MAX_ENTITY_KEY_LENGTH]
        run_tags += [RunTag(f"param_changed.{k}"[:MAX_ENTITY_KEY_LENGTH], v[:limit]) for k, v in changed.items()]
        self.client.log_batch(run_id, params=new, tags=run_tags)  # the client sends 100 per request

    # ---- while training ---------------------------------------------------------------------
    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, step) for k, v in values.items()]

        def send() -> None:
            self.client.log_batch(self.run_id, metrics=metrics)
            self.ctx.ledger.sent(step)

        self.sender.submit(send)

    def upload(self, paths: list[Path]) -> None:
        for path in paths:
            self.sender.submit(lambda p=path: self.client.log_artifact(self.run_id, str(p), "checkpoints"))

    def finish(self, finished: bool, timeout: float = FINISH_TIMEOUT_S) -> None:
        if self.finished:
            return
        self.finished = True
        status = "FINISHED" if finished else "KILLED"
        self.sender.submit(lambda: self.client.set_terminated(self.run_id, status))
        if not self.sender.drain(timeout):
            logger.warning("MLflow: %d update(s) of run %s not sent in %g s (%s is not answering); the run keeps "
                           "what it received", self.sender.pending(), self.run_id, timeout, self.uri)
        self.sender.close()
        atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        """A process that ends before the last iteration (a crash, a stop signal) leaves the run KILLED, not
        RUNNING forever; a resume sets it RUNNING again."""
        self.finish(False, EXIT_TIMEOUT_S)


def check_reachable(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise ConnectionError when an http(s) tracking server does not answer ``/health`` within ``timeout`` s
    (other stores, such as a local ``sqlite:`` or ``file:`` one, are not probed)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):  # noqa: S310 - http(s) only
            pass
    except urllib.error.HTTPError:
        return  # it answers (a proxy may guard /health): the client will say more
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ConnectionError(f"the tracking server {uri} does not answer ({one_line(reason, 120)})") from None
