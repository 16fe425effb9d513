"""The config values detcore relies on, and their bounds: one table, checked when a config loads.

Every row names a key, what its value must be and, for sizes and counts, the bound past which
no real detection job goes. :func:`value_problems` runs the table; ``load_config`` calls it, so
``detcore train``/``test``, ``detcore config show`` and ``launcher submit`` (without importing
torch) refuse a bad value with one line per key and exit code 2, before a work dir, an
experiment row or a job exists, and a retry never repeats it.

The bounds are fixed, not settings: each is far above what any published detector uses, and a
value past it is a typo or a unit mix-up (``1e9`` for ``1e-9``, pixels for a fraction) that would
otherwise surface minutes later as a traceback or a 100 GB allocation:

* an image side (``model.min_size``/``max_size``, ``Resize`` scales, anchor sizes) at most
  :data:`MAX_IMAGE_SIDE` = 16384 pixels: COCO trains at 1333, large-image models at 4096; one
  16384 x 16384 image through a ResNet-50 FPN needs well over 100 GB of activations;
* a batch at most :data:`MAX_BATCH_PER_GPU` = 4096 images per GPU (detection uses 1 to 64);
* DataLoader workers at most :data:`MAX_WORKERS_PER_GPU` = 256 processes per GPU (more than the
  cores of any node; each is a process holding a copy of the dataset index);
* ``model.num_classes`` at most :data:`MAX_CLASSES` = 100,000 (LVIS has 1,203 classes,
  ImageNet-21k 21,841; the box predictor grows with it);
* proposal, sample and candidate counts per image at most :data:`MAX_PER_IMAGE` = 100,000 and
  detections per image at most :data:`MAX_DETECTIONS` = 10,000 (torchvision's defaults are
  256 to 2,000 and 100);
* IoU, NMS and score thresholds in [0, 1]; sampling fractions in (0, 1]; anchor aspect ratios
  in [0.01, 100].

Keys are dotted paths; ``*`` matches any split name or list position, and a row with
``of_type`` applies only to pipeline steps or datasets of those types. Keys a config leaves
out are not checked (the builders' defaults are sane).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

MAX_IMAGE_SIDE = 16384
MAX_BATCH_PER_GPU = 4096
MAX_WORKERS_PER_GPU = 256
MAX_CLASSES = 100_000
MAX_PER_IMAGE = 100_000
MAX_DETECTIONS = 10_000
MAX_LEVELS = 16  # feature maps of a neck (FPNs have 5 or 6)
MAX_PER_LEVEL = 32  # anchor sizes or aspect ratios per level (RetinaNet: 3 and 3)

# (key, value) -> a problem line ("KEY must be ..., got ..."), or None when the value is fine
Rule = Callable[[str, Any], "str | None"]


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _got(value: Any) -> str:
    return f"got {value!r:.100}" + (" (write numbers without quotes, e.g. 1e-4)" if _quoted_number(value) else "")


def _quoted_number(value: Any) -> bool:
    try:
        return isinstance(value, str) and math.isfinite(float(value))
    except ValueError:
        return False


def integer(low: int, high: int | None = None, why: str = "") -> Rule:
    """An int (not a bool) >= ``low`` and, when given, <= ``high`` (``why`` says what the bound protects)."""
    expected = {0: "an integer >= 0", 1: "a positive integer"}.get(low, f"an integer >= {low}")

    def rule(key: str, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"{key} must be {expected}, {_got(value)}"
        if high is not None and value > high:
            return f"{key} must be at most {high} ({why}), got {value}"
        return None
    return rule


def number(low: float, high: float | None = None, *, above_low: bool = False, below_high: bool = False,
           optional: bool = False, what: str = "", why: str = "") -> Rule:
    """A finite real number in the interval from ``low`` to ``high`` (open ends when asked).

    ``optional``: ``null`` is allowed. ``what`` replaces the generated description (e.g.
    ``"a threshold in [0, 1]"``); ``why``: what the upper bound protects, shown with it.
    """
    if not what:
        if high is not None and not why:
            what = f"a number in {'(' if above_low else '['}{low:g}, {high:g}{')' if below_high else ']'}"
        elif low == 0:
            what = "a positive number" if above_low else "a number >= 0"
        else:
            what = f"a number {'>' if above_low else '>='} {low:g}"

    def rule(key: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if (not _real(value) or value < low or (above_low and value == low)
                or (high is not None and not why and (value > high or (below_high and value == high)))):
            return f"{key} must be {what}, {_got(value)}"
        if high is not None and why and value > high:
            return f"{key} must be at most {high:g} ({why}), got {value}"
        return None
    return rule


def items(each: Rule, *, most: int, least: int = 1, scalar: bool = False, what: str) -> Rule:
    """A list of ``least``..``most`` values, each passing ``each`` (the first bad one is named by
    its index). ``scalar``: a single value is accepted in place of the list."""

    def rule(key: str, value: Any) -> str | None:
        if scalar and not isinstance(value, list):
            return each(key, value)
        if not isinstance(value, list) or not least <= len(value) <= most:
            return f"{key} must be {what}, got {value!r:.100}"
        return next((p for i, v in enumerate(value) if (p := each(f"{key}.{i}", v))), None)
    return rule


def per_level(flat: Rule, what: str) -> Rule:
    """``flat`` (one value for every level), or a list of ``flat`` values, one per level."""
    nested = items(flat, most=MAX_LEVELS, what=what)

    def rule(key: str, value: Any) -> str | None:
        return (nested if isinstance(value, list) and value and isinstance(value[0], list) else flat)(key, value)
    return rule


def one_of(*choices: str) -> Rule:
    def rule(key: str, value: Any) -> str | None:
        return None if value in choices else f"{key} must be one of {', '.join(choices)}, got {value!r:.100}"
    return rule


def boolean(key: str, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{key} must be true or false, got {value!r:.100}"


def optional_boolean(key: str, value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else f"{key} must be true, false or null, got {value!r:.100}"


FOREACH_AND_FUSED = ("optimizer.foreach and optimizer.fused are both true; torch runs one or the other: "
                     "set one of them to false")


def compile_setting(key: str, value: Any) -> str | None:
    """The ``compile:`` section (:func:`detcore.engine.compile_backbone.compile_settings` reads it)."""
    from detcore.engine.compile_backbone import compile_settings
    from detcore.errors import ConfigError

    try:
        compile_settings(value)
    except ConfigError as exc:
        return str(exc)
    return None


THRESHOLD = number(0, 1, what="a number in [0, 1]")
FRACTION = number(0, 1, above_low=True, what="a number in (0, 1]")
SIDE = integer(1, MAX_IMAGE_SIDE, "pixels per image side")
SIDES = items(SIDE, most=64, scalar=True, what=f"an image side from 1 to {MAX_IMAGE_SIDE} or a list of them")
SCALE = items(SIDE, least=2, most=2, scalar=True, what="a side or [max_long, max_short] in pixels")
BATCH = integer(1, MAX_BATCH_PER_GPU, "images per GPU in one step; detection uses 1 to 64")
PER_IMAGE = integer(1, MAX_PER_IMAGE, "per image; torchvision's defaults are 256 to 2000")
DETECTIONS = integer(1, MAX_DETECTIONS, "detections kept per image; COCO evaluates 100")
ANCHOR_SIDE = number(1, MAX_IMAGE_SIDE, what=f"an anchor side in pixels from 1 to {MAX_IMAGE_SIDE}")
RATIOS = items(number(0.01, 100, what="an aspect ratio (height / width) in [0.01, 100]"), most=MAX_PER_LEVEL,
               what="a list of aspect ratios, e.g. [0.5, 1.0, 2.0]")
CHANNELS = integer(1, 4096, "channels; detection necks and heads use 64 to 1024")
UNIT_MEAN = items(number(0, 1, what="a mean of 0..1 pixel values in [0, 1] (divide 0..255 values by 255)"),
                  least=3, most=3, what="three numbers (R, G, B) in [0, 1]")
UNIT_STD = items(number(0, 1, above_low=True, what="a standard deviation of 0..1 pixel values in (0, 1] "
                        "(divide 0..255 values by 255)"), least=3, most=3, what="three numbers (R, G, B) in (0, 1]")


@dataclass(frozen=True)
class Check:
    """One row: the value at ``key`` must pass ``rule``; with ``of_type``, only where the mapping
    holding the key has one of these ``type`` names (a pipeline step, a dataset of detcore's own)."""

    key: str
    rule: Rule
    of_type: tuple[str, ...] | None = None


RESIZE = ("Resize",)
DATASETS = ("CocoDataset", "ShapesDataset")  # a dataset of custom_imports may give these keys other meanings
DECODERS = ("torchvision", "pillow")  # CocoDataset's decoder (detcore.data.decode)


CHECKS: tuple[Check, ...] = (
    # --- data: batches, workers, image scales
    Check("data.samples_per_gpu", BATCH),
    Check("data.test_samples_per_gpu", BATCH),
    Check("data.*.samples_per_gpu", BATCH),
    Check("data.workers_per_gpu", integer(0, MAX_WORKERS_PER_GPU, "DataLoader processes per GPU")),
    Check("data.*.workers_per_gpu", integer(0, MAX_WORKERS_PER_GPU, "DataLoader processes per GPU")),
    Check("amp", boolean),
    Check("compile", compile_setting),
    Check("data.*.max_boxes_per_image", integer(1), DATASETS),
    *(Check(f"data.*.{k}", boolean, DATASETS) for k in ("skip_degenerate_boxes", "with_mask", "test_mode",
                                                        "filter_empty_gt")),
    Check("data.*.decoder", one_of(*DECODERS), ("CocoDataset",)),
    Check("data.*.pipeline.*.scale", SCALE, of_type=RESIZE),
    Check("data.*.pipeline.*.size", SIDE, of_type=RESIZE),
    Check("data.*.pipeline.*.max_size", SIDE, of_type=RESIZE),
    Check("data.*.pipeline.*.scales", items(SCALE, most=256, what="a list of sides or [max_long, max_short] pairs"),
          of_type=RESIZE),
    # --- model: classes, input size, anchors
    Check("model.num_classes", integer(1, MAX_CLASSES, "foreground classes; LVIS has 1203")),
    Check("model.channels_last", boolean),
    Check("model.min_size", SIDES),
    Check("model.max_size", SIDE),
    Check("model.image_mean", UNIT_MEAN),
    Check("model.image_std", UNIT_STD),
    Check("model.anchor_generator.sizes",
          items(items(ANCHOR_SIDE, most=MAX_PER_LEVEL, scalar=True, what="an anchor side or a list of them"),
                most=MAX_LEVELS, what="a list with one entry (a side or a list of sides) per feature map, "
                                      "e.g. [[32], [64], [128]]")),
    Check("model.anchor_generator.base_sizes", items(ANCHOR_SIDE, most=MAX_LEVELS,
                                                     what="a list of anchor sides, one per feature map")),
    Check("model.anchor_generator.scales_per_octave", integer(1, MAX_PER_LEVEL, "anchor scales per level")),
    Check("model.anchor_generator.aspect_ratios",
          per_level(RATIOS, "a list of aspect ratios, or one such list per feature map")),
    Check("model.neck.out_channels", CHANNELS),
    # --- model: RPN, RoI heads, single-stage test options
    *(Check(f"model.rpn.{k}", PER_IMAGE) for k in ("pre_nms_top_n_train", "pre_nms_top_n_test",
                                                   "post_nms_top_n_train", "post_nms_top_n_test",
                                                   "batch_size_per_image")),
    *(Check(f"model.{s}.{k}", THRESHOLD) for s in ("rpn", "roi_head", "test_cfg")
      for k in ("nms_thresh", "score_thresh", "fg_iou_thresh", "bg_iou_thresh")),
    Check("model.rpn.positive_fraction", FRACTION),
    Check("model.roi_head.positive_fraction", FRACTION),
    Check("model.roi_head.batch_size_per_image", PER_IMAGE),
    Check("model.roi_head.detections_per_img", DETECTIONS),
    Check("model.roi_head.roi_size", integer(1, 64, "RoIAlign output side; Faster R-CNN uses 7")),
    Check("model.roi_head.mask_roi_size", integer(1, 128, "RoIAlign output side; Mask R-CNN uses 14")),
    Check("model.roi_head.representation_size", integer(1, 16384, "box head features; Faster R-CNN uses 1024")),
    Check("model.roi_head.mask_layers", items(CHANNELS, most=16, what="a list of conv channel counts")),
    Check("model.test_cfg.detections_per_img", DETECTIONS),
    Check("model.test_cfg.topk_candidates", PER_IMAGE),
    Check("model.test_cfg.center_sampling_radius", number(0, 64, why="in strides; FCOS uses 1.5")),
    # --- schedule and optimizer
    Check("runner.max_iters", integer(1)),
    Check("runner.max_epochs", integer(1)),
    Check("lr_config.warmup_iters", integer(0)),
    Check("optimizer.lr", number(0, above_low=True)),
    *(Check(k, number(0, optional=True)) for k in ("optimizer.weight_decay", "optimizer.eps", "lr_config.gamma",
                                                    "lr_config.min_lr_ratio")),
    Check("optimizer.momentum", number(0, 1, optional=True)),
    *(Check(f"optimizer.{k}", optional_boolean) for k in ("foreach", "fused")),
    Check("lr_config.warmup_ratio", number(0, 1, optional=True)),
    Check("optimizer.betas", items(number(0, 1, below_high=True), least=2, most=2,
                                   what="two numbers in [0, 1), e.g. [0.9, 0.999]")),
    Check("optimizer_config.grad_clip.max_norm", number(0, above_low=True)),
)

# (section, its torchvision defaults (fg, bg)): a Matcher asserts bg_iou_thresh <= fg_iou_thresh
IOU_PAIRS = (("rpn", (0.7, 0.3)), ("roi_head", (0.5, 0.5)), ("test_cfg", (0.5, 0.4)))


def _matches(node: Any, parts: list[str], prefix: str) -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, value, the mapping holding it)`` for every key of ``node`` matching ``parts``."""
    head, rest = parts[0], parts[1:]
    if isinstance(node, Mapping):
        children = list(node.items()) if head == "*" else [(head, node[head])] if head in node else []
    elif isinstance(node, list) and head == "*":
        children = list(enumerate(node))
    else:
        return
    for name, child in children:
        key = f"{prefix}{name}"
        if rest:
            yield from _matches(child, rest, key + ".")
        else:
            yield key, child, node


def _iou_pair_problems(cfg: Mapping[str, Any]) -> Iterator[str]:
    model = cfg.get("model")
    for section, (fg_default, bg_default) in IOU_PAIRS:
        values = model.get(section) if isinstance(model, Mapping) else None
        if not isinstance(values, Mapping) or not ({"fg_iou_thresh", "bg_iou_thresh"} & values.keys()):
            continue
        fg, bg = values.get("fg_iou_thresh", fg_default), values.get("bg_iou_thresh", bg_default)
        if _real(fg) and _real(bg) and bg > fg:
            yield (f"model.{section}.bg_iou_thresh ({bg:g}) must not be above fg_iou_thresh ({fg:g}): boxes under "
                   f"bg are background, over fg foreground; lower bg_iou_thresh or raise fg_iou_thresh")


def value_problems(cfg: Mapping[str, Any]) -> list[str]:
    """One line per key of ``cfg`` whose value the table refuses (empty when all are fine)."""
    problems = []
    for check in CHECKS:
        for key, value, holder in _matches(cfg, check.key.split("."), ""):
            if check.of_type is not None and holder.get("type") not in check.of_type:
                continue
            problem = check.rule(key, value)
            if problem:
                problems.append(problem)
    problems += _iou_pair_problems(cfg)
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, Mapping) and optimizer.get("foreach") is True and optimizer.get("fused") is True:
        problems.append(FOREACH_AND_FUSED)
    return problems
