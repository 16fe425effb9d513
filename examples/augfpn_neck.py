"""A user-defined neck, added without editing detcore (the MMDetection guide's AugFPN example).

The config names this module under ``custom_imports``; importing it registers ``AugFPN`` in
detcore's NECKS registry, and ``model.neck: {type: AugFPN}`` builds it.
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from detcore.models.necks import FPN
from detcore.registry import NECKS


@NECKS.register()
class AugFPN(FPN):
    """FPN plus residual feature augmentation: global context of the top map added back to it."""

    def __init__(self, in_channels_list, out_channels: int = 256, **kwargs) -> None:
        super().__init__(in_channels_list, out_channels, **kwargs)
        self.context = nn.Conv2d(in_channels_list[-1], in_channels_list[-1], 1)

    def forward(self, x: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
        names = list(x)
        top = x[names[-1]]
        context = F.adaptive_avg_pool2d(top, 1)
        x = OrderedDict(x)
        x[names[-1]] = top + self.context(context)
        return super().forward(x)
