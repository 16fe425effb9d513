"""Linear scaling by total batch size: one pure rule, applied by every backend.

With ``auto_scale_lr: {enable: true, base_batch_size: B}`` the learning rate becomes
``lr * total / B`` where ``total = world_size * samples_per_gpu``. With
``auto_scale_lr.scale_schedule: true`` an iteration-based schedule is also rescaled by
``B / total`` (max_iters, warmup_iters, LR steps, checkpoint and evaluation intervals), so the
run covers the same number of epochs, as detectron2's ``REFERENCE_WORLD_SIZE`` does. An
epoch-based schedule keeps its epochs; only ``warmup_iters`` (always iterations) rescales.

The decision travels to the worker as ``--cfg-options`` overrides, including
``+_scaling={...}`` which detcore's trainer stores in checkpoint meta.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from detcore.errors import ConfigError


@dataclass(frozen=True)
class ScheduleChange:
    """One config key the rule changed (``old`` -> ``new``)."""

    key: str
    old: Any
    new: Any


@dataclass(frozen=True)
class ScaledSchedule:
    world_size: int
    samples_per_gpu: int
    total_batch: int
    enabled: bool
    base_batch_size: int | None = None
    base_lr: float | None = None
    lr: float | None = None
    scale_schedule: bool = False
    by_epoch: bool = False
    changes: tuple[ScheduleChange, ...] = ()

    @property
    def factor(self) -> float:
        return self.total_batch / self.base_batch_size if self.enabled and self.base_batch_size else 1.0

    @property
    def overrides(self) -> tuple[str, ...]:
        """``key=value`` items for ``--cfg-options`` (empty when scaling is off)."""
        if not self.enabled:
            return ()
        items = [f"{c.key}={format_value(c.new)}" for c in self.changes]
        record = {"world_size": self.world_size, "samples_per_gpu": self.samples_per_gpu,
                  "total_batch": self.total_batch, "base_batch_size": self.base_batch_size,
                  "base_lr": self.base_lr, "lr": self.lr, "scale_schedule": self.scale_schedule}
        items.append(f"+_scaling={format_value(record)}")
        return tuple(items)

    def describe(self) -> str:
        """One line for people: what was scaled and why."""
        head = f"world size {self.world_size} x {self.samples_per_gpu} per worker = total batch {self.total_batch}"
        if not self.enabled:
            return f"{head}; auto_scale_lr off, config values used as they are"
        parts = [f"{head} (base {self.base_batch_size}, x{self.factor:g})", f"lr {self.base_lr:g} -> {self.lr:g}"]
        parts += [f"{c.key} {format_value(c.old)} -> {format_value(c.new)}" for c in self.changes
                  if c.key != "optimizer.lr"]
        return "; ".join(parts)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("world_size", "samples_per_gpu", "total_batch", "enabled",
                                           "base_batch_size", "base_lr", "lr", "scale_schedule", "by_epoch")}
        d["changes"] = [{"key": c.key, "old": c.old, "new": c.new} for c in self.changes]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScaledSchedule":
        d = dict(data)
        d["changes"] = tuple(ScheduleChange(c["key"], _freeze(c["old"]), _freeze(c["new"]))
                             for c in d.get("changes", ()))
        return cls(**d)


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _clean_float(x: float) -> float:
    return float(f"{x:.12g}")


def scale_for_world(cfg_view: Mapping[str, Any], world_size: int, samples_per_gpu: int) -> ScaledSchedule:
    """Apply the linear scaling rule to a resolved config for ``world_size`` workers.

    Pure: reads ``auto_scale_lr``, ``optimizer.lr``, ``runner``, ``lr_config``,
    ``checkpoint_config.interval`` and ``evaluation.interval``; never mutates ``cfg_view``.
    Scaled counts are rounded to the nearest integer, at least 1; a 0 (off) stays 0.
    Raises ConfigError naming the key when a needed value is missing or of the wrong type.
    """
    world_size = _positive_int(world_size, "world size")
    samples_per_gpu = _positive_int(samples_per_gpu, "data.samples_per_gpu")
    total = world_size * samples_per_gpu
    runner = cfg_view.get("runner") or {}
    by_epoch = runner.get("type", "EpochBasedRunner") == "EpochBasedRunner"
    auto = cfg_view.get("auto_scale_lr") or {}
    if not isinstance(auto, Mapping) or not auto.get("enable", False):
        return ScaledSchedule(world_size, samples_per_gpu, total, enabled=False, by_epoch=by_epoch)
    base = _positive_int(auto.get("base_batch_size"), "auto_scale_lr.base_batch_size")
    base_lr = _get(cfg_view, "optimizer.lr")
    if isinstance(base_lr, bool) or not isinstance(base_lr, (int, float)) or not base_lr > 0:
        raise ConfigError(f"auto_scale_lr.enable is true but optimizer.lr is {base_lr!r}; set a positive optimizer.lr "
                          f"or auto_scale_lr.enable=false")
    lr = _clean_float(base_lr * total / base)
    changes = [ScheduleChange("optimizer.lr", base_lr, lr)]
    scale_schedule = bool(auto.get("scale_schedule", False))
    if scale_schedule:
        ratio = base / total

        def scaled(value: Any, key: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key} must be an integer >= 0, got {value!r}")
            return 0 if value == 0 else max(1, int(math.floor(value * ratio + 0.5)))

        def change(key: str) -> None:
            old = _get(cfg_view, key)
            if old is None:
                return
            if isinstance(old, (list, tuple)):
                new: Any = tuple(scaled(v, key) for v in old)
                old = tuple(old)
            else:
                new = scaled(old, key)
            if new != old:
                changes.append(ScheduleChange(key, old, new))

        lr_cfg = cfg_view.get("lr_config") or {}
        if not by_epoch:
            change("runner.max_iters")
            if lr_cfg.get("policy") == "step":
                change("lr_config.step")
            change("checkpoint_config.interval")
            change("evaluation.interval")
        if lr_cfg.get("warmup"):
            change("lr_config.warmup_iters")
    return ScaledSchedule(world_size, samples_per_gpu, total, enabled=True, base_batch_size=base, base_lr=base_lr,
                          lr=lr, scale_schedule=scale_schedule, by_epoch=by_epoch, changes=tuple(changes))


def format_value(value: Any) -> str:
    """A value as YAML 1.1 flow text that ``detcore.config.parse_override`` reads back exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text:
            mantissa, exp = text.split("e")
            mantissa = mantissa if "." in mantissa else mantissa + ".0"
            exp = exp if exp[0] in "+-" else "+" + exp
            text = f"{mantissa}e{exp}"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot format {type(value).__name__} as an override value")
