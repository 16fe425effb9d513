"""The MMDetection guide's AugFPN neck (Part 3), written the way the guide writes it.

``@NECKS.register_module()``, MMDetection's constructor arguments (``in_channels``, ``out_channels``,
``num_outs``, ``start_level``, ``end_level``, ``add_extra_convs``) and a ``forward`` that maps a tuple
of feature maps to a tuple: a module written for MMDetection works unchanged once its
``from mmdet.models.builder import NECKS`` reads ``from detcore.registry import NECKS``.

A config adds it without editing detcore (run from the repository root, or put the folder holding
``examples/`` on ``PYTHONPATH``)::

    custom_imports: {imports: [examples.augfpn_neck], allow_failed_imports: false}
    model:
      neck: {_delete_: true, type: AugFPN, in_channels: [256, 512, 1024, 2048], out_channels: 256, num_outs: 5}
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from detcore.registry import NECKS


@NECKS.register_module()
class AugFPN(nn.Module):
    """An FPN with residual feature augmentation (after AugFPN, Guo et al., CVPR 2020, simplified):
    context pooled from the top input at ratios 0.1, 0.2 and 0.3 of its size is added to the top
    lateral before the top-down pass, so the top level does not start from one map alone.

    Extra levels beyond the inputs (``num_outs`` more than the maps used): max-pools of the top
    output, or stride-2 convolutions with ``add_extra_convs`` (``True``/``on_input``: the first
    from the top input, ``on_output``: from the top output).
    """

    RFA_RATIOS = (0.1, 0.2, 0.3)

    def __init__(self,
                 in_channels,
                 out_channels,
                 num_outs,
                 start_level=0,
                 end_level=-1,
                 add_extra_convs=False):
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.end_level = len(self.in_channels) - 1 if end_level == -1 else end_level
        self.add_extra_convs = add_extra_convs
        used = self.in_channels[start_level:self.end_level + 1]
        if num_outs < len(used):
            raise ValueError(f"AugFPN: num_outs={num_outs} is fewer than the {len(used)} input maps it uses")
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in used)
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in used)
        self.rfa_convs = nn.ModuleList(nn.Conv2d(used[-1], out_channels, 1) for _ in self.RFA_RATIOS)
        self.extra_convs = nn.ModuleList()
        if add_extra_convs:
            for i in range(num_outs - len(used)):
                from_input = i == 0 and add_extra_convs in (True, "on_input")
                self.extra_convs.append(nn.Conv2d(used[-1] if from_input else out_channels, out_channels, 3,
                                                  stride=2, padding=1))

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"AugFPN: got {len(inputs)} maps, built for {len(self.in_channels)}")
        inputs = inputs[self.start_level:self.end_level + 1]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        top = inputs[-1]
        h, w = top.shape[-2:]
        for ratio, conv in zip(self.RFA_RATIOS, self.rfa_convs):
            pooled = F.adaptive_avg_pool2d(top, (max(1, int(h * ratio)), max(1, int(w * ratio))))
            laterals[-1] = laterals[-1] + F.interpolate(conv(pooled), size=(h, w), mode="bilinear",
                                                        align_corners=False)
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        for i in range(self.num_outs - len(laterals)):
            if self.extra_convs:
                source = top if i == 0 and self.add_extra_convs in (True, "on_input") else outs[-1]
                outs.append(self.extra_convs[i](F.relu(source) if i else source))
            else:
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
