"""Map an MMDetection ``model`` onto detcore's ``model:`` schema (five families).

Faster R-CNN, Mask R-CNN, RetinaNet and FCOS with a ResNet + FPN map onto torchvision's
models, which is what detcore builds, and Cascade (Mask) R-CNN onto detcore's cascade of
torchvision's RoI heads. A part that would change the network detcore builds
(another detector, backbone, neck or head type) is refused with one line naming it;
settings that change only training (losses, samplers, coders, init) are listed as not mapped.
"""
from __future__ import annotations

from typing import Any

from detcore.errors import ConfigError
from detcore.mmdet_import.source import Source
from detcore.mmdet_import.weights_map import backbone_weights

FAMILIES = {"FasterRCNN": "Faster R-CNN", "MaskRCNN": "Mask R-CNN", "CascadeRCNN": "Cascade (Mask) R-CNN",
            "RetinaNet": "RetinaNet", "FCOS": "FCOS"}
KNOWN_OTHERS = {
    "HybridTaskCascade": "HTC (Hybrid Task Cascade)", "DETR": "DETR",
    "DeformableDETR": "Deformable DETR", "YOLOV3": "YOLOv3", "YOLOX": "YOLOX", "SingleStageDetector": "SSD",
    "MaskScoringRCNN": "Mask Scoring R-CNN", "PointRend": "PointRend", "SparseRCNN": "Sparse R-CNN",
    "QueryInst": "QueryInst", "SOLO": "SOLO", "SOLOv2": "SOLOv2", "YOLACT": "YOLACT", "ATSS": "ATSS",
    "GFL": "GFL", "FSAF": "FSAF", "RPN": "RPN (proposals only)", "FastRCNN": "Fast R-CNN (precomputed proposals)",
    "TridentFasterRCNN": "TridentNet", "GridRCNN": "Grid R-CNN", "CornerNet": "CornerNet", "CenterNet": "CenterNet",
    "Mask2Former": "Mask2Former", "MaskFormer": "MaskFormer", "SCNet": "SCNet", "TOOD": "TOOD", "VFNet": "VarifocalNet",
    "PAA": "PAA", "AutoAssign": "AutoAssign", "DDOD": "DDOD", "NASFCOS": "NAS-FCOS", "FOVEA": "FoveaBox",
    "RepPointsDetector": "RepPoints", "KnowledgeDistillationSingleStageDetector": "LD (distillation)",
    "TwoStagePanopticSegmentor": "Panoptic FPN", "YOLOF": "YOLOF", "LAD": "LAD", "CondInst": "CondInst",
}
TWO_STAGE_HEADS = {"rpn_head": "RPNHead", "roi_head": "StandardRoIHead", "roi_head.bbox_head": "Shared2FCBBoxHead",
                   "roi_head.bbox_roi_extractor": "SingleRoIExtractor"}
MASK_HEADS = {"roi_head.mask_head": "FCNMaskHead", "roi_head.mask_roi_extractor": "SingleRoIExtractor"}
# The torch classes new-style (MMEngine "pure Python") configs name instead of MMCV's aliases.
NORM_ALIASES = {"BatchNorm2d": "BN", "SyncBatchNorm": "SyncBN", "GroupNorm": "GN"}
# (key, repr(value)) pairs in train_cfg/test_cfg that match what torchvision's models do.
EQUIVALENT = {("type", "'MaxIoUAssigner'"), ("type", "'RandomSampler'"), ("type", "'nms'"), ("debug", "False"),
              ("min_bbox_size", "0"), ("pos_weight", "-1"), ("allowed_border", "-1"), ("allowed_border", "0"),
              ("ignore_iof_thr", "-1"), ("neg_pos_ub", "-1"), ("add_gt_as_proposals", "True")}


def unsupported(src: Source, path: str, name: str) -> ConfigError:
    """The one-line refusal of an architecture (or part) detcore does not build."""
    return ConfigError(f"{src.filename}: {path}: {name} is an architecture detcore does not have; detcore builds "
                       f"{', '.join(FAMILIES.values())} on ResNet + FPN (see docs/mmdetection.md)")


def detector_type(src: Source) -> str:
    """``model.type`` if it is one of the five families; otherwise the one-line refusal."""
    kind = src.get("model.type")
    if not isinstance(kind, str):
        raise ConfigError(f"{src.filename}: no model.type; is this a _base_ dataset or schedule file? Import the "
                          f"config that defines the detector")
    if kind not in FAMILIES:
        raise unsupported(src, "model.type", f"{kind} ({KNOWN_OTHERS.get(kind, 'not one of the five families')})")
    return kind


def _norm_type(norm: Any, default: str | None = "BN") -> str | None:
    kind = norm.get("type", default) if isinstance(norm, dict) else default
    return NORM_ALIASES.get(kind, kind)


def _require_type(src: Source, path: str, expected: str) -> None:
    kind = src.get(f"model.{path}.type")
    if kind != expected:
        raise unsupported(src, f"model.{path}.type", str(kind))


def _backbone(src: Source, start_level: int) -> dict:
    p = "model.backbone"
    _require_type(src, "backbone", "ResNet")
    depth = src.get(f"{p}.depth")
    if depth not in (18, 34, 50, 101):
        raise unsupported(src, f"{p}.depth", f"ResNet-{depth}")
    for key in ("dcn", "plugins"):
        if src.get(f"{p}.{key}") is not None:
            raise unsupported(src, f"{p}.{key}", f"ResNet with {key}")
    if src.get(f"{p}.num_stages", 4) != 4 or src.get(f"{p}.strides", [1, 2, 2, 2]) != [1, 2, 2, 2] \
            or src.get(f"{p}.dilations", [1, 1, 1, 1]) != [1, 1, 1, 1]:
        raise unsupported(src, p, "a ResNet with other stages, strides or dilations")
    out_indices = src.get(f"{p}.out_indices", [0, 1, 2, 3])
    frozen = src.get(f"{p}.frozen_stages", -1)
    norm = src.get(f"{p}.norm_cfg", {"type": "BN", "requires_grad": True}) or {}
    norm_eval = src.get(f"{p}.norm_eval", True)
    kind = _norm_type(norm)
    if kind in ("BN", "SyncBN") and norm_eval:
        detcore_norm = "frozen_bn"
        if norm.get("requires_grad", True):
            src.note(f"{p}.norm_cfg.requires_grad", "frozen_bn: BN scale and shift do not train here")
    elif kind in ("BN", "SyncBN"):
        detcore_norm = "bn"
        if kind == "SyncBN":
            src.note(f"{p}.norm_cfg.type", "bn: BatchNorm per process, not synchronised")
    elif kind == "GN":
        detcore_norm = "gn"
        src.get(f"{p}.norm_cfg.num_groups")
    else:
        raise unsupported(src, f"{p}.norm_cfg.type", f"ResNet with {kind} layers")
    style = src.get(f"{p}.style", "pytorch")
    if style != "pytorch":
        src.note(f"{p}.style", "torchvision's ResNet is pytorch style (stride in the 3x3 conv); caffe weights "
                               "do not carry over")
    trainable = 5 if frozen < 0 else max(0, 4 - frozen)
    returned = [int(i) + 1 for i in out_indices][start_level:]
    return {"type": "ResNet", "depth": depth, "norm": detcore_norm, "trainable_layers": trainable,
            "returned_layers": returned, "weights": backbone_weights(src)}


def _neck(src: Source, n_body: int) -> dict:
    p = "model.neck"
    _require_type(src, "neck", "FPN")
    src.get(f"{p}.in_channels")
    out = {"type": "FPN", "out_channels": src.get(f"{p}.out_channels", 256)}
    end = src.get(f"{p}.end_level", -1)
    if end not in (-1, None):
        raise unsupported(src, f"{p}.end_level", f"FPN with end_level={end}")
    extra = src.get(f"{p}.num_outs", n_body) - n_body
    convs = src.get(f"{p}.add_extra_convs", False)
    relu = src.get(f"{p}.relu_before_extra_convs", False)
    if extra == 0:
        out["extra_blocks"] = "none"
    elif extra == 1 and not convs:
        out["extra_blocks"] = "pool"
    elif extra == 2 and convs in (True, "on_input", "on_output"):
        out["extra_blocks"] = "p6p7"
        out["p6p7_from"] = "p5" if convs == "on_output" else "c5"
        if not relu:
            src.note(f"{p}.relu_before_extra_convs", "torchvision applies ReLU before P7")
    else:
        raise unsupported(src, p, f"FPN with {n_body} inputs, num_outs={extra + n_body}, add_extra_convs={convs}")
    norm = src.get(f"{p}.norm_cfg")
    if norm:
        if _norm_type(norm) != "GN":
            raise unsupported(src, f"{p}.norm_cfg", f"FPN with {norm.get('type')}")
        out["norm"] = "gn"
    return out


def _copy(src: Source, out: dict, pairs: dict[str, str]) -> None:
    """``out[detcore_key] = mmdet value`` for each ``mmdet path -> detcore key`` present."""
    for path, key in pairs.items():
        if src.has(path):
            value = src.get(path)
            out[key] = list(value) if isinstance(value, list) else value


def _two_stage(src: Source, model: dict, kind: str) -> None:
    """``anchor_generator``, ``rpn``, ``roi_head`` and ``num_classes`` of a Faster/Mask/Cascade R-CNN."""
    mask = kind == "MaskRCNN" or (kind == "CascadeRCNN" and src.has("model.roi_head.mask_head"))
    heads = dict(TWO_STAGE_HEADS)
    if kind == "CascadeRCNN":  # cascade_roi_head checks the roi_head and its box heads
        heads = {k: v for k, v in heads.items() if k not in ("roi_head", "roi_head.bbox_head")}
    for path, expected in {**heads, **(MASK_HEADS if mask else {})}.items():
        _require_type(src, path, expected)
    a = "model.rpn_head.anchor_generator"
    if src.get(f"{a}.type", "AnchorGenerator") != "AnchorGenerator":
        raise unsupported(src, f"{a}.type", str(src.get(f"{a}.type")))
    scales, strides = src.get(f"{a}.scales", [8]), src.get(f"{a}.strides", [4, 8, 16, 32, 64])
    model["anchor_generator"] = {"sizes": [[int(s * st) for s in scales] for st in strides],
                                 "aspect_ratios": list(src.get(f"{a}.ratios", [0.5, 1.0, 2.0]))}
    src.use("model.rpn_head.in_channels", "model.rpn_head.feat_channels",
            "model.roi_head.bbox_roi_extractor.out_channels", "model.roi_head.bbox_roi_extractor.featmap_strides",
            "model.roi_head.bbox_roi_extractor.roi_layer.type")
    rpn: dict = {}
    _copy(src, rpn, {"model.train_cfg.rpn.assigner.pos_iou_thr": "fg_iou_thresh",
                     "model.train_cfg.rpn.assigner.neg_iou_thr": "bg_iou_thresh",
                     "model.train_cfg.rpn.sampler.num": "batch_size_per_image",
                     "model.train_cfg.rpn.sampler.pos_fraction": "positive_fraction",
                     "model.train_cfg.rpn_proposal.nms_pre": "pre_nms_top_n_train",
                     "model.train_cfg.rpn_proposal.max_per_img": "post_nms_top_n_train",
                     "model.test_cfg.rpn.nms_pre": "pre_nms_top_n_test",
                     "model.test_cfg.rpn.max_per_img": "post_nms_top_n_test",
                     "model.test_cfg.rpn.nms.iou_threshold": "nms_thresh"})
    train_nms = src.get("model.train_cfg.rpn_proposal.nms.iou_threshold")
    if train_nms is not None and train_nms != rpn.get("nms_thresh"):
        src.note("model.train_cfg.rpn_proposal.nms.iou_threshold", "one rpn.nms_thresh for training and testing "
                                                                    "here (the test value is used)")
    model["rpn"] = rpn
    roi: dict = {"roi_size": src.get("model.roi_head.bbox_roi_extractor.roi_layer.output_size", 7),
                 "representation_size": 1024}
    _copy(src, roi, {"model.test_cfg.rcnn.score_thr": "score_thresh",
                     "model.test_cfg.rcnn.nms.iou_threshold": "nms_thresh",
                     "model.test_cfg.rcnn.max_per_img": "detections_per_img"})
    if kind == "CascadeRCNN":
        cascade_roi_head(src, model, roi)
    else:
        src.use("model.roi_head.bbox_head.in_channels", "model.roi_head.bbox_head.roi_feat_size")
        model["num_classes"] = src.get("model.roi_head.bbox_head.num_classes")
        roi["representation_size"] = src.get("model.roi_head.bbox_head.fc_out_channels", 1024)
        _copy(src, roi, {"model.train_cfg.rcnn.assigner.pos_iou_thr": "fg_iou_thresh",
                         "model.train_cfg.rcnn.assigner.neg_iou_thr": "bg_iou_thresh",
                         "model.train_cfg.rcnn.sampler.num": "batch_size_per_image",
                         "model.train_cfg.rcnn.sampler.pos_fraction": "positive_fraction"})
    if mask:
        _mask_head(src, model, roi)
    model["roi_head"] = roi


def _mask_head(src: Source, model: dict, roi: dict) -> None:
    h = "model.roi_head.mask_head"
    roi["mask_layers"] = [src.get(f"{h}.conv_out_channels", 256)] * src.get(f"{h}.num_convs", 4)
    roi["mask_roi_size"] = src.get("model.roi_head.mask_roi_extractor.roi_layer.output_size", 14)
    src.use(f"{h}.in_channels", "model.roi_head.mask_roi_extractor.out_channels",
            "model.roi_head.mask_roi_extractor.featmap_strides", "model.roi_head.mask_roi_extractor.roi_layer.type")
    mask_classes = src.get(f"{h}.num_classes", model["num_classes"])
    if mask_classes != model["num_classes"]:
        raise ConfigError(f"{src.filename}: model.roi_head.mask_head.num_classes={mask_classes} but "
                          f"model.roi_head.bbox_head.num_classes={model['num_classes']}; detcore has one "
                          f"model.num_classes, make them equal")


def _stage_list(src: Source, path: str, n: int) -> list[str]:
    """The key paths of the ``n`` per-stage entries at ``path``: a list of n, or one dict for every stage."""
    value = src.lookup(path)
    if isinstance(value, dict):
        return [path] * n
    if not isinstance(value, list) or len(value) != n:
        raise ConfigError(f"{src.filename}: {path} has {len(value) if isinstance(value, list) else 'no'} entries but "
                          f"model.roi_head.num_stages is {n}; give one per stage")
    return [f"{path}.{i}" for i in range(n)]


def cascade_roi_head(src: Source, model: dict, roi: dict) -> None:
    """MMDetection's ``CascadeRoIHead`` (2.x and 3.x spell it alike) onto ``roi`` (detcore's roi_head) and
    ``model["num_classes"]``: per stage, the IoU threshold (``train_cfg.rcnn[i].assigner``), sampler,
    box coder weights (``1 / bbox_head[i].bbox_coder.target_stds``) and predictor (``reg_class_agnostic``);
    ``stage_loss_weights``. One mask head on the last stage stands for MMDetection's one per stage."""
    r = "model.roi_head"
    _require_type(src, "roi_head", "CascadeRoIHead")
    n = src.get(f"{r}.num_stages", 3)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{src.filename}: {r}.num_stages={n!r}; expected a positive integer")
    weights = src.get(f"{r}.stage_loss_weights")
    if not isinstance(weights, list) or len(weights) != n:
        raise ConfigError(f"{src.filename}: {r}.stage_loss_weights={weights!r}; expected one weight per stage "
                          f"(num_stages={n})")
    heads, trains = _stage_list(src, f"{r}.bbox_head", n), _stage_list(src, "model.train_cfg.rcnn", n)
    stages, shape = [], None
    for h, t in zip(heads, trains):
        _require_type(src, h[len("model."):], "Shared2FCBBoxHead")
        src.use(f"{h}.in_channels")
        head_shape = (src.get(f"{h}.fc_out_channels", 1024), src.get(f"{h}.roi_feat_size", 7),
                      src.get(f"{h}.num_classes"))
        if shape not in (None, head_shape):
            raise unsupported(src, h, "a cascade whose stages differ in fc_out_channels, roi_feat_size or num_classes")
        shape = head_shape
        c = f"{h}.bbox_coder"
        if src.get(f"{c}.type", "DeltaXYWHBBoxCoder") != "DeltaXYWHBBoxCoder" or \
                any(m != 0 for m in src.get(f"{c}.target_means", [0.0] * 4)):
            raise unsupported(src, c, "a box coder other than DeltaXYWHBBoxCoder with zero target_means")
        stage = {"fg_iou_thresh": src.get(f"{t}.assigner.pos_iou_thr"),
                 "bg_iou_thresh": src.get(f"{t}.assigner.neg_iou_thr"),
                 "bbox_reg_weights": [round(1 / s, 3) for s in src.get(f"{c}.target_stds", [0.1, 0.1, 0.2, 0.2])]}
        _copy(src, stage, {f"{t}.sampler.num": "batch_size_per_image",
                           f"{t}.sampler.pos_fraction": "positive_fraction"})
        if src.get(f"{t}.assigner.match_low_quality", True) is False:  # torchvision's RoI matcher; min_pos_iou unused
            src.use(f"{t}.assigner.min_pos_iou")
        if not src.get(f"{h}.reg_class_agnostic", False):
            stage["box_predictor"] = {"type": "FastRCNNPredictor"}
        stages.append(stage)
    for key in ("batch_size_per_image", "positive_fraction"):  # one roi_head value when every stage agrees
        values = {repr(s.get(key)) for s in stages}
        if len(values) == 1 and key in stages[0]:
            roi[key] = stages[0][key]
            for s in stages:
                del s[key]
    model["num_classes"] = shape[2]
    roi.update(representation_size=shape[0], stages=stages, stage_loss_weights=list(weights))
    if src.has(f"{r}.mask_head"):
        if isinstance(src.lookup(f"{r}.mask_head"), list):
            raise unsupported(src, f"{r}.mask_head", "a list of mask heads (detcore has one, on the last stage)")
        src.note(f"{r}.mask_head.type", "one mask head, on the last stage (MMDetection trains one per stage "
                                         "and averages their masks at test time)")


def _single_stage(src: Source, model: dict, kind: str) -> None:
    h = "model.bbox_head"
    _require_type(src, "bbox_head", {"RetinaNet": "RetinaHead", "FCOS": "FCOSHead"}[kind])
    if src.get(f"{h}.stacked_convs", 4) != 4:
        raise unsupported(src, f"{h}.stacked_convs", f"a {kind} head with {src.get(f'{h}.stacked_convs')} convs")
    src.use(f"{h}.in_channels", f"{h}.feat_channels")
    model["num_classes"] = src.get(f"{h}.num_classes")
    test: dict = {}
    _copy(src, test, {"model.test_cfg.score_thr": "score_thresh", "model.test_cfg.nms.iou_threshold": "nms_thresh",
                      "model.test_cfg.max_per_img": "detections_per_img", "model.test_cfg.nms_pre": "topk_candidates"})
    if kind == "RetinaNet":
        a = f"{h}.anchor_generator"
        base = src.get(f"{a}.octave_base_scale", 4)
        model["anchor_generator"] = {
            "base_sizes": [int(base * s) for s in src.get(f"{a}.strides", [8, 16, 32, 64, 128])],
            "scales_per_octave": src.get(f"{a}.scales_per_octave", 3),
            "aspect_ratios": list(src.get(f"{a}.ratios", [0.5, 1.0, 2.0]))}
        src.use(f"{a}.type")
        _copy(src, test, {"model.train_cfg.assigner.pos_iou_thr": "fg_iou_thresh",
                          "model.train_cfg.assigner.neg_iou_thr": "bg_iou_thresh"})
    else:
        strides = src.get(f"{h}.strides", [8, 16, 32, 64, 128])
        model["anchor_generator"] = {"sizes": [[int(s)] for s in strides], "aspect_ratios": [1.0]}
        if src.get(f"{h}.center_sampling", False):
            test["center_sampling_radius"] = src.get(f"{h}.center_sample_radius", 1.5)
        if _norm_type(src.get(f"{h}.norm_cfg") or {}, None) != "GN":
            src.note(f"{h}.norm_cfg", "torchvision's FCOS head always has GroupNorm")
    model["test_cfg"] = test


def _use_equivalents(src: Source, node: Any, path: str) -> None:
    """Mark settings under ``path`` that are what torchvision does anyway (so not worth listing)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (key, repr(value)) in EQUIVALENT:
                src.use(f"{path}.{key}")
            else:
                _use_equivalents(src, value, f"{path}.{key}")
    elif isinstance(node, list):  # Cascade R-CNN's train_cfg.rcnn, one entry per stage
        for i, value in enumerate(node):
            _use_equivalents(src, value, f"{path}.{i}")


def map_model(src: Source) -> dict:
    """detcore's ``model:`` for the merged MMDetection config in ``src``."""
    kind = detector_type(src)
    for section in ("train_cfg", "test_cfg"):
        _use_equivalents(src, src.lookup(f"model.{section}"), f"model.{section}")
    start = src.get("model.neck.start_level", 0)
    model: dict = {"type": kind, "num_classes": None, "backbone": _backbone(src, start)}
    model["neck"] = _neck(src, len(model["backbone"]["returned_layers"]))
    if kind in ("FasterRCNN", "MaskRCNN", "CascadeRCNN"):
        _two_stage(src, model, kind)
    else:
        _single_stage(src, model, kind)
    if not isinstance(model["num_classes"], int):
        raise ConfigError(f"{src.filename}: the heads give no num_classes (got {model['num_classes']!r}); set "
                          f"num_classes in the box head")
    model = {"type": kind, "num_classes": model.pop("num_classes"), **{k: v for k, v in model.items() if k != "type"}}
    return model
