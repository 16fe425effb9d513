"""``model.channels_last: true``: train and run a detector in the channels-last memory format.

Convolutions on the CPU (oneDNN) and on recent GPUs (cuDNN with tensor cores) are often faster on
NHWC tensors. :func:`to_channels_last` converts every 4-d parameter and buffer of the model and
makes the backbone turn its input batch to NHWC too, so the whole backbone and neck run in it
(a convolution keeps the layout of its input). State-dict keys and values are unchanged: a
checkpoint saved from such a model loads into a plain one and the other way round.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _nhwc_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    first, *rest = args
    if isinstance(first, torch.Tensor) and first.dim() == 4:
        first = first.contiguous(memory_format=torch.channels_last)
    return (first, *rest)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert ``model`` in place (and return it): 4-d tensors in channels-last memory format, and the
    batch entering ``model.backbone`` (when the model has one) made channels-last first."""
    model.to(memory_format=torch.channels_last)
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        backbone.register_forward_pre_hook(_nhwc_input)
    return model
