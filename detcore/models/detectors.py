"""Detectors composed from config on torchvision's detection models.

Each builder returns the torchvision model itself (``FasterRCNN``, ``MaskRCNN``,
``RetinaNet``, ``FCOS``), so the state-dict keys of the standard architectures match
torchvision's and its COCO checkpoints load with ``load_from``. Labels are 1..K for K
foreground classes in every detector (0 is background), so every model is built with
``num_classes + 1`` outputs; torchvision's COCO weights correspond to ``num_classes: 90``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn
from torchvision.models.detection import FCOS as TvFCOS
from torchvision.models.detection import FasterRCNN as TvFasterRCNN
from torchvision.models.detection import MaskRCNN as TvMaskRCNN
from torchvision.models.detection import RetinaNet as TvRetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead

from detcore.errors import ConfigError
from detcore.evaluation.metrics import MASK_OPTIONS
from detcore.registry import BACKBONES, DETECTORS, HEADS
from detcore.models import heads as _heads  # noqa: F401  (registers the heads with a norm by name)
from detcore.models.memory_format import to_channels_last
from detcore.models.necks import BackboneWithNeck, attach_neck
from detcore.models.roi_align import build_roi_pool

for _head in (RPNHead, FCOSHead, TwoMLPHead, FastRCNNPredictor, MaskRCNNPredictor):
    HEADS.add(_head)  # RetinaNetHead, MaskRCNNHeads and FastRCNNConvFCHead: detcore.models.heads (norm by name)

# Options passed through to torchvision's constructors, by config section.
RPN_KEYS = ("pre_nms_top_n_train", "pre_nms_top_n_test", "post_nms_top_n_train", "post_nms_top_n_test",
            "nms_thresh", "fg_iou_thresh", "bg_iou_thresh", "batch_size_per_image", "positive_fraction",
            "score_thresh")
ROI_KEYS = ("score_thresh", "nms_thresh", "detections_per_img", "fg_iou_thresh", "bg_iou_thresh",
            "batch_size_per_image", "positive_fraction")
RETINANET_KEYS = ("score_thresh", "nms_thresh", "detections_per_img", "fg_iou_thresh", "bg_iou_thresh",
                  "topk_candidates")
FCOS_KEYS = ("center_sampling_radius", "score_thresh", "nms_thresh", "detections_per_img", "topk_candidates")
TRANSFORM_KEYS = ("min_size", "max_size", "image_mean", "image_std")
MASK_KEYS = MASK_OPTIONS  # roi_head options of the mask branch


def _section(cfg: Mapping[str, Any], name: str, allowed: Sequence[str], prefix: str) -> dict:
    section = dict(cfg.get(name) or {})
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ConfigError(f"model.{name}: unknown option(s) {unknown}; allowed: {', '.join(allowed)}")
    return {prefix + k: v for k, v in section.items()}


def _transform_kwargs(cfg: Mapping[str, Any]) -> dict:
    out = {k: cfg[k] for k in TRANSFORM_KEYS if k in cfg}
    out.setdefault("min_size", 800)
    out.setdefault("max_size", 1333)
    return out


def _backbone(cfg: Mapping[str, Any]) -> BackboneWithNeck:
    if "backbone" not in cfg or "neck" not in cfg:
        raise ConfigError("model needs a backbone and a neck, e.g. backbone: {type: ResNet, depth: 50} "
                          "and neck: {type: FPN, out_channels: 256}")
    return attach_neck(BACKBONES.build(cfg["backbone"]), cfg["neck"])


def _num_levels(backbone: BackboneWithNeck, images: int = 64) -> int:
    """Number of feature maps the neck returns, found by running a small dummy image."""
    import torch

    with torch.no_grad():
        was_training = backbone.training
        backbone.eval()
        n = len(backbone(torch.zeros(1, 3, images, images)))
        backbone.train(was_training)
    return n


def build_anchor_generator(cfg: Mapping[str, Any] | None, num_levels: int, default: Mapping[str, Any]) -> AnchorGenerator:
    """``sizes`` (one list per level) or MMDetection's ``base_sizes`` + ``scales_per_octave``."""
    cfg = dict(default if cfg is None else cfg)
    if "sizes" in cfg:
        sizes = [tuple(int(s) for s in (lvl if isinstance(lvl, (list, tuple)) else [lvl])) for lvl in cfg["sizes"]]
    elif "base_sizes" in cfg:
        n = int(cfg.get("scales_per_octave", 1))
        sizes = [tuple(int(b * 2 ** (k / n)) for k in range(n)) for b in cfg["base_sizes"]]
    else:
        raise ConfigError("model.anchor_generator needs sizes (one list per level) or base_sizes")
    if len(sizes) != num_levels:
        raise ConfigError(f"model.anchor_generator has {len(sizes)} levels of sizes but the neck returns "
                          f"{num_levels} feature maps; give one entry per level")
    ratios = cfg.get("aspect_ratios", [0.5, 1.0, 2.0])
    if ratios and not isinstance(ratios[0], (list, tuple)):
        ratios = [ratios] * num_levels
    return AnchorGenerator(tuple(sizes), tuple(tuple(float(r) for r in lvl) for lvl in ratios))


def _check_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ConfigError(f"model.num_classes must be a positive integer (foreground classes), got {num_classes!r}")
    return num_classes + 1


def rpn_parts(cfg: Mapping[str, Any], backbone: BackboneWithNeck) -> dict:
    """FasterRCNN's ``rpn_*`` keyword arguments (anchors, head, options) from ``anchor_generator`` and ``rpn``."""
    levels = _num_levels(backbone)
    anchors = build_anchor_generator(cfg.get("anchor_generator"), levels,
                                     {"sizes": [[32 * 2 ** i] for i in range(levels)]})
    rpn = dict(cfg.get("rpn") or {})
    rpn_head_cfg = rpn.pop("head", {"type": "RPNHead"})
    return {"rpn_anchor_generator": anchors,
            "rpn_head": HEADS.build(rpn_head_cfg, in_channels=backbone.out_channels,
                                    num_anchors=anchors.num_anchors_per_location()[0]),
            **_section({"rpn": rpn}, "rpn", RPN_KEYS, "rpn_")}


def roi_pool(backbone: BackboneWithNeck, size: int, backward: str = "sparse") -> nn.Module:
    """RoIAlign over the body's levels (not the neck's extra ones), as torchvision's R-CNNs pool;
    ``backward`` is ``roi_head.roi_align_backward`` (:mod:`detcore.models.roi_align`)."""
    return build_roi_pool([str(i) for i in range(len(backbone.body.out_channels_list))], size, sampling_ratio=2,
                          backward=backward)


def _two_stage_parts(cfg: Mapping[str, Any], backbone: BackboneWithNeck, n_out: int) -> tuple[dict, dict]:
    channels = backbone.out_channels
    roi = dict(cfg.get("roi_head") or {})
    resolution = int(roi.pop("roi_size", 7))
    representation = int(roi.pop("representation_size", 1024))
    box_head_cfg = roi.pop("box_head", {"type": "TwoMLPHead"})
    box_predictor_cfg = roi.pop("box_predictor", {"type": "FastRCNNPredictor"})
    mask_cfg = {k: roi.pop(k) for k in MASK_KEYS if k in roi}
    backward = roi.pop("roi_align_backward", "sparse")
    parts = {
        **rpn_parts(cfg, backbone),
        "box_roi_pool": roi_pool(backbone, resolution, backward),
        "box_head": HEADS.build(box_head_cfg, **_box_head_inputs(box_head_cfg, channels, resolution, representation)),
        "box_predictor": HEADS.build(box_predictor_cfg, in_channels=representation, num_classes=n_out),
        **_section({"roi_head": roi}, "roi_head", ROI_KEYS, "box_"),
    }
    return parts, mask_cfg


def mask_parts(mask_cfg: Mapping[str, Any], backbone: BackboneWithNeck, n_out: int, backward: str = "sparse") -> dict:
    """MaskRCNN's ``mask_*`` keyword arguments from the ``roi_head.mask_*`` options in ``mask_cfg``;
    ``backward`` is ``roi_head.roi_align_backward``."""
    layers = tuple(mask_cfg.get("mask_layers", (256, 256, 256, 256)))
    mask_head = HEADS.build(mask_cfg.get("mask_head", {"type": "MaskRCNNHeads"}),
                            in_channels=backbone.out_channels, layers=layers, dilation=1)
    mask_predictor = HEADS.build(mask_cfg.get("mask_predictor", {"type": "MaskRCNNPredictor"}),
                                 in_channels=layers[-1], dim_reduced=layers[-1], num_classes=n_out)
    pool = roi_pool(backbone, int(mask_cfg.get("mask_roi_size", 14)), backward)
    return {"mask_roi_pool": pool, "mask_head": mask_head,
            "mask_predictor": mask_predictor}


def _box_head_inputs(cfg: Mapping[str, Any], channels: int, roi_size: int, representation: int) -> dict:
    """What a box head is given: a head that takes ``input_size`` (convolutions, as torchvision's
    FastRCNNConvFCHead) gets the pooled map's ``(channels, roi_size, roi_size)``; any other gets
    ``in_channels`` = its flattened size (TwoMLPHead). Both get ``representation_size``."""
    import inspect

    builder = HEADS.get(cfg["type"]) if isinstance(cfg, Mapping) and "type" in cfg else None
    if builder is not None and "input_size" in inspect.signature(builder).parameters:
        return {"input_size": (channels, roi_size, roi_size), "representation_size": representation}
    return {"in_channels": channels * roi_size ** 2, "representation_size": representation}


@DETECTORS.register()
def FasterRCNN(num_classes: int, backbone: dict, neck: dict, **cfg: Any) -> TvFasterRCNN:
    n_out = _check_classes(num_classes)
    body = _backbone({"backbone": backbone, "neck": neck})
    parts, mask_cfg = _two_stage_parts(cfg, body, n_out)
    if mask_cfg:
        raise ConfigError(f"model.roi_head: {sorted(mask_cfg)} are Mask R-CNN options; use type: MaskRCNN")
    _reject_unknown(cfg, ("anchor_generator", "rpn", "roi_head", *TRANSFORM_KEYS), "FasterRCNN")
    return TvFasterRCNN(body, num_classes=None, **parts, **_transform_kwargs(cfg))


@DETECTORS.register()
def MaskRCNN(num_classes: int, backbone: dict, neck: dict, **cfg: Any) -> TvMaskRCNN:
    n_out = _check_classes(num_classes)
    body = _backbone({"backbone": backbone, "neck": neck})
    parts, mask_cfg = _two_stage_parts(cfg, body, n_out)
    _reject_unknown(cfg, ("anchor_generator", "rpn", "roi_head", *TRANSFORM_KEYS), "MaskRCNN")
    backward = (cfg.get("roi_head") or {}).get("roi_align_backward", "sparse")
    return TvMaskRCNN(body, num_classes=None, **mask_parts(mask_cfg, body, n_out, backward), **parts,
                      **_transform_kwargs(cfg))


def _single_stage_parts(cfg: Mapping[str, Any], backbone: BackboneWithNeck, n_out: int, default_anchors: dict,
                        default_head: str) -> dict:
    levels = _num_levels(backbone)
    anchors = build_anchor_generator(cfg.get("anchor_generator"), levels, default_anchors)
    head = HEADS.build(cfg.get("head") or {"type": default_head}, in_channels=backbone.out_channels,
                       num_anchors=anchors.num_anchors_per_location()[0], num_classes=n_out)
    return {"anchor_generator": anchors, "head": head}


def _reject_unknown(cfg: Mapping[str, Any], allowed: Sequence[str], name: str) -> None:
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f"model ({name}): unknown option(s) {unknown}; allowed besides num_classes, backbone, "
                          f"neck: {', '.join(allowed)}")


@DETECTORS.register()
def RetinaNet(num_classes: int, backbone: dict, neck: dict, **cfg: Any) -> TvRetinaNet:
    n_out = _check_classes(num_classes)
    body = _backbone({"backbone": backbone, "neck": neck})
    _reject_unknown(cfg, ("anchor_generator", "head", "test_cfg", *TRANSFORM_KEYS), "RetinaNet")
    parts = _single_stage_parts(cfg, body, n_out, {"base_sizes": [32, 64, 128, 256, 512], "scales_per_octave": 3},
                                "RetinaNetHead")
    return TvRetinaNet(body, num_classes=n_out, **parts, **_section(cfg, "test_cfg", RETINANET_KEYS, ""),
                       **_transform_kwargs(cfg))


@DETECTORS.register()
def FCOS(num_classes: int, backbone: dict, neck: dict, **cfg: Any) -> TvFCOS:
    n_out = _check_classes(num_classes)
    body = _backbone({"backbone": backbone, "neck": neck})
    _reject_unknown(cfg, ("anchor_generator", "head", "test_cfg", *TRANSFORM_KEYS), "FCOS")
    parts = _single_stage_parts(cfg, body, n_out, {"sizes": [[8], [16], [32], [64], [128]], "aspect_ratios": [1.0]},
                                "FCOSHead")
    return TvFCOS(body, num_classes=n_out, **parts, **_section(cfg, "test_cfg", FCOS_KEYS, ""),
                  **_transform_kwargs(cfg))


def build_detector(model_cfg: Mapping[str, Any], *, backbone_weights: bool = True) -> nn.Module:
    """Build a detector from ``model:`` config; the model's ``arch`` records its type and ``weights_records``
    what its parts were loaded with (dicts of :class:`~detcore.pretrained.hub.WeightsRecord`).

    ``backbone_weights=False`` leaves ``model.backbone.weights`` unread, for a caller that loads a whole
    checkpoint next (inference, testing, resuming, ``load_from``), as MMDetection's ``init_detector`` does.
    ``channels_last: true`` in ``model_cfg`` returns the model in channels-last memory format
    (:mod:`detcore.models.memory_format`), for every detector type.
    """
    if not isinstance(model_cfg, Mapping):
        raise ConfigError(f"model must be a mapping with a type, got {model_cfg!r}")
    channels_last = model_cfg.get("channels_last", False)
    if not isinstance(channels_last, bool):
        raise ConfigError(f"model.channels_last must be true or false, got {channels_last!r}")
    model_cfg = {k: v for k, v in model_cfg.items() if k != "channels_last"}
    if not backbone_weights and isinstance(model_cfg.get("backbone"), Mapping) and "weights" in model_cfg["backbone"]:
        model_cfg = {**model_cfg, "backbone": {**model_cfg["backbone"], "weights": None}}
    model = DETECTORS.build(model_cfg)
    if channels_last:
        to_channels_last(model)
    model.arch = model_cfg.get("type")
    model.weights_records = [m.weights_record for m in model.modules() if getattr(m, "weights_record", None)]
    return model
