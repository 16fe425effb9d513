"""Linear scaling by total batch size: the one rule, applied by the worker at the world size it runs at.

With ``auto_scale_lr: {enable: true, base_batch_size: B}`` the learning rate becomes
``lr * total / B`` where ``total = world_size * samples_per_gpu`` (the batch the training
loader really uses, :func:`split_batch_size`). With
``auto_scale_lr.scale_schedule: true`` an iteration-based schedule is also rescaled by
``B / total`` (max_iters, warmup_iters, LR steps, checkpoint and evaluation intervals), so the
run covers the same number of epochs, as detectron2's ``REFERENCE_WORLD_SIZE`` does. An
epoch-based schedule keeps its epochs; only ``warmup_iters`` (always iterations) rescales.

``detcore train`` calls :func:`scale_config` once, after the process group is up, whoever
started it (one process, torchrun, the launcher on any backend). The scaled config carries the
decision under ``_scaling`` (with the original values), so a config saved by a run, or a
resume at another world size, is scaled from the original values and never twice. The
launcher only predicts the decision for display (``launcher.scaling``). Pure, torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from detcore.errors import ConfigError

SCALING_KEY = "_scaling"  # where a scaled config records the decision (config.yaml, checkpoint meta)


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
    def from_dict(cls, data: Mapping[str, Any]) -> ScaledSchedule:
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


def split_batch_size(cfg: Mapping[str, Any], split: str = "train") -> int:
    """The batch per worker ``data.<split>``'s loader uses: the split's own ``samples_per_gpu``
    (MMDetection's per-split key) when set, else ``data.samples_per_gpu`` (train, default 2) or
    ``data.test_samples_per_gpu`` (val and test, default 1). The loader and the LR scaling both
    read it here, so they never disagree."""
    data = cfg.get("data") or {}
    own = (data.get(split) or {}).get("samples_per_gpu") if isinstance(data.get(split), Mapping) else None
    if own is not None:
        return own
    return data.get("samples_per_gpu", 2) if split == "train" else data.get("test_samples_per_gpu", 1)


def split_workers(cfg: Mapping[str, Any], split: str) -> int:
    """Loader processes for ``data.<split>``: its own ``workers_per_gpu``, else ``data.workers_per_gpu`` (2)."""
    data = cfg.get("data") or {}
    own = (data.get(split) or {}).get("workers_per_gpu") if isinstance(data.get(split), Mapping) else None
    return own if own is not None else data.get("workers_per_gpu", 2)


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
    samples_per_gpu = _positive_int(samples_per_gpu, "the training batch (data.train.samples_per_gpu or "
                                                      "data.samples_per_gpu)")
    total = world_size * samples_per_gpu
    runner = cfg_view.get("runner") or {}
    by_epoch = runner.get("type", "EpochBasedRunner") == "EpochBasedRunner"
    auto = cfg_view.get("auto_scale_lr") or {}
    if not isinstance(auto, Mapping) or not auto.get("enable", False):
        lr = _get(cfg_view, "optimizer.lr")  # off: the configured LR is the one trained at
        lr = float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None
        return ScaledSchedule(world_size, samples_per_gpu, total, enabled=False, base_lr=lr, lr=lr, by_epoch=by_epoch)
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


def _set(cfg: dict, dotted: str, value: Any) -> None:
    node = cfg
    parts = dotted.split(".")
    for part in parts[:-1]:
        node[part] = dict(node[part])
        node = node[part]
    node[parts[-1]] = list(value) if isinstance(value, tuple) else value


def original_config(cfg: Mapping[str, Any]) -> dict:
    """``cfg`` with the values an earlier scaling changed put back (a copy; no ``_scaling`` key).

    A config saved by a run (``work_dir/config.yaml``, checkpoint meta) holds scaled values and the
    decision under ``_scaling``; each changed key whose value is still the scaled one goes back to
    its original, so scaling it again starts from the configured values. A key changed since
    (an override) keeps the new value.
    """
    out = {k: v for k, v in cfg.items() if k != SCALING_KEY}
    record = cfg.get(SCALING_KEY)
    if not isinstance(record, Mapping) or not record.get("changes"):
        return out
    for change in record["changes"]:
        if _freeze(_get(out, change["key"])) == _freeze(change["new"]):
            _set(out, change["key"], change["old"])
    return out


def apply_schedule(cfg: Mapping[str, Any], schedule: ScaledSchedule) -> dict:
    """A copy of ``cfg`` with ``schedule``'s changes applied and the decision recorded under ``_scaling``."""
    out = dict(cfg)
    for change in schedule.changes:
        _set(out, change.key, change.new)
    out[SCALING_KEY] = schedule.to_dict()
    return out


def scale_config(cfg: Mapping[str, Any], world_size: int) -> tuple[dict, ScaledSchedule]:
    """The config to train with at ``world_size`` workers and the decision (see the module docstring).

    Always computed from the original values (:func:`original_config`), so calling it on an
    already scaled config for any world size gives the same result as on the configured one.
    """
    base = original_config(cfg)
    schedule = scale_for_world(base, world_size, split_batch_size(base, "train"))
    return apply_schedule(base, schedule), schedule
