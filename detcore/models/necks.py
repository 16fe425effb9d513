"""Necks: modules that take a body's feature maps and return the maps the heads use.

Two contracts are accepted, told apart by the neck's constructor (:func:`neck_contract`):

- torchvision's (detcore's ``FPN``): ``__init__(in_channels_list, out_channels, ...)``; ``forward``
  takes and returns an ``OrderedDict`` of maps, finest first.
- MMDetection's: ``__init__(in_channels, out_channels, num_outs, start_level=0, end_level=-1,
  add_extra_convs=False, ...)``; ``forward`` takes a tuple of maps and returns a tuple.

:func:`attach_neck` builds either on a body and returns a :class:`BackboneWithNeck`, which feeds an
MMDetection-contract neck a tuple and hands its outputs on as an ``OrderedDict`` named ``"0"``,
``"1"``, ... (every output feeds the RPN; the RoI heads pool the first as many levels as the body
returns, as MMDetection's four ``featmap_strides`` do). ``in_channels`` is filled from the body;
a config's ``in_channels`` that disagrees with the body is a :class:`ConfigError`.
"""
from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from typing import Any, Mapping, Sequence

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from detcore.errors import ConfigError
from detcore.registry import NECKS

logger = logging.getLogger(__name__)

TORCHVISION, MMDETECTION = "torchvision", "mmdetection"
# detcore FPN keys a _base_ neck leaves behind when only `type` is changed without `_delete_: true`
FPN_ONLY_KEYS = ("extra_blocks", "p6p7_from", "norm")


def _extra_blocks(kind: str | None, in_channels: int, out_channels: int):
    if kind in (None, "none"):
        return None
    if kind == "pool":
        return LastLevelMaxPool()
    if kind == "p6p7":  # RetinaNet/FCOS: P6 and P7 from P5 (from C5 when the widths differ)
        return LastLevelP6P7(in_channels, out_channels)
    raise ConfigError(f"model.neck.extra_blocks must be one of pool, p6p7, none; got {kind!r}")


def mmdet_extra_levels(n_inputs: int, num_outs: int, start_level: int = 0, end_level: int = -1,
                       add_extra_convs: bool | str = False) -> tuple[str, str]:
    """detcore's ``(extra_blocks, p6p7_from)`` for MMDetection's FPN arguments over ``n_inputs`` body maps.

    ``num_outs`` levels from maps ``start_level..end_level`` (-1: the last): no extra level is ``none``;
    one extra level without convs is ``pool`` (max-pool of the top output, as both libraries do); two
    with ``add_extra_convs`` (``True``/``on_input`` from C5, ``on_output`` from P5) are ``p6p7``.
    Anything else is a ConfigError naming the arguments: torchvision's FPN does not build it.
    """
    if not isinstance(start_level, int) or not 0 <= start_level < n_inputs:
        raise ConfigError(f"model.neck.start_level must be in 0..{n_inputs - 1} (the backbone returns {n_inputs} "
                          f"maps), got {start_level!r}")
    if end_level not in (-1, n_inputs - 1):
        raise ConfigError(f"model.neck.end_level={end_level!r}: detcore's FPN uses the body's maps up to the last "
                          f"(-1); return fewer maps from the backbone (model.backbone.returned_layers) instead")
    used = n_inputs - start_level
    if isinstance(num_outs, bool) or not isinstance(num_outs, int) or num_outs < used:
        raise ConfigError(f"model.neck.num_outs must be an int >= {used} (the maps it starts from), got {num_outs!r}")
    extra = num_outs - used
    if extra == 0:
        return "none", "p5"
    if extra == 1 and add_extra_convs is False:
        return "pool", "p5"
    if extra == 2 and add_extra_convs in (True, "on_input", "on_output"):
        return "p6p7", "p5" if add_extra_convs == "on_output" else "c5"
    raise ConfigError(f"model.neck: num_outs={num_outs} from {used} maps with add_extra_convs={add_extra_convs!r} "
                      f"is not an FPN torchvision builds; use one extra level without convs (num_outs={used + 1}), "
                      f"two with add_extra_convs on_input/on_output (num_outs={used + 2}), or none")


def _norm_from_cfg(norm_cfg: Any) -> str | None:
    if norm_cfg is None:
        return None
    if isinstance(norm_cfg, Mapping) and norm_cfg.get("type") == "GN":
        return "gn"
    raise ConfigError(f"model.neck.norm_cfg: detcore's FPN takes null or {{type: GN, num_groups: 32}}, got {norm_cfg!r}")


@NECKS.register()
class FPN(FeaturePyramidNetwork):
    """torchvision's FPN. ``extra_blocks``: ``pool`` (Faster/Mask R-CNN), ``p6p7`` (RetinaNet, FCOS).

    ``p6p7_from``: ``p5`` (torchvision's default, in=out channels) or ``c5``. ``norm``: null, ``bn``
    or ``gn``. MMDetection's
    arguments work too (``in_channels`` (checked against the body), ``num_outs``, ``start_level``,
    ``end_level``, ``add_extra_convs``, ``relu_before_extra_convs``, ``norm_cfg``, ``init_cfg``):
    given ``num_outs``, they decide the extra levels (:func:`mmdet_extra_levels`).
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int = 256, extra_blocks: str | None = "pool",
                 p6p7_from: str = "p5", norm: str | None = None, *, in_channels: Sequence[int] | None = None,
                 num_outs: int | None = None, start_level: int = 0, end_level: int = -1,
                 add_extra_convs: bool | str = False, relu_before_extra_convs: bool = False,
                 norm_cfg: Mapping[str, Any] | None = None, init_cfg: Any = None) -> None:
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels <= 0:
            raise ConfigError(f"model.neck.out_channels must be a positive int, got {out_channels!r}")
        if in_channels is not None and list(in_channels) != list(in_channels_list):
            raise ConfigError(f"model.neck.in_channels={list(in_channels)} but the backbone returns maps of "
                              f"{list(in_channels_list)} channels; set in_channels to that or leave it out")
        self.start_level = 0
        if num_outs is not None:
            derived = mmdet_extra_levels(len(in_channels_list), num_outs, start_level, end_level, add_extra_convs)
            if extra_blocks != derived[0]:
                logger.info("model.neck: num_outs=%s, add_extra_convs=%r decide the extra levels (%s); "
                            "extra_blocks=%s is not used", num_outs, add_extra_convs, derived[0], extra_blocks)
            extra_blocks, p6p7_from = derived
            if extra_blocks == "p6p7" and not relu_before_extra_convs:
                logger.warning("model.neck: relu_before_extra_convs=False, but torchvision's P6/P7 block applies "
                               "a ReLU before P7")
            self.start_level = start_level
        if norm_cfg is not None:
            norm = _norm_from_cfg(norm_cfg)
        if init_cfg is not None:
            logger.debug("model.neck.init_cfg %r: torchvision's FPN initialisation is kept", init_cfg)
        used = list(in_channels_list)[self.start_level:]
        p6_in = out_channels if p6p7_from == "p5" else used[-1]
        norm_layer = None
        if norm == "gn":
            norm_layer = lambda c: nn.GroupNorm(min(32, c), c)  # noqa: E731
        elif norm == "bn":  # torchvision's *_v2 Faster/Mask R-CNN
            norm_layer = nn.BatchNorm2d
        elif norm is not None:
            raise ConfigError(f"model.neck.norm must be null, bn or gn, got {norm!r}")
        super().__init__(used, out_channels, extra_blocks=_extra_blocks(extra_blocks, p6_in, out_channels),
                         norm_layer=norm_layer)
        self.out_channels = out_channels

    def forward(self, x: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:
        if not self.start_level:
            return super().forward(x)
        out = super().forward(OrderedDict(list(x.items())[self.start_level:]))
        return OrderedDict((str(i), v) for i, v in enumerate(out.values()))


def _parameters(cls: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return {}


def neck_contract(name: str, cls: Any) -> str:
    """``TORCHVISION`` when the constructor takes ``in_channels_list``, ``MMDETECTION`` when it takes
    ``in_channels``; otherwise a ConfigError describing both contracts. A subclass whose constructor
    only passes ``*args, **kwargs`` on has its base class's contract."""
    for klass in (getattr(cls, "__mro__", None) or (cls,)):
        params = _parameters(klass)
        if "in_channels_list" in params:
            return TORCHVISION
        if "in_channels" in params:
            return MMDETECTION
        kinds = {p.kind for p in params.values()}
        if not {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} & kinds:
            break  # a constructor of its own that takes neither: no base class decides
    raise ConfigError(f"model.neck: {name}'s constructor takes neither in_channels (MMDetection's neck contract: "
                      f"tuple of maps in and out) nor in_channels_list (torchvision's: OrderedDict in and out); "
                      f"add one of them (see docs/necks.md)")


def _check_keys(name: str, cls: Any, cfg: Mapping[str, Any]) -> None:
    params = _parameters(cls)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in cfg if k != "type" and k not in params]
    if unknown:
        inherited = [k for k in unknown if k in FPN_ONLY_KEYS]
        hint = (f"; if {', '.join(inherited)} came from a _base_ config's FPN, write the neck with _delete_: true "
                f"to replace that neck instead of merging into it") if inherited else ""
        raise ConfigError(f"model.neck: {name} does not take {', '.join(unknown)} (it takes "
                          f"{', '.join(p for p in params if p not in ('self', 'in_channels_list'))}){hint}")


def attach_neck(body: nn.Module, cfg: Mapping[str, Any]) -> BackboneWithNeck:
    """Build the neck of ``cfg`` (``{type: Name, ...}``) on ``body`` (which has ``out_channels_list``)."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ConfigError(f"model.neck must be a mapping with a type, e.g. {{type: FPN, out_channels: 256}}; got {cfg!r}")
    name = cfg["type"]
    cls = NECKS.get(name)
    contract = neck_contract(name, cls)
    _check_keys(name, cls, cfg)
    body_channels = list(body.out_channels_list)
    given = cfg.get("in_channels")
    if given is not None and (not isinstance(given, Sequence) or list(given) != body_channels):
        raise ConfigError(f"model.neck.in_channels={given!r} but the backbone returns maps of {body_channels} "
                          f"channels; set model.neck.in_channels={body_channels} or leave it out (detcore fills it in)")
    if contract == TORCHVISION:
        neck = NECKS.build(cfg, in_channels_list=body_channels)
    else:
        neck = NECKS.build({**cfg, "in_channels": body_channels})
    out_channels = getattr(neck, "out_channels", cfg.get("out_channels"))
    if isinstance(out_channels, bool) or not isinstance(out_channels, int):
        raise ConfigError(f"model.neck: cannot tell the channels of {name}'s outputs; set model.neck.out_channels "
                          f"(or self.out_channels in the neck)")
    return BackboneWithNeck(body, neck, contract, out_channels)


class BackboneWithNeck(nn.Module):
    """A body and a neck under torchvision's attribute names (``body``, ``fpn``) so keys match."""

    def __init__(self, body: nn.Module, neck: nn.Module, contract: str = TORCHVISION,
                 out_channels: int | None = None) -> None:
        super().__init__()
        self.body = body
        self.fpn = neck
        self.contract = contract
        self.out_channels = out_channels if out_channels is not None else neck.out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.body(x)
        if self.contract == TORCHVISION:
            return self.fpn(maps)
        outs = self.fpn(tuple(maps.values()))
        if isinstance(outs, Tensor) or not isinstance(outs, (tuple, list)) or not all(isinstance(o, Tensor) for o in outs):
            raise ConfigError(f"model.neck: {type(self.fpn).__name__}.forward returned {type(outs).__name__}; "
                              f"MMDetection's neck contract returns a tuple of feature maps")
        return OrderedDict((str(i), o) for i, o in enumerate(outs))
