"""Pieces of a resume that are not the checkpoint's files: the loss scaler and the base LR.

:meth:`detcore.engine.trainer.Trainer.resume` loads a checkpoint (through
:class:`~detcore.checkpoint_dir.CheckpointDir`) and uses these to restore what depends on this
run rather than on the run that saved it.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch


def restore_scaler(scaler: torch.amp.GradScaler, state: Mapping[str, Any] | None) -> bool:
    """Load a saved loss-scaler state into an enabled ``scaler``; False (scaler untouched) when it
    is disabled or the checkpoint was saved without AMP (its state is empty: a CPU checkpoint
    resumed with ``--amp`` starts with a fresh scale instead of failing)."""
    if not scaler.is_enabled() or not state:
        return False
    scaler.load_state_dict(dict(state))
    return True


def keep_base_lrs(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                  base_lrs: list[float]) -> list[float]:
    """After loading optimizer and scheduler state: train on at this run's ``base_lrs``, not the saved
    ones; the saved ones are returned (nothing changes when the two agree).

    The saved base LR was scaled for the world size that wrote the checkpoint; this run's was
    scaled from the original config for its own world size, so it replaces the saved one (the
    schedule's position is kept).
    """
    saved = list(scheduler.base_lrs)
    if saved == base_lrs:
        return saved
    scheduler.base_lrs = base_lrs
    for group, base, fn in zip(optimizer.param_groups, base_lrs, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    return saved
