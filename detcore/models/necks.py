"""Necks: modules that take a body's feature maps and return the maps the heads use."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from detcore.errors import ConfigError
from detcore.registry import NECKS


def _extra_blocks(kind: str | None, in_channels: int, out_channels: int):
    if kind in (None, "none"):
        return None
    if kind == "pool":
        return LastLevelMaxPool()
    if kind == "p6p7":  # RetinaNet/FCOS: P6 and P7 from P5 (from C5 when the widths differ)
        return LastLevelP6P7(in_channels, out_channels)
    raise ConfigError(f"model.neck.extra_blocks must be one of pool, p6p7, none; got {kind!r}")


@NECKS.register()
class FPN(FeaturePyramidNetwork):
    """torchvision's FPN. ``extra_blocks``: ``pool`` (Faster/Mask R-CNN), ``p6p7`` (RetinaNet, FCOS).

    ``p6p7_from``: ``p5`` (torchvision's default, in=out channels) or ``c5``. ``norm``: null, ``bn`` or ``gn``.
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int = 256, extra_blocks: str | None = "pool",
                 p6p7_from: str = "p5", norm: str | None = None) -> None:
        if out_channels <= 0:
            raise ConfigError(f"model.neck.out_channels must be positive, got {out_channels}")
        p6_in = out_channels if p6p7_from == "p5" else in_channels_list[-1]
        norm_layer = None
        if norm == "gn":
            norm_layer = lambda c: nn.GroupNorm(min(32, c), c)  # noqa: E731
        elif norm == "bn":  # torchvision's *_v2 Faster/Mask R-CNN
            norm_layer = nn.BatchNorm2d
        elif norm is not None:
            raise ConfigError(f"model.neck.norm must be null, bn or gn, got {norm!r}")
        super().__init__(list(in_channels_list), out_channels,
                         extra_blocks=_extra_blocks(extra_blocks, p6_in, out_channels), norm_layer=norm_layer)
        self.out_channels = out_channels


class BackboneWithNeck(nn.Module):
    """A body and a neck under torchvision's attribute names (``body``, ``fpn``) so keys match."""

    def __init__(self, body: nn.Module, neck: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.fpn = neck
        self.out_channels = neck.out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return self.fpn(self.body(x))
