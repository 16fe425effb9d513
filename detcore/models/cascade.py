"""Cascade R-CNN and Cascade Mask R-CNN (Cai and Vasconcelos, 2018) from torchvision's detection parts.

``model.type: CascadeRCNN`` is MMDetection's name for both: with ``roi_head.mask_*`` options it is
Cascade Mask R-CNN. The model is torchvision's ``FasterRCNN`` (backbone, RPN, transform) whose
``roi_heads`` is a :class:`CascadeRoIHeads`. Each stage is a torchvision ``RoIHeads`` (its box
branch: RoIAlign, ``TwoMLPHead``, a predictor, its own ``Matcher`` IoU threshold and ``BoxCoder``
weights). A stage classifies and regresses the boxes the previous stage regressed (detached and
clipped to the image); in training each stage matches them to the ground truth at its own
threshold, resamples them and adds its losses scaled by its stage weight. Box regression is
class-agnostic (:class:`ClassAgnosticPredictor`), as in MMDetection's ``CascadeRoIHead``. At test
time the stages' class logits on the final RoIs are averaged (as MMDetection does) and the boxes
are the last stage's. The mask head runs on the last stage: on its positive samples in training,
on the final detections at test time.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, maskrcnn_loss
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import boxes as box_ops

from detcore.errors import ConfigError
from detcore.models.detectors import (MASK_KEYS, TRANSFORM_KEYS, _backbone, _box_head_inputs, _check_classes,
                                      _reject_unknown, _transform_kwargs, mask_parts, roi_pool, rpn_parts)
from detcore.models.necks import BackboneWithNeck
from detcore.registry import DETECTORS, HEADS

# MMDetection's cascade_rcnn_r50_fpn: IoU 0.5/0.6/0.7, target_stds 0.1/0.05/0.033 (weights = 1/std).
DEFAULT_STAGES = (
    {"fg_iou_thresh": 0.5, "bg_iou_thresh": 0.5, "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0]},
    {"fg_iou_thresh": 0.6, "bg_iou_thresh": 0.6, "bbox_reg_weights": [20.0, 20.0, 10.0, 10.0]},
    {"fg_iou_thresh": 0.7, "bg_iou_thresh": 0.7, "bbox_reg_weights": [30.0, 30.0, 15.0, 15.0]},
)
DEFAULT_LOSS_WEIGHTS = (1.0, 0.5, 0.25)
STAGE_KEYS = ("fg_iou_thresh", "bg_iou_thresh", "bbox_reg_weights", "batch_size_per_image", "positive_fraction",
              "box_head", "box_predictor")
CASCADE_ROI_KEYS = ("roi_size", "representation_size", "score_thresh", "nms_thresh", "detections_per_img",
            "batch_size_per_image", "positive_fraction", "box_head", "box_predictor", "stages", "stage_loss_weights",
            "roi_align_backward", *MASK_KEYS)


@HEADS.register()
class ClassAgnosticPredictor(FastRCNNPredictor):
    """torchvision's ``FastRCNNPredictor`` regressing one box per RoI (4 deltas) instead of one per class."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)


def _class_deltas(deltas: Tensor, classes: Tensor) -> Tensor:
    """[N, 4] deltas: class-agnostic ones as they are, class-specific ones of ``classes`` [N]."""
    if deltas.shape[1] == 4:
        return deltas
    return deltas.reshape(len(deltas), -1, 4)[torch.arange(len(deltas), device=deltas.device), classes]


def box_losses(logits: Tensor, deltas: Tensor, labels: list[Tensor], targets: list[Tensor]) -> tuple[Tensor, Tensor]:
    """torchvision's ``fastrcnn_loss`` (cross entropy; smooth L1, beta 1/9, over the sampled RoIs) for
    class-agnostic or class-specific deltas; torchvision's own takes only class-specific ones."""
    labels_all, targets_all = torch.cat(labels), torch.cat(targets)
    pos = torch.where(labels_all > 0)[0]
    box = F.smooth_l1_loss(_class_deltas(deltas, labels_all)[pos], targets_all[pos], beta=1 / 9, reduction="sum")
    return F.cross_entropy(logits, labels_all), box / labels_all.numel()


class CascadeRoIHeads(nn.Module):
    """``len(stages)`` box stages run one after another, and an optional mask branch on the last.

    ``stages``: torchvision ``RoIHeads`` (box branch only; each one's ``proposal_matcher``,
    ``fg_bg_sampler`` and ``box_coder`` are the stage's); the last one's score threshold, NMS and
    detections per image apply. ``loss_weights``: one per stage. Losses are ``s{k}.loss_classifier``
    and ``s{k}.loss_box_reg`` for stage k (from 0, as MMDetection names them) and ``loss_mask``.
    """

    def __init__(self, stages: Sequence[RoIHeads], loss_weights: Sequence[float],
                 mask_roi_pool: nn.Module | None = None, mask_head: nn.Module | None = None,
                 mask_predictor: nn.Module | None = None) -> None:
        super().__init__()
        if not stages or len(stages) != len(loss_weights):
            raise ValueError(f"{len(stages)} stages and {len(loss_weights)} loss weights; give one weight per stage")
        self.stages = nn.ModuleList(stages)
        self.stage_loss_weights = [float(w) for w in loss_weights]
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_roi_pool, mask_head, mask_predictor

    def has_mask(self) -> bool:
        return self.mask_predictor is not None

    def _predict(self, k: int, features: dict[str, Tensor], rois: list[Tensor],
                 image_shapes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        stage = self.stages[k]
        return stage.box_predictor(stage.box_head(stage.box_roi_pool(features, rois, image_shapes)))

    def _refine(self, k: int, logits: Tensor, deltas: Tensor, rois: list[Tensor], image_shapes: list[tuple[int, int]],
                labels: list[Tensor] | None = None) -> list[Tensor]:
        """The boxes stage ``k`` regressed from ``rois``, detached and clipped: the next stage's RoIs.

        Class-specific deltas are taken for the assigned class (``labels``, training) or else the
        predicted one, as MMDetection's ``regress_by_class``."""
        classes = logits[:, 1:].argmax(1) + 1
        if labels is not None:
            assigned = torch.cat(labels)
            classes = torch.where(assigned > 0, assigned, classes)
        boxes = self.stages[k].box_coder.decode_single(_class_deltas(deltas.detach(), classes), torch.cat(rois))
        return [box_ops.clip_boxes_to_image(b, s) for b, s in zip(boxes.split([len(r) for r in rois]), image_shapes)]

    def _test_stages(self, features: dict[str, Tensor], proposals: list[Tensor],
                     image_shapes: list[tuple[int, int]]) -> list[tuple[list[Tensor], Tensor, Tensor]]:
        """``(RoIs, class logits, box deltas)`` of each stage at test time."""
        out: list[tuple[list[Tensor], Tensor, Tensor]] = []
        rois = proposals
        for k in range(len(self.stages)):
            if k:
                rois = self._refine(k - 1, out[-1][1], out[-1][2], rois, image_shapes)
            out.append((rois, *self._predict(k, features, rois, image_shapes)))
        return out

    @torch.no_grad()
    def stage_boxes(self, features: dict[str, Tensor], proposals: list[Tensor],
                    image_shapes: list[tuple[int, int]]) -> list[list[Tensor]]:
        """The boxes each stage regresses at test time from ``proposals``: one list per stage, one
        tensor per image; row i of every stage descends from proposal i."""
        return [self._refine(k, logits, deltas, rois, image_shapes)
                for k, (rois, logits, deltas) in enumerate(self._test_stages(features, proposals, image_shapes))]

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            return [], self._losses(features, proposals, image_shapes, targets)
        stages = self._test_stages(features, proposals, image_shapes)
        rois, _, deltas = stages[-1]
        logits = torch.stack([s[1] for s in stages]).mean(0)
        if deltas.shape[1] == 4:  # one box for every class, as postprocess_detections takes them
            deltas = deltas.repeat(1, logits.shape[1])
        boxes, scores, labels = self.stages[-1].postprocess_detections(logits, deltas, rois, image_shapes)
        result = [{"boxes": b, "labels": c, "scores": s} for b, s, c in zip(boxes, scores, labels)]
        if self.has_mask():
            mask_logits = self._mask_logits(features, boxes, image_shapes)
            for r, probs in zip(result, maskrcnn_inference(mask_logits, labels)):
                r["masks"] = probs
        return result, {}

    def _losses(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None) -> dict[str, Tensor]:
        if targets is None:
            raise ValueError("targets should not be None when training")
        if self.has_mask() and not all("masks" in t for t in targets):
            raise ValueError("Every element of targets should have a masks key")
        losses: dict[str, Tensor] = {}
        rois = proposals
        for k, stage in enumerate(self.stages):
            rois, matched, labels, regression_targets = stage.select_training_samples(rois, targets)
            logits, deltas = self._predict(k, features, rois, image_shapes)
            loss_cls, loss_box = box_losses(logits, deltas, labels, regression_targets)
            losses[f"s{k}.loss_classifier"] = self.stage_loss_weights[k] * loss_cls
            losses[f"s{k}.loss_box_reg"] = self.stage_loss_weights[k] * loss_box
            if k + 1 < len(self.stages):  # the next stage samples from this one's refined boxes
                rois = self._refine(k, logits, deltas, rois, image_shapes, labels)
        if self.has_mask():
            positive = [torch.where(lab > 0)[0] for lab in labels]
            boxes = [r[p] for r, p in zip(rois, positive)]
            mask_logits = self._mask_logits(features, boxes, image_shapes)
            losses["loss_mask"] = maskrcnn_loss(mask_logits, boxes, [t["masks"] for t in targets],
                                                [t["labels"] for t in targets],
                                                [m[p] for m, p in zip(matched, positive)])
        return losses

    def _mask_logits(self, features: dict[str, Tensor], boxes: list[Tensor],
                     image_shapes: list[tuple[int, int]]) -> Tensor:
        return self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))


class CascadeRCNN(FasterRCNN):
    """torchvision's ``FasterRCNN`` (backbone, RPN, transform) with :class:`CascadeRoIHeads`.

    ``kwargs``: FasterRCNN's ``rpn_*`` and transform options (``min_size``, ``max_size``, ...)."""

    def __init__(self, backbone: nn.Module, roi_heads: CascadeRoIHeads, **kwargs: Any) -> None:
        first = roi_heads.stages[0]
        # FasterRCNN builds the RPN and transform; the RoIHeads it builds from stage 0 is replaced.
        super().__init__(backbone, num_classes=None, box_roi_pool=first.box_roi_pool, box_head=first.box_head,
                         box_predictor=first.box_predictor, **kwargs)
        self.roi_heads = roi_heads

    @torch.no_grad()
    def refinements(self, images: list[Tensor]) -> list[list[Tensor]]:
        """The RPN's test-time proposals, then the boxes each stage regresses from them: one list per
        step (``1 + len(stages)``), one [N, 4] tensor per image in that image's own coordinates; row j
        of every step descends from proposal j. For looking inside the cascade (``benchmarks/cascade_stages.py``)."""
        if self.training:
            raise RuntimeError("refinements() runs the test-time cascade; call model.eval() first")
        original = [tuple(img.shape[-2:]) for img in images]
        batch, _ = self.transform(images)
        features = self.backbone(batch.tensors)
        proposals, _ = self.rpn(batch, features)
        steps = [proposals, *self.roi_heads.stage_boxes(features, proposals, batch.image_sizes)]
        return [[resize_boxes(b, resized, size) for b, resized, size in zip(step, batch.image_sizes, original)]
                for step in steps]


def _number(value: Any, key: str, low: float = 0.0, high: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{key}: expected a number in [{low}, {high}], got {value!r}")
    return float(value)


def _stage_settings(roi: Mapping[str, Any]) -> tuple[list[dict], list[float]]:
    """Each stage's options (shared ``roi_head`` ones filled in) and the stage loss weights, checked."""
    stages = roi.get("stages", DEFAULT_STAGES)
    if not isinstance(stages, (list, tuple)) or not stages:
        raise ConfigError(f"model.roi_head.stages: expected a list of stages (one mapping each, e.g. {{fg_iou_thresh: "
                          f"0.5, bg_iou_thresh: 0.5, bbox_reg_weights: [10, 10, 5, 5]}}), got {stages!r}")
    weights = roi.get("stage_loss_weights", DEFAULT_LOSS_WEIGHTS if len(stages) == len(DEFAULT_LOSS_WEIGHTS) else None)
    if weights is None:
        raise ConfigError(f"model.roi_head.stage_loss_weights: missing; give one weight per stage ({len(stages)}), "
                          f"e.g. [1.0, 0.5, 0.25] for three")
    if not isinstance(weights, (list, tuple)) or len(weights) != len(stages):
        raise ConfigError(f"model.roi_head.stage_loss_weights: expected one weight per stage ({len(stages)}), got "
                          f"{weights!r}")
    weights = [_number(w, f"model.roi_head.stage_loss_weights[{i}]") for i, w in enumerate(weights)]
    shared = {k: roi[k] for k in ("batch_size_per_image", "positive_fraction", "box_head", "box_predictor") if k in roi}
    out = []
    for i, stage in enumerate(stages):
        key = f"model.roi_head.stages[{i}]"
        if not isinstance(stage, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {', '.join(STAGE_KEYS)}, got {stage!r}")
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if unknown:
            raise ConfigError(f"{key}: unknown option(s) {unknown}; allowed: {', '.join(STAGE_KEYS)}")
        s = {**DEFAULT_STAGES[min(i, len(DEFAULT_STAGES) - 1)], **shared, **stage}
        fg = _number(s["fg_iou_thresh"], f"{key}.fg_iou_thresh", 0.0, 1.0)
        if _number(s["bg_iou_thresh"], f"{key}.bg_iou_thresh", 0.0, 1.0) > fg:
            raise ConfigError(f"{key}: bg_iou_thresh {s['bg_iou_thresh']} is above fg_iou_thresh {fg}; RoIs between "
                              f"the two are ignored, so bg_iou_thresh must be <= fg_iou_thresh")
        coder = s["bbox_reg_weights"]
        if not isinstance(coder, (list, tuple)) or len(coder) != 4:
            raise ConfigError(f"{key}.bbox_reg_weights: expected 4 numbers (x, y, w, h; MMDetection's 1/target_stds), "
                              f"got {coder!r}")
        s["bbox_reg_weights"] = tuple(_number(w, f"{key}.bbox_reg_weights", 1e-6) for w in coder)
        out.append(s)
    return out, weights


@DETECTORS.register("CascadeRCNN")
def build_cascade_rcnn(num_classes: int, backbone: dict, neck: dict, **cfg: Any) -> CascadeRCNN:
    """Cascade (Mask) R-CNN from ``model:`` config; ``roi_head.stages`` and ``stage_loss_weights`` default
    to MMDetection's three stages."""
    n_out = _check_classes(num_classes)
    body: BackboneWithNeck = _backbone({"backbone": backbone, "neck": neck})
    _reject_unknown(cfg, ("anchor_generator", "rpn", "roi_head", *TRANSFORM_KEYS), "CascadeRCNN")
    roi = dict(cfg.get("roi_head") or {})
    unknown = sorted(set(roi) - set(CASCADE_ROI_KEYS))
    if unknown:
        raise ConfigError(f"model.roi_head (CascadeRCNN): unknown option(s) {unknown}; allowed: {', '.join(CASCADE_ROI_KEYS)} "
                          f"(IoU thresholds and box coder weights are set per stage in roi_head.stages)")
    rpn = rpn_parts(cfg, body)
    size, width = int(roi.get("roi_size", 7)), int(roi.get("representation_size", 1024))
    settings, loss_weights = _stage_settings(roi)
    backward = roi.get("roi_align_backward", "sparse")
    stages = [RoIHeads(
        roi_pool(body, size, backward),
        HEADS.build(s.get("box_head", {"type": "TwoMLPHead"}),
                    **_box_head_inputs(s.get("box_head", {"type": "TwoMLPHead"}), body.out_channels, size, width)),
        HEADS.build(s.get("box_predictor", {"type": "ClassAgnosticPredictor"}), in_channels=width, num_classes=n_out),
        s["fg_iou_thresh"], s["bg_iou_thresh"], int(s.get("batch_size_per_image", 512)),
        float(s.get("positive_fraction", 0.25)), s["bbox_reg_weights"], float(roi.get("score_thresh", 0.05)),
        float(roi.get("nms_thresh", 0.5)), int(roi.get("detections_per_img", 100))) for s in settings]
    mask_cfg = {k: roi[k] for k in MASK_KEYS if k in roi}
    heads = CascadeRoIHeads(stages, loss_weights, **(mask_parts(mask_cfg, body, n_out, backward) if mask_cfg else {}))
    return CascadeRCNN(body, heads, **rpn, **_transform_kwargs(cfg))
