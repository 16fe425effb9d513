"""Heads with a normalisation chosen by name, built from torchvision's own classes.

torchvision's v2 detectors (``fasterrcnn_resnet50_fpn_v2``, ``maskrcnn_resnet50_fpn_v2``,
``retinanet_resnet50_fpn_v2``) pass ``norm_layer`` callables to these classes; a YAML config
names the normalisation instead (``norm: bn`` or ``gn``). The modules returned are torchvision's,
so state-dict keys match torchvision's checkpoints.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn
from torchvision.models.detection import mask_rcnn, retinanet
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead as TvConvFCHead

from detcore.errors import ConfigError
from detcore.registry import HEADS

BOX_LOSSES = ("l1", "smooth_l1", "giou", "diou", "ciou")


def head_norm(norm: str | None, where: str) -> Callable[[int], nn.Module] | None:
    """``None`` (no normalisation), ``bn`` (BatchNorm2d) or ``gn`` (GroupNorm with 32 groups)."""
    if norm is None:
        return None
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return lambda channels: nn.GroupNorm(32, channels)
    raise ConfigError(f"{where}.norm must be null, bn or gn; got {norm!r}")


@HEADS.register()
def FastRCNNConvFCHead(input_size: Sequence[int], representation_size: int = 1024,
                       conv_layers: Sequence[int] = (256, 256, 256, 256), norm: str | None = "bn") -> TvConvFCHead:
    """torchvision's conv + fc box head (``fasterrcnn_resnet50_fpn_v2``: four 3x3 convs with BN, one fc).

    ``input_size`` is the pooled map's (channels, roi_size, roi_size), given by the detector.
    """
    return TvConvFCHead(tuple(input_size), list(conv_layers), [int(representation_size)],
                        norm_layer=head_norm(norm, "model.roi_head.box_head"))


@HEADS.register()
def RetinaNetHead(in_channels: int, num_anchors: int, num_classes: int, norm: str | None = None,
                  box_loss: str = "l1") -> retinanet.RetinaNetHead:
    """torchvision's RetinaNet head; ``norm: gn`` and ``box_loss: giou`` give ``retinanet_resnet50_fpn_v2``'s."""
    if box_loss not in BOX_LOSSES:
        raise ConfigError(f"model.head.box_loss must be one of {', '.join(BOX_LOSSES)}; got {box_loss!r}")
    head = retinanet.RetinaNetHead(in_channels, num_anchors, num_classes, norm_layer=head_norm(norm, "model.head"))
    head.regression_head._loss_type = box_loss  # what torchvision's retinanet_resnet50_fpn_v2 sets
    return head


@HEADS.register()
def MaskRCNNHeads(in_channels: int, layers: Sequence[int], dilation: int = 1,
                  norm: str | None = None) -> mask_rcnn.MaskRCNNHeads:
    """torchvision's mask head (3x3 convs); ``norm: bn`` gives ``maskrcnn_resnet50_fpn_v2``'s."""
    return mask_rcnn.MaskRCNNHeads(in_channels, list(layers), dilation,
                                   norm_layer=head_norm(norm, "model.roi_head.mask_head"))
