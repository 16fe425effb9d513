"""Data pipelines built from config lists of ``{type: Name, ...}``.

Every transform is a callable ``(image, target) -> (image, target)`` on top of torchvision's
``transforms.v2``: ``target["boxes"]`` is a ``tv_tensors.BoundingBoxes`` and ``target["masks"]``
a ``tv_tensors.Mask``, so boxes and masks follow every geometric transform of the image.
Randomness comes from torch's RNG, so a pipeline is deterministic given the torch seed.
MMDetection's augmentations by their own names and parameters live in :mod:`detcore.data.augment`.

``build_pipeline`` always ends with ``SanitizeBoxes`` (clip to the image, drop boxes under
one pixel together with their labels and masks) unless the list already ends with one.

Image dtype: a dataset may hand the pipeline its decoded uint8 image. :class:`Pipeline` runs the
leading steps that give the same result on uint8 as on float (``uint8_exact``: flips, box checks,
a resize to the same size) on the uint8 pixels, then makes the image float32 in 0..1
(:func:`to_float_image`) before any other step and at the end. The output is bit for bit that of
the whole pipeline on the float image; a flip moves a quarter of the bytes.

Normalisation: torchvision detectors normalise inside the model (``model.image_mean`` /
``model.image_std``, ImageNet statistics by default). A pipeline ``Normalize`` therefore
normalises twice unless the model is built with ``image_mean=[0, 0, 0]`` and
``image_std=[1, 1, 1]``; leaving images in 0..1 and normalising in the model is the default.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from detcore.errors import ConfigError
from detcore.registry import TRANSFORMS

Sample = tuple[Any, dict[str, Any]]


def to_float_image(image: Any) -> Any:
    """A uint8 image as float32 in 0..1 (``x / 255``, bit for bit what torchvision's
    ``weights.transforms()`` (``convert_image_dtype``) gives its detectors); other images as they are."""
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
        scaled = image.as_subclass(torch.Tensor).to(torch.float32) / 255
        return tv_tensors.Image(scaled) if isinstance(image, tv_tensors.Image) else scaled
    return image


class DetTransform:
    """Base of pipeline steps: ``__call__(image, target)`` and ``output_size(h, w)``.

    ``uint8_exact``: the step gives the same result on a uint8 image as on its float 0..1 version
    (it moves pixels or leaves them alone), so :class:`Pipeline` may run it before converting.
    """

    uint8_exact = False

    def __call__(self, image: Any, target: dict[str, Any]) -> Sample:
        raise NotImplementedError

    def output_size(self, h: int, w: int) -> tuple[int, int] | None:
        """(h, w) of the output for an input of (h, w); None when it is random. Default: unchanged."""
        return h, w

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class _V2Wrapper(DetTransform):
    """Runs one torchvision v2 transform over ``(image, target)``."""

    _v2: Callable

    def __call__(self, image: Any, target: dict[str, Any]) -> Sample:
        return self._v2(image, target)


def check_prob(prob: float, name: str) -> float:
    if not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ConfigError(f"{name}: prob must be a number in [0, 1], got {prob!r}")
    return float(prob)


def _with_prob(transform: Callable, prob: float) -> Callable:
    return transform if prob >= 1.0 else T.RandomApply([transform], p=prob)


def _scaled_size(h: int, w: int, scale: int | Sequence[int], max_size: int | None = None) -> tuple[int, int]:
    """Aspect-preserving size: ``[max_long, max_short]`` (MMDetection) or a shorter side (int)."""
    if isinstance(scale, int):
        factor = scale / min(h, w)
        if max_size is not None and max(h, w) * factor > max_size:
            factor = max_size / max(h, w)
    else:
        long_edge, short_edge = max(scale), min(scale)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def _check_scale(value: Any, name: str) -> int | tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if (isinstance(value, Sequence) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return int(value[0]), int(value[1])
    raise ConfigError(f"Resize: {name} must be a positive int (shorter side) or [max_long, max_short], got {value!r}")


@TRANSFORMS.register()
class Resize(DetTransform):
    """Keep-ratio resize. Give exactly one of:

    - ``scale: [max_long, max_short]``: the largest size within both limits (MMDetection);
    - ``size: S`` (optionally ``max_size: M``): shorter side S, longer side at most M;
    - ``scales: [s1, s2, ...]``: each a ``[max_long, max_short]`` pair or an int; one is picked
      uniformly at random per sample (multi-scale training).
    """

    def __init__(self, scale: Sequence[int] | None = None, size: int | None = None, max_size: int | None = None,
                 scales: Sequence[Any] | None = None, interpolation: str = "bilinear") -> None:
        given = [name for name, v in (("scale", scale), ("size", size), ("scales", scales)) if v is not None]
        if len(given) != 1:
            raise ConfigError(f"Resize: give exactly one of scale, size or scales; got {given or 'none'}")
        if scales is not None:
            if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
                raise ConfigError(f"Resize: scales must be a non-empty list, got {scales!r}")
            self.scales = [_check_scale(s, "each of scales") for s in scales]
        else:
            self.scales = [_check_scale(scale if scale is not None else size, "scale" if scale is not None else "size")]
        if max_size is not None and (not isinstance(max_size, int) or max_size <= 0):
            raise ConfigError(f"Resize: max_size must be a positive int, got {max_size!r}")
        self.max_size = max_size
        self.interpolation = T.InterpolationMode(interpolation)

    def _pick(self) -> int | tuple[int, int]:
        if len(self.scales) == 1:
            return self.scales[0]
        return self.scales[int(torch.randint(len(self.scales), ()).item())]

    uint8_exact = True  # it converts a uint8 image itself before interpolating

    def __call__(self, image: Any, target: dict[str, Any]) -> Sample:
        h, w = image.shape[-2:]
        size = _scaled_size(h, w, self._pick(), self.max_size)
        if size == (h, w):
            return image, target
        return T.Resize(list(size), interpolation=self.interpolation, antialias=True)(to_float_image(image), target)

    def output_size(self, h: int, w: int) -> tuple[int, int] | None:
        return _scaled_size(h, w, self.scales[0], self.max_size) if len(self.scales) == 1 else None


@TRANSFORMS.register()
class RandomFlip(_V2Wrapper):
    """Flip with probability ``prob``; ``direction`` is ``horizontal`` or ``vertical``."""

    uint8_exact = True

    def __init__(self, prob: float = 0.5, direction: str = "horizontal") -> None:
        self.prob = check_prob(prob, "RandomFlip")
        if direction not in ("horizontal", "vertical"):
            raise ConfigError(f"RandomFlip: direction must be 'horizontal' or 'vertical', got {direction!r}")
        self.direction = direction
        self._v2 = (T.RandomHorizontalFlip if direction == "horizontal" else T.RandomVerticalFlip)(p=self.prob)


@TRANSFORMS.register()
class RandomRotate(_V2Wrapper):
    """Rotate by an angle drawn from ``degrees`` (a number d means [-d, d]) with probability ``prob``.

    The image keeps its size (corners are cut, filled with ``fill``). Boxes become the
    axis-aligned box of the rotated box, which is looser than the rotated object's own box.
    """

    def __init__(self, degrees: float | Sequence[float], prob: float = 1.0, fill: float = 0.0) -> None:
        self.degrees, self.prob, self.fill = degrees, check_prob(prob, "RandomRotate"), fill
        try:
            rotation = T.RandomRotation(degrees, interpolation=T.InterpolationMode.BILINEAR, fill=self._fill(fill))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"RandomRotate: {exc}") from None
        self._v2 = _with_prob(rotation, self.prob)

    @staticmethod
    def _fill(fill: float) -> dict:
        return {tv_tensors.Image: fill, "others": 0}


@TRANSFORMS.register()
class RandomAffine(_V2Wrapper):
    """Random rotation (``degrees``), translation (``translate``: max fractions [fx, fy]) and
    ``scale`` range, with probability ``prob``; the image keeps its size."""

    def __init__(self, degrees: float | Sequence[float] = 0.0, translate: Sequence[float] | None = None,
                 scale: Sequence[float] | None = None, prob: float = 1.0, fill: float = 0.0) -> None:
        self.degrees, self.translate, self.scale, self.fill = degrees, translate, scale, fill
        self.prob = check_prob(prob, "RandomAffine")
        try:
            affine = T.RandomAffine(degrees, translate=translate, scale=scale,
                                    interpolation=T.InterpolationMode.BILINEAR, fill=RandomRotate._fill(fill))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"RandomAffine: {exc}") from None
        self._v2 = _with_prob(affine, self.prob)


@TRANSFORMS.register()
class PhotoMetricDistortion(_V2Wrapper):
    """Colour jitter (brightness, contrast, saturation, hue) with probability ``prob``."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.05,
                 prob: float = 0.5) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.prob = check_prob(prob, "PhotoMetricDistortion")
        try:
            jitter = T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"PhotoMetricDistortion: {exc}") from None
        self._v2 = _with_prob(jitter, self.prob)


@TRANSFORMS.register()
class Normalize(_V2Wrapper):
    """``(image - mean) / std`` on the 0..1 scale (ImageNet: mean [0.485, 0.456, 0.406],
    std [0.229, 0.224, 0.225]). Only with a model built with image_mean 0 and image_std 1,
    because torchvision detectors normalise again inside the model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        for name, values in (("mean", mean), ("std", std)):
            if not (isinstance(values, Sequence) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)):
                raise ConfigError(f"Normalize: {name} must be 3 numbers, got {values!r}")
        if max(mean) > 1.0 or max(std) > 1.0:
            raise ConfigError(f"Normalize: mean={list(mean)} std={list(std)} look like 0..255 values; images are "
                              f"0..1 floats here, so divide them by 255")
        if min(std) <= 0:
            raise ConfigError(f"Normalize: std must be positive, got {list(std)}")
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self._v2 = T.Normalize(self.mean, self.std)


@TRANSFORMS.register()
class SanitizeBoxes(DetTransform):
    """Clip boxes to the image, then drop boxes narrower or shorter than ``min_size`` pixels
    together with their labels and masks."""

    uint8_exact = True

    def __init__(self, min_size: float = 1.0) -> None:
        if not isinstance(min_size, (int, float)) or min_size < 1:
            raise ConfigError(f"SanitizeBoxes: min_size must be a number >= 1, got {min_size!r}")
        self.min_size = float(min_size)
        self._clamp = T.ClampBoundingBoxes()
        self._sanitize = T.SanitizeBoundingBoxes(min_size=self.min_size, labels_getter=_labels_of)

    def __call__(self, image: Any, target: dict[str, Any]) -> Sample:
        if "boxes" not in target:
            return image, target
        image, target = self._clamp(image, target)
        _, valid = F.sanitize_bounding_boxes(target["boxes"], min_size=self.min_size)
        if bool(valid.all()):  # nothing to drop: no copy of the masks (N x H x W) just to keep them all
            return image, target
        return self._sanitize(image, target)


def _labels_of(inputs: Any) -> Any:
    _, target = inputs
    return target.get("labels")


class Pipeline:
    """An ordered list of transforms; ``output_size`` composes the steps' sizes. A uint8 image
    leaves as float32 in 0..1, converted after the leading ``uint8_exact`` steps."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, target: dict[str, Any]) -> Sample:
        for t in self.transforms:
            if not getattr(t, "uint8_exact", False):
                image = to_float_image(image)
            image, target = t(image, target)
        return to_float_image(image), target

    def output_size(self, h: int, w: int) -> tuple[int, int] | None:
        """Output (h, w) for an input (h, w), or None when some step's size is random or unknown."""
        size: tuple[int, int] | None = (h, w)
        for t in self.transforms:
            size = t.output_size(*size) if hasattr(t, "output_size") else None
            if size is None:
                return None
        return size

    def __repr__(self) -> str:
        return "Pipeline([" + ", ".join(map(repr, self.transforms)) + "])"


def build_pipeline(cfg_list: Sequence[Mapping[str, Any] | Callable] | None) -> Pipeline:
    """Build ``[{type: Name, ...}, ...]`` from TRANSFORMS (callables pass through) and
    append ``SanitizeBoxes()`` unless the list already ends with one. MMDetection's augmentation
    names (``Rotate``, ``Translate``, ``AutoAugment``, ...: :mod:`detcore.data.augment`) are known too."""
    import detcore.data.augment  # noqa: F401  (registers MMDetection's augmentation names)

    if cfg_list is None:
        cfg_list = []
    if isinstance(cfg_list, Mapping) or isinstance(cfg_list, (str, bytes)) or not isinstance(cfg_list, Sequence):
        raise ConfigError(f"pipeline must be a list of {{type: Name, ...}} mappings, got {cfg_list!r:.200}")
    steps = [item if callable(item) and not isinstance(item, Mapping) else TRANSFORMS.build(item)
             for item in cfg_list]
    if not steps or not isinstance(steps[-1], SanitizeBoxes):
        steps.append(SanitizeBoxes())
    return Pipeline(steps)


__all__ = ["DetTransform", "Pipeline", "check_prob", "Resize", "RandomFlip", "RandomRotate", "RandomAffine",
           "PhotoMetricDistortion", "Normalize", "SanitizeBoxes", "build_pipeline"]
