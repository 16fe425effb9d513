"""MMDetection's geometric augmentations: ``Rotate`` (2.x and 3.x), ``Translate`` and ``Shear`` (2.x),
``TranslateX``/``TranslateY`` and ``ShearX``/``ShearY`` (3.x), with MMDetection's parameters.

Each is one affine warp of torchvision's ``transforms.v2.functional.affine`` applied to the image,
the ``BoundingBoxes`` and the ``Mask`` alike, so boxes and masks move with the image. A box
becomes the enclosing box of its moved corners (as MMDetection computes it), clipped to the image;
boxes that leave the image or shrink under one pixel are dropped with their labels and masks.
The image keeps its size. Fill values are MMDetection's (0..255, BGR; see :func:`fill_rgb`).
Rotation angles follow mmcv (positive is clockwise); shears are about the top-left corner, as
``mmcv.imshear``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from torchvision.transforms.v2 import functional as F

from detcore.data.augment.magnitude import (
    V2, Magnitude, applies, check_direction, check_level, check_mask_fill, check_number, check_range,
    check_seg_ignore_label, fill_rgb, interpolation, mmdet_version)
from detcore.data.transforms import DetTransform, Sample, SanitizeBoxes, check_prob
from detcore.errors import ConfigError
from detcore.registry import TRANSFORMS


class AffineAugment(DetTransform):
    """With probability ``prob``: draw a magnitude, warp image, boxes and masks by
    :meth:`affine_args`, then drop boxes narrower or shorter than ``min_size`` pixels."""

    def __init__(self, name: str, prob: float, magnitude: Magnitude, fill: list[float], mask_fill: int = 0,
                 interp: str = "bilinear", min_size: float = 1.0) -> None:
        self.prob, self.magnitude = check_prob(prob, name), magnitude
        self.fill, self.mask_fill = fill, mask_fill
        self._interpolation = interpolation(interp, name)
        self._sanitize = SanitizeBoxes(max(1.0, float(min_size)))

    def affine_args(self, mag: float, h: int, w: int) -> dict[str, Any]:
        """``angle``, ``translate``, ``scale``, ``shear`` and ``center`` of torchvision's affine."""
        raise NotImplementedError

    def __call__(self, image: Any, target: dict[str, Any]) -> Sample:
        if not applies(self.prob):
            return image, target
        h, w = image.shape[-2:]
        args = self.affine_args(self.magnitude.draw(), h, w)
        image = F.affine(image, **args, interpolation=self._interpolation, fill=self.fill)
        target = dict(target)
        if "boxes" in target:
            target["boxes"] = F.affine(target["boxes"], **args)
        if "masks" in target:
            target["masks"] = F.affine(target["masks"], **args, fill=self.mask_fill)
        return self._sanitize(image, target)


def _affine(angle: float = 0.0, translate: Sequence[int] = (0, 0), scale: float = 1.0,
            shear: Sequence[float] = (0.0, 0.0), center: Sequence[float] | None = None) -> dict[str, Any]:
    return {"angle": angle, "translate": list(translate), "scale": scale, "shear": list(shear), "center": center}


def _shear(slope: float, direction: str) -> dict[str, Any]:
    """x' = x + slope * y (horizontal) or y' = y + slope * x (vertical), about the top-left corner.
    torchvision's shear angle has the opposite sign of that slope's angle."""
    angle = -math.degrees(math.atan(slope))
    return _affine(shear=(angle, 0.0) if direction == "horizontal" else (0.0, angle), center=[0.0, 0.0])


def _center(value: Any, name: str) -> list[float] | None:
    """2.x's ``center`` (a number or ``(x, y)`` in pixel indices; None: the image centre)."""
    if value is None:
        return None
    pair = [value, value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        raise ConfigError(f"{name}: center must be null, a number or [x, y], got {value!r}")
    return [check_number(v, name, "center", -1e6, 1e6) for v in pair]


@TRANSFORMS.register()
class Rotate(AffineAugment):
    """Rotate by a level-given angle (MMDetection 2.x or 3.x parameters; mixing them is an error).

    2.x: ``level`` (required), ``prob=0.5``, ``max_rotate_angle=30``, ``random_negative_prob=0.5``,
    ``img_fill_val=128``, ``scale=1``, ``center=None`` (the image centre). 3.x (any of its keys given,
    or ``level`` left out): ``prob=1.0``, ``level=None``, ``min_mag=0``, ``max_mag=30``,
    ``reversal_prob=0.5``, ``img_border_value=128``. Both: ``mask_border_value=0``,
    ``seg_ignore_label=255`` (no semantic maps here), ``interpolation='bilinear'``.
    """

    def __init__(self, level: float | None = None, prob: float | None = None, scale: float | None = None,
                 center: Any = None, img_fill_val: Any = None, seg_ignore_label: int = 255,
                 max_rotate_angle: float | None = None, random_negative_prob: float | None = None,
                 min_mag: float | None = None, max_mag: float | None = None, reversal_prob: float | None = None,
                 img_border_value: Any = None, mask_border_value: int = 0, interpolation: str = "bilinear") -> None:
        self.version = mmdet_version("Rotate", level, {
            "scale": scale, "center": center, "img_fill_val": img_fill_val, "max_rotate_angle": max_rotate_angle,
            "random_negative_prob": random_negative_prob}, {
            "min_mag": min_mag, "max_mag": max_mag, "reversal_prob": reversal_prob,
            "img_border_value": img_border_value})
        if self.version == V2:
            magnitude = Magnitude(check_level(level, "Rotate", True), 0.0,
                                  check_number(30 if max_rotate_angle is None else max_rotate_angle, "Rotate",
                                               "max_rotate_angle", 0, 360),
                                  check_prob(0.5 if random_negative_prob is None else random_negative_prob, "Rotate"))
            fill = fill_rgb(128 if img_fill_val is None else img_fill_val, "Rotate", "img_fill_val")
            prob = 0.5 if prob is None else prob
        else:
            low, high = check_range("Rotate", 0.0 if min_mag is None else min_mag, 30.0 if max_mag is None else max_mag,
                                    180)
            magnitude = Magnitude(check_level(level, "Rotate", False), low, high,
                                  check_prob(0.5 if reversal_prob is None else reversal_prob, "Rotate"), rounded=True)
            fill = fill_rgb(128 if img_border_value is None else img_border_value, "Rotate", "img_border_value")
            prob = 1.0 if prob is None else prob
        self.scale = check_number(1 if scale is None else scale, "Rotate", "scale", 1e-3, 1e3)
        self.center = _center(center, "Rotate")
        self.seg_ignore_label = check_seg_ignore_label(seg_ignore_label, "Rotate")
        super().__init__("Rotate", prob, magnitude, fill, check_mask_fill(mask_border_value, "Rotate"), interpolation)

    def affine_args(self, mag: float, h: int, w: int) -> dict[str, Any]:
        # positive angles turn clockwise in both mmcv.imrotate and torchvision's affine; mmcv's centre is in
        # pixel indices, torchvision's in continuous coordinates (pixel i spans [i, i + 1])
        center = None if self.center is None else [c + 0.5 for c in self.center]
        return _affine(angle=mag, scale=self.scale, center=center)


@TRANSFORMS.register()
class Translate(AffineAugment):
    """MMDetection 2.x's translation by ``int(level / 10 * max_translate_offset)`` pixels
    (``direction`` horizontal or vertical; negated with ``random_negative_prob``); boxes under
    ``min_size`` pixels afterwards (at least 1) are dropped with their masks and labels."""

    def __init__(self, level: float, prob: float = 0.5, img_fill_val: Any = 128, seg_ignore_label: int = 255,
                 direction: str = "horizontal", max_translate_offset: float = 250.0,
                 random_negative_prob: float = 0.5, min_size: float = 0) -> None:
        self.direction = check_direction(direction, "Translate")
        self.seg_ignore_label = check_seg_ignore_label(seg_ignore_label, "Translate")
        magnitude = Magnitude(check_level(level, "Translate", True), 0.0,
                              check_number(max_translate_offset, "Translate", "max_translate_offset", 0, 1e5),
                              check_prob(random_negative_prob, "Translate"))
        super().__init__("Translate", prob, magnitude, fill_rgb(img_fill_val, "Translate", "img_fill_val"),
                         min_size=check_number(min_size, "Translate", "min_size", 0, 1e5))

    def affine_args(self, mag: float, h: int, w: int) -> dict[str, Any]:
        offset = int(mag)
        return _affine(translate=(offset, 0) if self.direction == "horizontal" else (0, offset))


class Affine3x(AffineAugment):
    """MMDetection 3.x's geometric transforms (``GeomTransform``): ``prob`` 1.0, ``level`` None (drawn),
    a magnitude from ``min_mag`` to ``max_mag`` (at most ``limit``) rounded to 0.1 and reversed
    with ``reversal_prob``, ``img_border_value``, ``mask_border_value``, ``interpolation``."""

    name, limit, default_max = "", 1.0, 1.0

    def __init__(self, prob: float = 1.0, level: int | None = None, min_mag: float = 0.0,
                 max_mag: float | None = None, reversal_prob: float = 0.5, img_border_value: Any = 128,
                 mask_border_value: int = 0, seg_ignore_label: int = 255, interpolation: str = "bilinear") -> None:
        low, high = check_range(self.name, min_mag, self.default_max if max_mag is None else max_mag, self.limit)
        self.seg_ignore_label = check_seg_ignore_label(seg_ignore_label, self.name)
        magnitude = Magnitude(check_level(level, self.name, False), low, high, check_prob(reversal_prob, self.name),
                              rounded=True)
        super().__init__(self.name, prob, magnitude, fill_rgb(img_border_value, self.name, "img_border_value"),
                         check_mask_fill(mask_border_value, self.name), interpolation)


class _Translate3x(Affine3x):
    """3.x's translation by ``int(size * magnitude)`` pixels along one axis (``max_mag`` 0.1 of it)."""

    limit, default_max, horizontal = 1.0, 0.1, True

    def affine_args(self, mag: float, h: int, w: int) -> dict[str, Any]:
        return _affine(translate=(int(w * mag), 0) if self.horizontal else (0, int(h * mag)))


@TRANSFORMS.register()
class TranslateX(_Translate3x):
    """3.x: horizontal translation by ``int(width * magnitude)``; ``max_mag`` 0.1 of the width by default."""

    name, horizontal = "TranslateX", True


@TRANSFORMS.register()
class TranslateY(_Translate3x):
    """3.x: vertical translation by ``int(height * magnitude)``; ``max_mag`` 0.1 of the height by default."""

    name, horizontal = "TranslateY", False


@TRANSFORMS.register()
class Shear(AffineAugment):
    """MMDetection 2.x's shear by the slope ``level / 10 * max_shear_magnitude`` (``direction``
    horizontal: x + slope * y; vertical: y + slope * x; negated with ``random_negative_prob``)."""

    def __init__(self, level: float, img_fill_val: Any = 128, seg_ignore_label: int = 255, prob: float = 0.5,
                 direction: str = "horizontal", max_shear_magnitude: float = 0.3, random_negative_prob: float = 0.5,
                 interpolation: str = "bilinear") -> None:
        self.direction = check_direction(direction, "Shear")
        self.seg_ignore_label = check_seg_ignore_label(seg_ignore_label, "Shear")
        magnitude = Magnitude(check_level(level, "Shear", True), 0.0,
                              check_number(max_shear_magnitude, "Shear", "max_shear_magnitude", 0, 1),
                              check_prob(random_negative_prob, "Shear"))
        super().__init__("Shear", prob, magnitude, fill_rgb(img_fill_val, "Shear", "img_fill_val"),
                         interp=interpolation)

    def affine_args(self, mag: float, h: int, w: int) -> dict[str, Any]:
        return _shear(mag, self.direction)


class _Shear3x(Affine3x):
    """3.x's shear by an angle in degrees (slope ``tan(angle)``; ``max_mag`` 30, at most 90)."""

    limit, default_max, direction = 90.0, 30.0, "horizontal"

    def affine_args(self, mag: float, h: int, w: int) -> dict[str, Any]:
        return _shear(math.tan(math.radians(mag)), self.direction)


@TRANSFORMS.register()
class ShearX(_Shear3x):
    """3.x: horizontal shear, up to ``max_mag`` (30) degrees."""

    name, direction = "ShearX", "horizontal"


@TRANSFORMS.register()
class ShearY(_Shear3x):
    """3.x: vertical shear, up to ``max_mag`` (30) degrees."""

    name, direction = "ShearY", "vertical"
