"""What every experiment logger's open run offers the hook, and the thread that sends MLflow's requests."""
from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from detcore.loggers.runs import Ledger, RunChoice

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What a logger needs to open its run: the resolved ``config`` (sent as params), a default run
    ``name``, the launcher's ``experiment`` id and ``backend`` (None without the launcher), the
    :class:`RunChoice`, and the ``ledger`` to note each iteration sent."""

    work_dir: Path
    config: Mapping[str, Any]
    name: str
    experiment: str | None
    backend: str | None
    choice: RunChoice
    ledger: Ledger

    def tags(self) -> dict[str, str]:
        """The tags every run carries: the launcher's experiment id and backend, the work dir and config."""
        tags = {"detlaunch.work_dir": str(self.work_dir.resolve()), "detlaunch.config": str(self.config.get("filename", ""))}
        if self.experiment:
            tags["detlaunch.experiment_id"] = self.experiment
        if self.backend:
            tags["detlaunch.backend"] = self.backend
        return tags


class RunWriter(ABC):
    """One open run of an experiment logger, on rank 0. Opening it (the constructor) raises when the
    logger cannot be reached; afterwards a failure to send is a warning, never a training error."""

    kind: str
    label: str
    run_id: str
    settings: Any

    @staticmethod
    @abstractmethod
    def where(settings: Any) -> str:
        """Where runs of ``settings`` live (a tracking URI, a W&B ``entity/project``), known before opening."""

    def address(self) -> str:
        """Where a person finds the run (a page, or the store and project)."""
        return self.where(self.settings)

    @abstractmethod
    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        """Send ``values`` (``train/loss``, ``val/bbox_AP``, ...) at iteration ``step``."""

    @abstractmethod
    def upload(self, paths: list[Path]) -> None:
        """Send checkpoint files (``log_model``)."""

    @abstractmethod
    def finish(self, finished: bool) -> None:
        """Close the run: finished, or stopped before its last iteration (a resume reopens it)."""


class Sender:
    """Runs one logger's network calls in order on a daemon thread, so training never waits on a
    tracking server: MLflow's client retries a failing request for minutes. Hand-written because
    MLflow's own asynchronous logging (and a ThreadPoolExecutor) makes the process wait for every
    pending request at exit, without a bound.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._queue: queue.Queue = queue.Queue()
        self._failures = 0
        self._thread = threading.Thread(target=self._loop, name=f"{label}-sender", daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], Any]) -> None:
        self._queue.put(call)

    def call(self, call: Callable[[], Any], timeout: float) -> Any:
        """Run ``call`` on the thread and return its result; its exception, or TimeoutError after ``timeout`` s."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = call()
            except BaseException as exc:  # handed to the caller
                box["error"] = exc
            finally:
                done.set()

        self._queue.put(run)
        if not done.wait(timeout):
            raise TimeoutError(f"no answer in {timeout:g} s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def drain(self, timeout: float) -> bool:
        """Wait until everything submitted so far was tried; False when ``timeout`` s passed first."""
        done = threading.Event()
        self._queue.put(done.set)
        return done.wait(timeout)

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """End the thread after what is queued (it is a daemon: a thread still waiting on a server dies with
        the process)."""
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            try:
                call()
            except Exception as exc:  # a dashboard that is down never stops training
                self._failures += 1
                if self._failures == 1:
                    logger.warning("%s: could not send (%s); training goes on and later points are still tried",
                                   self.label, one_line(exc))


def one_line(exc: object, limit: int = 300) -> str:
    """``exc`` as one short line (tracking clients raise multi-line messages with whole responses)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
