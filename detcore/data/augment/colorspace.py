"""MMDetection's colour augmentations on torchvision's v2 functional ops (boxes and masks unchanged).

2.x: ``ColorTransform``, ``BrightnessTransform``, ``ContrastTransform`` (``level`` required,
``prob=0.5``, factor ``level / 10 * 1.8 + 0.1``) and ``EqualizeTransform`` (``prob=0.5``).
3.x: ``Color``, ``Brightness``, ``Contrast``, ``Sharpness`` (factor from ``min_mag=0.1`` to
``max_mag=1.9``), ``Solarize`` (threshold 0..256), ``SolarizeAdd`` (0..110), ``Posterize`` (bits
0..4), ``Equalize``, ``AutoContrast``, ``Invert``; all ``prob=1.0`` and ``level=None`` (drawn) by
default. Magnitudes on MMDetection's 0..255 scale are divided by 255 (images are 0..1 floats here).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torchvision.transforms.v2 import functional as F

from detcore.data.augment.magnitude import Magnitude, applies, check_level, check_range
from detcore.data.transforms import DetTransform, Sample, check_prob
from detcore.registry import TRANSFORMS

ColorOp = Callable[[Any, float], Any]


def _solarize(image: Any, threshold: float) -> Any:
    """Invert pixels at or above ``threshold`` (0..256 on MMDetection's scale); 256 inverts none."""
    threshold = threshold / 255.0
    return image if threshold > 1.0 else F.solarize(image, threshold)


def _solarize_add(image: Any, amount: float) -> Any:
    """Add ``amount`` (0..255 scale) to pixels under 128, capped at the maximum, as mmdet 3.x."""
    return torch.where(image < 128 / 255, (image + amount / 255.0).clamp(max=1.0), image)


OPS: dict[str, ColorOp] = {
    "color": F.adjust_saturation,  # mmcv.adjust_color: a blend with the grayscale image
    "brightness": F.adjust_brightness,
    "contrast": F.adjust_contrast,
    "sharpness": F.adjust_sharpness,
    "solarize": _solarize,
    "solarize_add": _solarize_add,
    "posterize": lambda image, bits: F.posterize(image, int(math.ceil(bits))),
    "equalize": lambda image, _: F.equalize(image),
    "autocontrast": lambda image, _: F.autocontrast(image),
    "invert": lambda image, _: F.invert(image),
}


class ColorAugment(DetTransform):
    """With probability ``prob``: draw a magnitude and apply ``OPS[op]`` to the image only."""

    op = ""

    def __init__(self, name: str, prob: float, magnitude: Magnitude | None) -> None:
        self.prob, self.magnitude = check_prob(prob, name), magnitude

    def __call__(self, image: Any, target: dict[str, Any]) -> Sample:
        if not applies(self.prob):
            return image, target
        mag = self.magnitude.draw() if self.magnitude is not None else 0.0
        return OPS[self.op](image, mag), target


class _Level2x(ColorAugment):
    """2.x: a factor ``level / 10 * 1.8 + 0.1`` (``enhance_level_to_value``), ``prob=0.5``."""

    def __init__(self, level: float, prob: float = 0.5) -> None:
        name = type(self).__name__
        super().__init__(name, prob, Magnitude(check_level(level, name, True), 0.1, 1.9))


@TRANSFORMS.register()
class ColorTransform(_Level2x):
    op = "color"


@TRANSFORMS.register()
class BrightnessTransform(_Level2x):
    op = "brightness"


@TRANSFORMS.register()
class ContrastTransform(_Level2x):
    op = "contrast"


@TRANSFORMS.register()
class EqualizeTransform(ColorAugment):
    op = "equalize"

    def __init__(self, prob: float = 0.5) -> None:
        super().__init__("EqualizeTransform", prob, None)


class _Level3x(ColorAugment):
    """3.x: ``prob=1.0``, ``level=None`` (drawn), magnitude from ``min_mag`` to ``max_mag``."""

    limit, default_min, default_max = 2.0, 0.1, 1.9

    def __init__(self, prob: float = 1.0, level: int | None = None, min_mag: float | None = None,
                 max_mag: float | None = None) -> None:
        name = type(self).__name__
        low, high = check_range(name, self.default_min if min_mag is None else min_mag,
                                self.default_max if max_mag is None else max_mag, self.limit)
        super().__init__(name, prob, Magnitude(check_level(level, name, False), low, high, rounded=True))


@TRANSFORMS.register()
class Color(_Level3x):
    op = "color"


@TRANSFORMS.register()
class Brightness(_Level3x):
    op = "brightness"


@TRANSFORMS.register()
class Contrast(_Level3x):
    op = "contrast"


@TRANSFORMS.register()
class Sharpness(_Level3x):
    op = "sharpness"


@TRANSFORMS.register()
class Solarize(_Level3x):
    op, limit, default_min, default_max = "solarize", 256.0, 0.0, 256.0


@TRANSFORMS.register()
class SolarizeAdd(_Level3x):
    op, limit, default_min, default_max = "solarize_add", 110.0, 0.0, 110.0


@TRANSFORMS.register()
class Posterize(_Level3x):
    op, limit, default_min, default_max = "posterize", 8.0, 0.0, 4.0


@TRANSFORMS.register()
class Equalize(_Level3x):
    """3.x: histogram equalisation (``level``, ``min_mag``, ``max_mag`` are accepted and unused)."""

    op = "equalize"


@TRANSFORMS.register()
class AutoContrast(_Level3x):
    op = "autocontrast"


@TRANSFORMS.register()
class Invert(_Level3x):
    op = "invert"
