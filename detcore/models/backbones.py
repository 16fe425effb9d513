"""Backbones: feature extractors returning an ordered dict of feature maps.

Each builder returns a :class:`Body` whose ``out_channels_list`` names the channels of the
maps it returns, finest first. The layer names inside a body match torchvision's detection
models (``body.layer1...`` for ResNet, ``body.0...`` for MobileNetV3), so torchvision's
checkpoints load by key.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import TYPE_CHECKING, Sequence

from torch import nn
from torchvision.models import mobilenet_v3_large, resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import misc as misc_ops

from detcore.errors import CheckpointError, ConfigError
from detcore.registry import BACKBONES

if TYPE_CHECKING:
    from detcore.pretrained.hub import ResolvedWeights

RESNET_DEPTHS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101,
                 152: resnet.resnet152}


class Body(IntermediateLayerGetter):
    """torchvision's IntermediateLayerGetter plus the channel count of each returned map and the
    record of the weights it was loaded with (``weights_record``, None for random initialisation)."""

    def __init__(self, model: nn.Module, return_layers: dict[str, str], out_channels_list: list[int],
                 weights_record: dict | None = None) -> None:
        super().__init__(model, return_layers)
        self.out_channels_list = list(out_channels_list)
        self.weights_record = weights_record


def norm_layer(norm: str, num_groups: int = 32, eps: float | None = None):
    """``frozen_bn`` (the detection default for pretrained backbones), ``bn`` or ``gn``; ``eps`` replaces the
    layers' default (1e-5)."""
    extra = {} if eps is None else {"eps": float(eps)}
    if norm == "frozen_bn":
        return functools.partial(misc_ops.FrozenBatchNorm2d, **extra)
    if norm == "bn":
        return functools.partial(nn.BatchNorm2d, **extra)
    if norm == "gn":
        return lambda channels: nn.GroupNorm(min(num_groups, channels), channels, **extra)
    raise ConfigError(f"model.backbone.norm must be one of frozen_bn, bn, gn; got {norm!r}")


def fetch_backbone_weights(weights: str | None, backbone: str, depth: int | None = None) -> ResolvedWeights | None:
    """The file ``model.backbone.weights`` names (a torchvision name that must fit the backbone, fetched into
    torch hub's cache, or a local state dict file), as :class:`~detcore.pretrained.hub.ResolvedWeights`;
    None for random initialisation. Called before the network is built, so a wrong name costs nothing."""
    if weights is None:
        return None
    from detcore.pretrained.hub import resolve_weights
    from detcore.pretrained.names import backbone_fit_problem, parse_weights

    key = "model.backbone.weights"
    named = parse_weights(weights, key)
    problem = backbone_fit_problem(named, backbone, depth) if named is not None else None
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return resolve_weights(weights, key)


def load_backbone_weights(module: nn.Module, resolved: ResolvedWeights | None) -> dict | None:
    """Load :func:`fetch_backbone_weights`' file into ``module``; the record of it (a dict), or None.

    A file must match some of the module's parameters; torchvision's file by name must match them all.
    """
    if resolved is None:
        return None
    from detcore.checkpoint import read_state_dict  # local import: checkpoint imports models lazily

    key = "model.backbone.weights"
    state = read_state_dict(resolved.path)
    missing, _unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if len(missing) >= len([k for k in module.state_dict() if not k.endswith("num_batches_tracked")]):
        raise ConfigError(f"{key}: weights file {resolved.path} matches none of the backbone's parameters; "
                          f"expected a torchvision classification state dict")
    if resolved.torchvision is not None and missing:
        raise CheckpointError(f"{key}: {resolved.path} lacks {len(missing)} of the {resolved.torchvision.name} tensors "
                              f"(e.g. {', '.join(missing[:2])}); it is not torchvision's file: delete it to download "
                              f"it again")
    return resolved.record.to_dict()


def _freeze(modules: Sequence[nn.Module]) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


@BACKBONES.register()
def ResNet(depth: int = 50, norm: str = "frozen_bn", trainable_layers: int = 3,
           returned_layers: Sequence[int] = (1, 2, 3, 4), weights: str | None = None,
           allow_random_frozen_bn: bool = False, norm_eps: float | None = None) -> Body:
    """torchvision ResNet-18/34/50/101/152 trunk; ``returned_layers`` are 1..4 (C2..C5).

    ``weights``: e.g. ``torchvision://resnet50`` or ``ResNet50_Weights.IMAGENET1K_V2`` or a file.
    ``norm_eps``: the normalisation's eps (default 1e-5; torchvision runs its first COCO R50 detectors,
    ``*_resnet50_fpn`` COCO_V1, with 0.0). ``allow_random_frozen_bn`` is read by the training check
    (:mod:`detcore.config_check`), not here.
    """
    if depth not in RESNET_DEPTHS:
        raise ConfigError(f"model.backbone.depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    if not 0 <= trainable_layers <= 5:
        raise ConfigError(f"model.backbone.trainable_layers must be in 0..5, got {trainable_layers}")
    if not returned_layers or not set(returned_layers) <= {1, 2, 3, 4}:
        raise ConfigError(f"model.backbone.returned_layers must be a non-empty subset of 1..4, got {returned_layers}")
    resolved = fetch_backbone_weights(weights, "ResNet", depth)
    net = RESNET_DEPTHS[depth](weights=None, norm_layer=norm_layer(norm, eps=norm_eps))
    record = load_backbone_weights(net, resolved)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, param in net.named_parameters():
        if all(not name.startswith(layer) for layer in trainable):
            param.requires_grad_(False)
    channels = {1: 64, 2: 128, 3: 256, 4: 512}
    expansion = 4 if depth >= 50 else 1
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}
    return Body(net, return_layers, [channels[k] * expansion for k in returned_layers], record)


@BACKBONES.register()
def MobileNetV3(norm: str = "frozen_bn", trainable_layers: int = 3, returned_layers: Sequence[int] | None = None,
                weights: str | None = None, allow_random_frozen_bn: bool = False) -> Body:
    """torchvision MobileNetV3-Large features, split at its strided blocks as torchvision does.

    ``weights``: e.g. ``torchvision://mobilenet_v3_large``, ``MobileNet_V3_Large_Weights.IMAGENET1K_V1`` or a file.
    """
    resolved = fetch_backbone_weights(weights, "MobileNetV3")
    net = mobilenet_v3_large(weights=None, norm_layer=norm_layer(norm), dilated=False)
    record = load_backbone_weights(net, resolved)
    features = net.features
    stage_indices = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    num_stages = len(stage_indices)
    if not 0 <= trainable_layers <= num_stages:
        raise ConfigError(f"model.backbone.trainable_layers must be in 0..{num_stages}, got {trainable_layers}")
    freeze_before = len(features) if trainable_layers == 0 else stage_indices[num_stages - trainable_layers]
    _freeze(features[:freeze_before])
    returned = list(returned_layers) if returned_layers is not None else [num_stages - 2, num_stages - 1]
    if min(returned) < 0 or max(returned) >= num_stages:
        raise ConfigError(f"model.backbone.returned_layers must be in 0..{num_stages - 1}, got {returned}")
    return_layers = {f"{stage_indices[k]}": str(v) for v, k in enumerate(returned)}
    return Body(features, return_layers, [features[stage_indices[k]].out_channels for k in returned], record)


class _TinyTrunk(nn.Sequential):
    """Conv-norm-ReLU stages, each halving the resolution; stage k has stride 2**(k+1)."""

    def __init__(self, channels: Sequence[int], norm: str) -> None:
        make_norm = norm_layer(norm, num_groups=8)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = 3
        for i, ch in enumerate(channels):
            layers[f"stage{i}"] = nn.Sequential(
                nn.Conv2d(in_ch, ch, 3, stride=2, padding=1, bias=False), make_norm(ch), nn.ReLU(inplace=True),
                nn.Conv2d(ch, ch, 3, padding=1, bias=False), make_norm(ch), nn.ReLU(inplace=True),
            )
            in_ch = ch
        super().__init__(layers)


@BACKBONES.register()
def TinyNet(channels: Sequence[int] = (16, 32, 64, 128), norm: str = "gn",
            returned_layers: Sequence[int] | None = None, weights: str | None = None,
            allow_random_frozen_bn: bool = False) -> Body:
    """A small CPU-friendly trunk for tests and the shapes demo (strides 2, 4, 8, 16, ...)."""
    if not channels or any(int(c) <= 0 for c in channels):
        raise ConfigError(f"model.backbone.channels must be a list of positive ints, got {channels!r}")
    resolved = fetch_backbone_weights(weights, "TinyNet")
    trunk = _TinyTrunk([int(c) for c in channels], norm)
    record = load_backbone_weights(trunk, resolved)
    returned = list(returned_layers) if returned_layers is not None else list(range(1, len(channels)))
    if min(returned) < 0 or max(returned) >= len(channels):
        raise ConfigError(f"model.backbone.returned_layers must be in 0..{len(channels) - 1}, got {returned}")
    return Body(trunk, {f"stage{k}": str(i) for i, k in enumerate(returned)}, [int(channels[k]) for k in returned],
                record)

