"""The launcher's view of the linear scaling rule: a prediction for display, never applied.

The rule lives in :mod:`detcore.engine.scaling` and the detcore worker applies it once, at the
world size it actually runs at (so ``torchrun`` by hand and ``launcher submit`` train with the
same LR). The launcher computes the same function for ``--dry-run``, the submit line and the
row's first values; the worker's ``scaling`` fact then replaces them (``launcher.store.reconcile``).
"""
from __future__ import annotations

from typing import Any, Mapping

from detcore.engine.scaling import (ScaledSchedule, ScheduleChange, format_value, original_config, scale_for_world,
                                    split_batch_size)


def predict_scaling(cfg: Mapping[str, Any], world_size: int) -> ScaledSchedule:
    """What the worker will decide for ``cfg`` at ``world_size`` workers (same function, same inputs)."""
    base = original_config(cfg)
    return scale_for_world(base, world_size, split_batch_size(base, "train"))


__all__ = ["ScaledSchedule", "ScheduleChange", "format_value", "predict_scaling", "scale_for_world"]
