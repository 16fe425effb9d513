"""Trainer hooks: LR schedule, logging, evaluation and checkpointing are each a small class.

A hook sees the trainer through ``self.trainer``, typed as :class:`TrainerView` (the counters,
model, optimizer, the checkpoints and the metrics log), and may implement any of the five
lifecycle methods; ``state_dict``/``load_state_dict`` carry its state through a resume. Users add
their own with ``custom_hooks: [{type: MyHook, ...}]`` (registered in HOOKS).
"""
from __future__ import annotations

import logging
import math
import time
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from detcore.engine.progress import estimate_eta, iteration_line
from detcore.evaluation.coco_eval import DEFAULT_BACKEND
from detcore.registry import HOOKS

if TYPE_CHECKING:
    import torch

    from detcore.checkpoint_dir import CheckpointDir
    from detcore.engine.dist import DistInfo
    from detcore.engine.metrics_log import MetricsLog

logger = logging.getLogger(__name__)


class TrainerView(Protocol):
    """What a hook uses of the trainer running it (:class:`detcore.engine.trainer.Trainer` is one).

    Counters: ``iter`` (finished steps), ``max_iters``, ``epoch``, ``iters_per_epoch``, ``by_epoch``,
    ``resumed``; ``step_stats`` is the newest step's losses and times. Metrics are logged through
    ``metrics`` (:class:`~detcore.engine.metrics_log.MetricsLog`), checkpoint files handled through
    ``checkpoints`` (:class:`~detcore.checkpoint_dir.CheckpointDir`); hooks assign no trainer attribute.
    """

    cfg: dict[str, Any]
    work_dir: Path
    dist: DistInfo
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    val_loader: Any
    hooks: list[HookBase]
    checkpoints: CheckpointDir
    metrics: MetricsLog
    iter: int
    max_iters: int
    iters_per_epoch: int
    by_epoch: bool
    resumed: bool
    step_stats: dict[str, float]

    @property
    def epoch(self) -> int: ...

    def at_boundary(self, interval: int) -> bool: ...

    def stop_requested(self) -> bool: ...

    def evaluate(self, metrics: list[str], num_images: int = 0, backend: str = "pycocotools",
                 voc_method: str = "area") -> dict: ...

    def save(self, name: str) -> Path | None: ...

    def memory_mb(self) -> float: ...


class HookBase:
    """Lifecycle: before_train, (before_step, after_step)*, after_train. ``trainer.iter`` counts done steps."""

    trainer: TrainerView

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


@HOOKS.register()
class LRSchedulerHook(HookBase):
    def after_step(self) -> None:
        self.trainer.scheduler.step()


@HOOKS.register()
class LoggerHook(HookBase):
    """Text log, ``metrics.jsonl`` and TensorBoard scalars every ``interval`` iterations (rank 0).

    The text line (:func:`detcore.engine.progress.iteration_line`) fits a terminal and carries the
    ETA measured after warm-up; every loss term and statistic goes to ``metrics.jsonl``,
    TensorBoard and the DEBUG log.
    """

    NOT_TERMS = frozenset({"loss", "data_time", "iter_time", "throughput", "lr", "memory_mb"})

    def __init__(self, interval: int = 10) -> None:
        self.interval = max(1, int(interval))
        self._window: list[dict[str, float]] = []
        self._ends = array("d")  # the ETA's clock as each iteration of this process ended

    def after_step(self) -> None:
        t = self.trainer
        evaluation = next((h for h in t.hooks if isinstance(h, EvalHook)), None)
        # the clock stops while evaluating: evaluations are estimated on their own
        self._ends.append(time.perf_counter() - (evaluation.total_seconds if evaluation is not None else 0.0))
        self._window.append(dict(t.step_stats))
        if t.iter % self.interval and t.iter != t.max_iters:
            return
        mean = {k: sum(s[k] for s in self._window) / len(self._window) for k in self._window[-1]}
        self._window.clear()
        images = mean.pop("batch_images", 0.0)
        mean["throughput"] = images / mean["iter_time"] if mean.get("iter_time") else 0.0
        mean["lr"] = t.optimizer.param_groups[0]["lr"]
        mean["memory_mb"] = t.memory_mb()
        pending = evaluation.evaluations_left() if evaluation is not None else 0
        eta = estimate_eta(self._ends, t.max_iters - t.iter, pending,
                           evaluation.last_seconds if evaluation is not None else None)
        # eta_s: the line's ETA (None while estimating), what `launcher list/status` show for a running job
        t.metrics.log_training({**mean, "eta_s": None if eta.seconds is None else round(eta.seconds, 1)},
                               epoch=t.epoch, step=t.iter)
        terms = {k: v for k, v in mean.items() if k not in self.NOT_TERMS}
        logger.info("%s", iteration_line(t.iter, t.max_iters, t.epoch, mean["lr"], mean.get("loss", 0.0), terms,
                                         mean.get("iter_time", 0.0), mean.get("data_time", 0.0), mean["memory_mb"],
                                         eta.text()))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("iter %d/%d %s", t.iter, t.max_iters, " ".join(f"{k}={v:.6g}" for k, v in mean.items()))


@HOOKS.register()
class EvalHook(HookBase):
    """Evaluate on the val split every ``interval`` runner units and at the end; metrics are logged.

    ``metric``: any of bbox, segm (COCO) and mAP (Pascal VOC at IoU 0.5, ``voc_method`` area or 11points).

    ``last_seconds`` (the newest evaluation's wall time) times :meth:`evaluations_left` is the
    evaluation part of the logged ETA; ``total_seconds`` (every evaluation of this process) is
    taken off the clock the training part is measured with.
    """

    def __init__(self, interval: int = 1, metric: list[str] | str = "bbox", num_images: int = 4,
                 backend: str = DEFAULT_BACKEND, voc_method: str = "area") -> None:
        self.interval = int(interval)
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        self.num_images = num_images
        self.backend = backend
        self.voc_method = voc_method
        self.last_seconds: float | None = None
        self.total_seconds = 0.0
        self._done_at: int | None = None

    def evaluations_left(self) -> int:
        """Evaluations not run yet: at each later boundary, at the end, and at the current iteration
        when it is one of those (the logger runs before this hook in the same step)."""
        t = self.trainer
        if t.val_loader is None:
            return 0
        step = self.interval * (t.iters_per_epoch if t.by_epoch else 1)
        now = int(0 < t.iter != self._done_at and (t.iter == t.max_iters or (step > 0 and t.iter % step == 0)))
        if t.iter >= t.max_iters:
            return now
        if step <= 0:
            return now + 1
        return now + t.max_iters // step - t.iter // step + (1 if t.max_iters % step else 0)

    def after_step(self) -> None:
        t = self.trainer
        if t.val_loader is None or not (t.at_boundary(self.interval) or t.iter == t.max_iters):
            return
        start = time.perf_counter()
        results = t.evaluate(self.metrics, num_images=self.num_images, backend=self.backend,
                             voc_method=self.voc_method)
        self.last_seconds, self._done_at = time.perf_counter() - start, t.iter
        self.total_seconds += self.last_seconds
        if results:
            flat = {k: v for k, v in results.items() if isinstance(v, (int, float))}
            # eval_time: this evaluation's wall time, what the launcher's estimates of later runs are made of
            t.metrics.log_validation(flat, epoch=t.epoch, step=t.iter, extra={"eval_time": self.last_seconds})


@HOOKS.register()
class CheckpointHook(HookBase):
    """Save every ``interval`` runner units and at the end; keep the newest ``max_keep``.

    ``max_keep`` counts every ``iter_N.pth``/``epoch_N.pth`` in the work dir: the work dir holds
    one run (:mod:`detcore.ownership`), so these are this run's, also those saved before a resume
    and the one it resumed from (``max_keep <= 0`` keeps all).
    ``save_best: bbox_AP`` also keeps ``best_bbox_AP.pth``. ``latest.pth`` (a link, see
    :func:`detcore.checkpoint.point_latest`) and ``last_checkpoint`` name the
    newest complete file; each is replaced atomically after that file is on disk.
    """

    def __init__(self, interval: int = 1, max_keep: int = 3, save_best: str | None = None) -> None:
        self.interval = int(interval)
        self.max_keep = int(max_keep)
        self.save_best = save_best
        self.best: float = -math.inf
        self.best_iter: int | None = None

    def after_step(self) -> None:
        t = self.trainer
        if not (t.at_boundary(self.interval) or t.iter == t.max_iters or t.stop_requested()):
            return
        name = f"epoch_{t.epoch}.pth" if t.by_epoch and t.iter % t.iters_per_epoch == 0 else f"iter_{t.iter}.pth"
        path = t.save(name)  # on every rank: each hands its random state to rank 0, which writes the file
        if path is not None:  # rank 0
            t.checkpoints.prune(self.max_keep, protect={name})
            value = t.metrics.latest(self.save_best) if self.save_best else None
            if self.save_best and value is not None and value > self.best:
                self.best, self.best_iter = float(value), t.iter
                t.checkpoints.keep_best(path, self.save_best)
                logger.info("new best %s = %.4f at iter %d", self.save_best, value, t.iter)

    def state_dict(self) -> dict:
        return {"best": self.best if math.isfinite(self.best) else None, "best_iter": self.best_iter}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"]) if state.get("best") is not None else -math.inf
        self.best_iter = state.get("best_iter")

