"""MMDetection augmentation steps -> detcore pipeline steps, for 2.x and 3.x configs alike.

detcore's ``Rotate``, ``Translate``, ``Shear``, ``TranslateX``/``Y``, ``ShearX``/``Y``, the colour
transforms and ``AutoAugment`` take MMDetection's names and parameters (:mod:`detcore.data.augment`),
so :func:`map_augmentation` mostly copies a step, with three adjustments:

- tuples become lists (YAML has no tuples);
- ``Rotate``, the one name both versions use, gets its version written out: a 2.x step its ``prob``
  (0.5 in 2.x), a 3.x step with a ``level`` its ``max_mag`` (which selects 3.x's defaults), so the
  YAML means the same whichever parameters it shows;
- ``AutoAugment``'s policies are mapped step by step; a ``Resize`` (2.x ``img_scale`` with
  ``keep_ratio``, one scale or ``multiscale_mode='value'``; 3.x ``Resize``/``RandomChoiceResize``)
  or ``RandomFlip`` inside a policy becomes detcore's.

Anything without an exact equivalent raises :class:`UnmappedStep` saying why; the importer lists it.
The module is torch-free (it only moves data).
"""
from __future__ import annotations

from typing import Any, Mapping

from detcore.errors import ConfigError

GEOMETRIC_2X = ("Rotate", "Translate", "Shear")
GEOMETRIC_3X = ("Rotate", "TranslateX", "TranslateY", "ShearX", "ShearY")
COLOUR_2X = ("ColorTransform", "BrightnessTransform", "ContrastTransform", "EqualizeTransform")
COLOUR_3X = ("Color", "Brightness", "Contrast", "Sharpness", "Solarize", "SolarizeAdd", "Posterize", "Equalize",
             "AutoContrast", "Invert")
AUGMENTATIONS = {2: frozenset((*GEOMETRIC_2X, *COLOUR_2X, "AutoAugment")),
                 3: frozenset((*GEOMETRIC_3X, *COLOUR_3X, "AutoAugment"))}
ROTATE_3X_KEYS = ("min_mag", "max_mag", "reversal_prob", "img_border_value")


class UnmappedStep(ConfigError):
    """A pipeline step detcore has no exact equivalent for; the message says why."""


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (the YAML the importer writes has no tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_version(version: int) -> None:
    if version not in AUGMENTATIONS:
        raise ValueError(f"MMDetection version must be 2 or 3, got {version!r}")


def is_augmentation(kind: Any, version: int) -> bool:
    """True for a transform type :func:`map_augmentation` maps in MMDetection ``version`` (2 or 3)."""
    _check_version(version)
    return kind in AUGMENTATIONS[version]


def _resize(step: Mapping[str, Any]) -> dict:
    kind = step["type"]
    if step.get("keep_ratio", True) is not True:
        raise UnmappedStep(f"{kind} with keep_ratio=False: detcore's Resize keeps the aspect ratio")
    if "img_scale" in step:  # 2.x
        if "ratio_range" in step:
            raise UnmappedStep(f"{kind} with ratio_range: detcore picks one of listed scales")
        scale = _plain(step["img_scale"])
        many = isinstance(scale, list) and scale and isinstance(scale[0], list)
        if many and len(scale) > 1 and step.get("multiscale_mode", "range") != "value":
            raise UnmappedStep(f"{kind} with multiscale_mode='range': detcore picks one of the listed scales, not "
                               f"between them; list the scales with multiscale_mode='value'")
        return {"type": "Resize", "scales": scale} if many else {"type": "Resize", "scale": scale}
    if kind == "RandomChoiceResize" and "scales" in step:  # 3.x
        return {"type": "Resize", "scales": _plain(step["scales"])}
    if kind == "Resize" and "scale" in step:  # 3.x
        return {"type": "Resize", "scale": _plain(step["scale"])}
    raise UnmappedStep(f"{kind} {dict(step)!r:.100}: expected img_scale (2.x) or scale/scales (3.x)")


def _in_policy(step: Any, version: int, where: str) -> dict:
    if not isinstance(step, Mapping) or "type" not in step:
        raise UnmappedStep(f"{where} is not a transform mapping with a type: {step!r:.100}")
    kind = step["type"]
    if kind in ("Resize", "RandomChoiceResize"):
        return _resize(step)
    if kind == "RandomFlip":
        if step.get("direction", "horizontal") != "horizontal":
            raise UnmappedStep(f"{where}: RandomFlip direction {step.get('direction')!r} inside a policy")
        return {"type": "RandomFlip", "prob": step.get("flip_ratio", step.get("prob", 0.5))}
    if kind == "AutoAugment":
        raise UnmappedStep(f"{where}: an AutoAugment inside a policy")
    if not is_augmentation(kind, version):
        raise UnmappedStep(f"{where}: {kind} has no detcore equivalent, so the policies cannot carry over")
    return map_augmentation(step, version)


def map_augmentation(step: Mapping[str, Any], version: int) -> dict:
    """detcore's pipeline step for MMDetection ``version``'s (2 or 3) augmentation ``step``.

    Raises :class:`UnmappedStep` for a type :func:`is_augmentation` does not know, or an
    ``AutoAugment`` whose policies hold a step without a detcore equivalent.
    """
    _check_version(version)
    kind = step.get("type") if isinstance(step, Mapping) else None
    if not is_augmentation(kind, version):
        raise UnmappedStep(f"{kind!r} is not an MMDetection {version}.x augmentation detcore has")
    out = _plain(dict(step))
    if kind == "Rotate" and version == 2:
        out.setdefault("prob", 0.5)
    elif kind == "Rotate" and out.get("level") is not None and not any(k in out for k in ROTATE_3X_KEYS):
        out["max_mag"] = 30.0
    if kind == "AutoAugment":
        policies = out.get("policies")
        if policies is None and version == 2:
            raise UnmappedStep("AutoAugment without policies (MMDetection 2.x requires them)")
        if policies is not None:
            if not isinstance(policies, list):
                raise UnmappedStep(f"AutoAugment policies must be a list of lists, got {policies!r:.100}")
            out["policies"] = [[_in_policy(s, version, f"AutoAugment policies[{i}][{j}]")
                                for j, s in enumerate(policy if isinstance(policy, list) else [policy])]
                               for i, policy in enumerate(policies)]
    return out


__all__ = ["AUGMENTATIONS", "UnmappedStep", "is_augmentation", "map_augmentation"]
