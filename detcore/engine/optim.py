"""Optimizers and LR schedules from config.

The schedule is a pure function of the iteration (``lr_factor``) driven by a LambdaLR that
steps once per iteration, so its state is just the iteration count and resumes exactly.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from detcore.config_values import FOREACH_AND_FUSED
from detcore.errors import ConfigError
from detcore.registry import LR_SCHEDULES, OPTIMIZERS

OPTIMIZERS.add(torch.optim.SGD, "SGD")
OPTIMIZERS.add(torch.optim.AdamW, "AdamW")
OPTIMIZERS.add(torch.optim.Adam, "Adam")


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``optimizer: {type: SGD, lr: 0.02, momentum: 0.9, weight_decay: 1e-4}``; frozen params are left out.

    Every other key goes to the optimizer's constructor, torch's ``foreach: true`` (one multi-tensor
    update over all parameters; torch's default only on GPUs) and ``fused: true`` (one fused kernel;
    SGD, Adam and AdamW, on the CPU and GPUs) among them.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters; check model.backbone.trainable_layers")
    if cfg.get("foreach") and cfg.get("fused"):
        raise ConfigError(FOREACH_AND_FUSED)
    try:
        return OPTIMIZERS.build(cfg, params=params)
    except RuntimeError as exc:  # torch's refusals of fused/foreach for these parameters or this device
        if not ({"fused", "foreach"} & set(cfg)):
            raise
        raise ConfigError(f"optimizer {cfg.get('type')!r} with fused={cfg.get('fused')!r}, "
                          f"foreach={cfg.get('foreach')!r}: {exc}; remove optimizer.fused/foreach") from exc


@LR_SCHEDULES.register("step")
def step_schedule(step: list[int] | int, gamma: float = 0.1) -> Callable[[float], float]:
    """Multiply by ``gamma`` at each milestone (in runner units: epochs or iterations)."""
    milestones = sorted([step] if isinstance(step, int) else [int(s) for s in step])
    return lambda progress: gamma ** sum(1 for m in milestones if progress >= m)


@LR_SCHEDULES.register("cosine")
def cosine_schedule(total: float, min_lr_ratio: float = 0.0) -> Callable[[float], float]:
    return lambda progress: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress / total, 1.0)))


@LR_SCHEDULES.register("fixed")
def fixed_schedule() -> Callable[[float], float]:
    return lambda progress: 1.0


def lr_factor_fn(lr_cfg: Mapping[str, Any] | None, *, iters_per_epoch: int, by_epoch: bool,
                 max_units: int) -> Callable[[int], float]:
    """The LR multiplier as a function of the global iteration.

    ``lr_config: {policy: step, step: [8, 11], gamma: 0.1, warmup: linear, warmup_iters: 500,
    warmup_ratio: 0.001}``; ``policy: cosine`` anneals to ``min_lr_ratio`` over the run.
    Milestones are epochs for epoch-based runners and iterations otherwise; warmup is in
    iterations.
    """
    cfg = dict(lr_cfg or {"policy": "fixed"})
    policy = cfg.pop("policy", "fixed")
    warmup = cfg.pop("warmup", None)
    warmup_iters = int(cfg.pop("warmup_iters", 0))
    warmup_ratio = float(cfg.pop("warmup_ratio", 0.001))
    if policy == "cosine":
        cfg.setdefault("total", max_units)
    main = LR_SCHEDULES.build({"type": policy, **cfg})
    if warmup not in (None, "linear", "constant"):
        raise ConfigError(f"lr_config.warmup must be linear, constant or null; got {warmup!r}")

    def factor(it: int) -> float:
        progress = it / iters_per_epoch if by_epoch else it
        base = main(progress)
        if warmup and it < warmup_iters:
            if warmup == "constant":
                return base * warmup_ratio
            return base * (warmup_ratio + (1 - warmup_ratio) * it / warmup_iters)
        return base

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
