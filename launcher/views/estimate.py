"""How long a training run will take, from finished runs that resemble it (pure).

**Resemble.** Two runs resemble each other when they train the same model (``model.type``, the
backbone's ``type`` and ``depth``), at the same input size (the model's ``min_size``/``max_size``,
else the training pipeline's ``Resize`` scale, else the dataset's ``size``), with the same images
per worker (``data.samples_per_gpu``), the same world size, the same device kind (``cpu``, or
``cuda`` when the job asks for GPUs) and the same precision (AMP or not): what decides the time of
one iteration. Only runs that succeeded in one launch (no resume, no restart) are measured.

**Measured per run** (:func:`measure`): the seconds per iteration after warm-up, by the same rule
as the progress line's ETA (:func:`detcore.engine.progress.step_seconds`, over every iteration the
run logged in ``metrics.jsonl``), the median wall time of one evaluation (``eval_time`` of its
evaluation records), and the start-up and the rest (checkpoints, hooks): its wall time less both.

**Estimated** (:func:`estimate`): iterations x seconds per iteration + evaluations x seconds per
evaluation + start-up, each the median over the newest :data:`RECENT_RUNS` resembling runs. An
epoch-based run's epoch length, and an evaluation's time, are taken only from resembling runs that
trained, or evaluated, on the same data (the same ``data.train`` / ``data.val``).
"""
from __future__ import annotations

import json
import math
import statistics
from array import array
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Mapping, Sequence

from detcore.engine.progress import step_seconds

RECENT_RUNS = 5


def duration_text(seconds: float) -> str:
    """``0:12:30``; a day or more as ``1 day, 2:00:00`` (Python's ``timedelta``)."""
    return str(timedelta(seconds=round(seconds)))


@dataclass(frozen=True)
class RunShape:
    """What a training run will do, from its resolved (scaled) config and resources."""

    model: str              # "FasterRCNN ResNet-50"
    input_size: str         # "800-1333", "[1333, 800]", "128"
    per_worker: int         # data.samples_per_gpu
    world_size: int
    device: str             # cpu or cuda
    amp: bool
    by_epoch: bool
    length: int             # max_epochs when by_epoch, else max_iters
    evaluations: int        # evaluations during the run (0 without validation)
    train_data: str         # data.train as canonical JSON: an epoch's length is the same only on the same data
    val_data: str           # data.val as canonical JSON: an evaluation's time is the same only on the same data

    @property
    def resembles_key(self) -> tuple:
        return (self.model, self.input_size, self.per_worker, self.world_size, self.device, self.amp)

    def describe(self) -> str:
        """``FasterRCNN TinyNet, input 128-128, 2 images per worker, world size 1 on cpu``."""
        return (f"{self.model}, input {self.input_size}, {self.per_worker} images per worker, world size "
                f"{self.world_size} on {self.device}{' with AMP' if self.amp else ''}")


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _input_size(cfg: Mapping[str, Any]) -> str:
    model = _dict(cfg.get("model"))
    if model.get("min_size") is not None or model.get("max_size") is not None:
        return f"{json.dumps(model.get('min_size'))}-{json.dumps(model.get('max_size'))}"
    train = _dict(_dict(cfg.get("data")).get("train"))
    for step in train.get("pipeline") or []:
        step = _dict(step)
        if "Resize" in str(step.get("type", "")):
            scale = step.get("scale", step.get("img_scale"))
            if scale is not None:
                return json.dumps(scale)
    return json.dumps(train.get("size"))


def _model(cfg: Mapping[str, Any]) -> str:
    model = _dict(cfg.get("model"))
    backbone = _dict(model.get("backbone"))
    parts = [str(model.get("type", "?")), str(backbone.get("type", ""))]
    if backbone.get("depth") is not None:
        parts[-1] += f"-{backbone['depth']}"
    return " ".join(p for p in parts if p)


def count_evaluations(length: int, interval: Any) -> int:
    """Evaluations of a run ``length`` runner units long (epochs or iterations) evaluating every
    ``interval`` units and at the end (what detcore's ``EvalHook`` does)."""
    interval = interval if isinstance(interval, int) and not isinstance(interval, bool) else 1
    if length <= 0:
        return 0
    if interval <= 0:
        return 1
    return length // interval + (1 if length % interval else 0)


def run_shape(cfg: Mapping[str, Any], world_size: int, gpus: int, amp: bool = False,
              validate: bool = True) -> RunShape | None:
    """The shape of a run of the resolved config ``cfg`` (after the schedule scaling), or None when its
    runner gives no length."""
    runner = _dict(cfg.get("runner"))
    by_epoch = runner.get("type", "EpochBasedRunner") == "EpochBasedRunner"
    length = runner.get("max_epochs" if by_epoch else "max_iters")
    if not isinstance(length, int) or isinstance(length, bool):
        return None
    data = _dict(cfg.get("data"))
    evaluates = validate and bool(data.get("val"))
    evaluations = count_evaluations(length, _dict(cfg.get("evaluation")).get("interval", 1)) if evaluates else 0
    per_worker = data.get("samples_per_gpu")
    return RunShape(model=_model(cfg), input_size=_input_size(cfg),
                    per_worker=per_worker if isinstance(per_worker, int) else 0, world_size=int(world_size),
                    device="cuda" if gpus else "cpu", amp=bool(amp), by_epoch=by_epoch, length=length,
                    evaluations=evaluations, train_data=json.dumps(data.get("train"), sort_keys=True, default=str),
                    val_data=json.dumps(data.get("val"), sort_keys=True, default=str))


def scaled_config(cfg: Mapping[str, Any], changes: Iterable[Mapping[str, Any]]) -> dict:
    """``cfg`` with the scaling's changes (``{"key": "runner.max_iters", "new": 600}``) applied to the
    keys a run's length depends on (a new dict; ``cfg`` is not changed)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}
    for change in changes:
        top, _, key = str(change.get("key", "")).partition(".")
        if top in ("runner", "evaluation") and key and "." not in key:
            out[top] = {**_dict(out.get(top)), key: change.get("new")}
    return out


def _seconds(value: Any) -> bool:
    """A duration a record can hold: a finite number, not negative (a hand-edited or damaged file may not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class PastRun:
    """What one finished run measured."""

    id: str
    shape: RunShape
    iterations: int
    step_s: float                 # seconds per iteration after warm-up
    evaluation_s: float | None    # median seconds of one evaluation (None: none timed)
    startup_s: float              # wall time less iterations and evaluations: start-up, checkpoints, hooks

    @property
    def iters_per_epoch(self) -> float | None:
        return self.iterations / self.shape.length if self.shape.by_epoch and self.shape.length else None


def measure(exp_id: str, shape: RunShape, wall_s: float, records: Sequence[Mapping[str, Any]]) -> PastRun | None:
    """A finished run's speeds from its ``metrics.jsonl`` ``records`` and its wall time (first start to
    end); None when it logged no timed iteration."""
    ends, clock, done = array("d"), 0.0, 0
    for r in records:
        it, seconds = r.get("iter"), r.get("iter_time")
        if r.get("mode") != "train" or not isinstance(it, int) or not _seconds(seconds) or it <= done:
            continue
        for _ in range(it - done):  # a record is the mean of the iterations since the one before
            clock += seconds
            ends.append(clock)
        done = it
    step = step_seconds(ends, recent=len(ends)) if done else None
    if step is None:
        return None
    timed = [float(r["eval_time"]) for r in records if r.get("mode") == "val" and _seconds(r.get("eval_time"))]
    evaluation = statistics.median(timed) if timed else None
    evaluations = sum(1 for r in records if r.get("mode") == "val")
    startup = max(0.0, wall_s - done * step - evaluations * (evaluation or 0.0))
    return PastRun(exp_id, shape, done, step, evaluation, startup)


@dataclass(frozen=True)
class Estimate:
    """A run's estimated wall time and what it was made from; ``seconds`` None: no estimate, ``basis`` says why."""

    seconds: float | None
    runs: tuple[str, ...] = ()
    basis: str = ""

    def to_json(self) -> dict:
        return {"seconds": None if self.seconds is None else round(self.seconds), "from": list(self.runs),
                "basis": self.basis}

    def text(self) -> str:
        if self.seconds is None:
            return f"estimate: none ({self.basis})"
        return f"estimate: {duration_text(self.seconds)} ({self.basis})"


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def estimate(new: RunShape, past: Sequence[PastRun], checked: int | None = None) -> Estimate:
    """The wall time of a run of shape ``new`` from ``past`` (newest first; those that do not resemble it
    are skipped). ``checked``: how many finished runs were looked at, for the line saying none resembles it."""
    alike = [p for p in past if p.shape.resembles_key == new.resembles_key][:RECENT_RUNS]
    if not alike:
        looked = f"; {checked} finished training run{'s' * (checked != 1)} checked" if checked is not None else ""
        return Estimate(None, (), f"no finished run resembles it ({new.describe()}){looked}")
    iterations = new.length
    if new.by_epoch:
        same_data = [p for p in alike if p.shape.by_epoch and p.shape.train_data == new.train_data]
        if not same_data:
            return Estimate(None, (), f"{len(alike)} finished run(s) resemble it ({', '.join(p.id for p in alike)}), "
                                      f"but none trained epochs on the same data.train, so an epoch's length "
                                      f"is unknown")
        iterations = round(new.length * _median(p.iters_per_epoch for p in same_data))
    step = _median(p.step_s for p in alike)
    startup = _median(p.startup_s for p in alike)
    seconds = iterations * step + startup
    parts, note = [f"{iterations} iterations x {step:.3g} s"], ""
    if new.evaluations:
        timed = [p.evaluation_s for p in alike if p.evaluation_s is not None and p.shape.val_data == new.val_data]
        if timed:
            seconds += new.evaluations * _median(timed)
            parts.append(f"{new.evaluations} evaluation{'s' * (new.evaluations != 1)} x {_median(timed):.3g} s")
        else:
            note = (f"; {new.evaluations} evaluation(s) not counted: no resembling run timed one on the same "
                    f"data.val")
    parts.append(f"start-up {startup:.0f} s")
    ids = tuple(p.id for p in alike)
    runs = f"run {ids[0]}" if len(ids) == 1 else f"the median of runs {', '.join(ids)}"
    return Estimate(seconds, ids, f"from {runs}: {' + '.join(parts)}{note}")
