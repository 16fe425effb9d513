"""MMDetection's augmentation levels, probabilities and fill values, checked and turned into draws.

MMDetection 2.x maps a ``level`` in 0..10 to ``level / 10 * max_<magnitude>`` and negates it with
probability ``random_negative_prob``; its colour factors are ``level / 10 * 1.8 + 0.1``. MMDetection
3.x maps it to ``round(level / 10 * (max_mag - min_mag) + min_mag, 1)``, draws the level when it is
``None`` and negates with probability ``reversal_prob``. Every draw here comes from torch's
generator, which the trainer seeds per sample (``SeededSamples``): an augmented sample is the same
in every run with the same seed, and in a resumed run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torchvision.transforms import v2 as T

from detcore.errors import ConfigError

MAX_LEVEL = 10
V2, V3 = 2, 3
INTERPOLATIONS = {"nearest": T.InterpolationMode.NEAREST, "bilinear": T.InterpolationMode.BILINEAR}


@dataclass(frozen=True)
class Magnitude:
    """One transform's level -> magnitude rule: ``level / 10 * (max_mag - min_mag) + min_mag``
    (a uniform draw in [min_mag, max_mag] when ``level`` is None), rounded to 0.1 when ``rounded``
    (3.x), negated with probability ``negate_prob``."""

    level: float | None
    min_mag: float
    max_mag: float
    negate_prob: float = 0.0
    rounded: bool = False

    def draw(self) -> float:
        if self.level is None:
            mag = float(torch.rand(())) * (self.max_mag - self.min_mag) + self.min_mag
        else:
            mag = self.level / MAX_LEVEL * (self.max_mag - self.min_mag) + self.min_mag
        if self.rounded:
            mag = round(mag, 1)
        if self.negate_prob > 0 and float(torch.rand(())) < self.negate_prob:
            mag = -mag
        return mag


def applies(prob: float) -> bool:
    """One draw: True with probability ``prob`` (MMDetection skips a transform when ``rand > prob``)."""
    return float(torch.rand(())) < prob


def check_number(value: Any, name: str, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{name}: {key} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def check_level(value: Any, name: str, required: bool) -> float | None:
    """``level`` in 0..10 (MMDetection 2.x requires it; 3.x draws it when it is None)."""
    if value is None and not required:
        return None
    if value is None:
        raise ConfigError(f"{name}: level is required with MMDetection 2.x's parameters (a number in 0..{MAX_LEVEL})")
    return check_number(value, name, "level", 0, MAX_LEVEL)


def check_range(name: str, min_mag: Any, max_mag: Any, limit: float) -> tuple[float, float]:
    """3.x's ``min_mag``/``max_mag``, each in [0, limit], min not above max."""
    low, high = check_number(min_mag, name, "min_mag", 0, limit), check_number(max_mag, name, "max_mag", 0, limit)
    if low > high:
        raise ConfigError(f"{name}: min_mag={low:g} is above max_mag={high:g}; give min_mag <= max_mag")
    return low, high


def mmdet_version(name: str, level: Any, v2: Mapping[str, Any], v3: Mapping[str, Any]) -> int:
    """Which MMDetection's parameters a transform whose name both versions use was given: ``V3`` when
    any 3.x-only key is set or ``level`` is left out (3.x draws it), else ``V2``. Mixing is an error."""
    given2 = [k for k, v in v2.items() if v is not None]
    given3 = [k for k, v in v3.items() if v is not None]
    if given2 and given3:
        raise ConfigError(f"{name}: {', '.join(given2)} are MMDetection 2.x parameters and {', '.join(given3)} "
                          f"3.x ones; use one version's")
    if given2 and level is None:
        raise ConfigError(f"{name}: level is required with MMDetection 2.x's parameters ({', '.join(given2)})")
    return V3 if given3 or level is None else V2


def fill_rgb(value: Any, name: str, key: str) -> list[float]:
    """MMDetection's image fill (a number, or 3 numbers in BGR order, on 0..255) as RGB on 0..1.

    MMDetection's images are BGR until ``Normalize``, so a 3-number fill there is blue, green, red;
    detcore's images are RGB floats in 0..1, so it is reversed and divided by 255 here.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [value] * 3
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3:
        values = list(value)[::-1]
    else:
        raise ConfigError(f"{name}: {key} must be a number or 3 numbers (BGR, 0..255), got {value!r}")
    return [check_number(v, name, key, 0, 255) / 255.0 for v in values]


def check_mask_fill(value: Any, name: str) -> int:
    if value not in (0, 1) or isinstance(value, bool):
        raise ConfigError(f"{name}: mask_border_value must be 0 or 1 (masks are binary), got {value!r}")
    return int(value)


def check_seg_ignore_label(value: Any, name: str) -> int:
    """Accepted for MMDetection's configs; detcore's datasets carry no semantic segmentation maps."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: seg_ignore_label must be an int, got {value!r}")
    return value


def interpolation(value: Any, name: str) -> T.InterpolationMode:
    if value not in INTERPOLATIONS:
        raise ConfigError(f"{name}: interpolation must be one of {', '.join(INTERPOLATIONS)} (torchvision's affine "
                          f"warps), got {value!r}")
    return INTERPOLATIONS[value]


def check_direction(value: Any, name: str) -> str:
    if value not in ("horizontal", "vertical"):
        raise ConfigError(f"{name}: direction must be 'horizontal' or 'vertical', got {value!r}")
    return value
