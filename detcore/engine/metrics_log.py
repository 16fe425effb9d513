"""A run's metrics behind one writer: ``metrics.jsonl``, TensorBoard and the experiment loggers.

The trainer creates one :class:`MetricsLog` and its hooks log through it (``trainer.metrics``):
each record is appended to the work dir's metrics file (``detcore.contract.WorkDir.metrics``,
read by the launcher), handed to every sink (the MLflow/W&B hook), then written as TensorBoard
scalars at the step it was logged at. Only the writing rank (rank 0) writes; on the others every
call does nothing. The newest evaluation's metrics are kept for ``save_best`` and the closing
summary.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from detcore.contract import WorkDir

if TYPE_CHECKING:
    import torch
    from torch.utils.tensorboard import SummaryWriter

UNMEASURED = -1.0  # pycocotools' value for a metric with nothing to measure (APl of a set without large objects)
RECORD_COORDINATES = ("iter", "epoch", "mode")  # where a record was logged, not values
NOT_SCALARS = ("eta_s",)  # in metrics.jsonl for the launcher (a running job's ETA), not a series to plot

MetricSink = Callable[[Mapping[str, Any], str, int], None]
"""Called with each record, its prefix (``train``, ``val``) and its TensorBoard step."""


def scalar_values(record: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """``record``'s values as scalars named ``prefix/key``, for TensorBoard and the experiment loggers (pure).

    Leaves out the record's coordinates, non-numbers, booleans, and, in evaluation records
    (``prefix`` ``val``), pycocotools' -1 for "nothing to measure", which would plot as a
    constant -1 series; ``metrics.jsonl`` keeps every value.
    """
    return {f"{prefix}/{k}": float(v) for k, v in record.items()
            if k not in RECORD_COORDINATES and k not in NOT_SCALARS
            and isinstance(v, (int, float)) and not isinstance(v, bool) and not (prefix == "val" and v == UNMEASURED)}


class MetricsLog:
    """The one writer of a run's metrics (``writes``: this is the writing rank)."""

    def __init__(self, work_dir: str | os.PathLike, *, writes: bool) -> None:
        self.path = WorkDir(work_dir).metrics
        self.tensorboard_dir = Path(work_dir) / "tb"
        self.writes = writes
        self.latest_validation: dict[str, float] = {}  # the newest evaluation's metrics logged by this process
        self._sinks: list[MetricSink] = []
        self._tb: SummaryWriter | None = None

    def add_sink(self, sink: MetricSink) -> None:
        """Hand ``sink`` every record written from now on (after ``metrics.jsonl``, before TensorBoard).

        A sink that raises stops that record there (later sinks and its TensorBoard scalars are skipped)
        and the error reaches the hook that logged it: sinks catch what they can survive.
        """
        self._sinks.append(sink)

    def open_tensorboard(self, first_step: int, config_text: str) -> None:
        """Start the TensorBoard events, hiding every event an earlier run logged at ``first_step`` or later.

        A resumed run logs from ``iter + 1`` on: events at those steps from the run that wrote the
        checkpoint (and went on past it) are purged (``purge_step``), so each step shows once. A
        fresh start passes 0 (a run killed before its first checkpoint starts over). The config is
        shown as text at ``first_step``.
        """
        if not self.writes:
            return
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(self.tensorboard_dir), purge_step=first_step)
        self._tb.add_text("config", "```\n" + config_text + "\n```", first_step)

    @property
    def shows_images(self) -> bool:
        """True when images logged with :meth:`add_images` are kept (the writing rank, TensorBoard open)."""
        return self._tb is not None

    def add_images(self, tag: str, images: Iterable[torch.Tensor], step: int) -> None:
        """``images`` (CHW) in TensorBoard as ``tag_0``, ``tag_1``, ... at ``step``."""
        if self._tb is not None:
            for i, image in enumerate(images):
                self._tb.add_image(f"{tag}_{i}", image, step)

    def write(self, record: Mapping[str, Any], prefix: str, step: int) -> None:
        """Append ``record`` to ``metrics.jsonl``, hand it to each sink, and write its scalars
        (:func:`scalar_values`) to TensorBoard at ``step``."""
        if not self.writes:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for sink in self._sinks:
            sink(record, prefix, step)
        if self._tb is not None:
            for name, value in scalar_values(record, prefix).items():
                self._tb.add_scalar(name, value, step)
            self._tb.flush()

    def log_training(self, values: Mapping[str, Any], *, epoch: int, step: int) -> None:
        """A ``train`` record: ``{"mode": "train", "epoch", "iter", **values}``."""
        self.write({"mode": "train", "epoch": epoch, "iter": step, **values}, "train", step)

    def log_validation(self, metrics: Mapping[str, float], *, epoch: int, step: int,
                       extra: Mapping[str, float] | None = None) -> None:
        """An evaluation: a ``val`` record ``{"mode": "val", "epoch", "iter", **metrics, **extra}``; ``metrics``
        become :attr:`latest_validation` (``extra``, e.g. the evaluation's wall time, does not)."""
        if not self.writes:
            return
        self.write({"mode": "val", "epoch": epoch, "iter": step, **metrics, **(extra or {})}, "val", step)
        self.latest_validation = dict(metrics)

    def latest(self, key: str) -> float | None:
        """``key`` in the newest evaluation this process logged (None without one, or without ``key``)."""
        return self.latest_validation.get(key)

    def close(self, hparams: Mapping[str, Any] | None, step: int) -> None:
        """Write the HParams summaries (``hparams`` and the metric tags of the newest evaluation, when
        ``hparams`` is not None) and close TensorBoard's file."""
        if self._tb is None:
            return
        if hparams is not None:
            from detcore.engine.hparams import metric_tags, write_hparams

            write_hparams(self._tb, hparams, metric_tags(self.latest_validation), step)
        self._tb.close()
        self._tb = None
