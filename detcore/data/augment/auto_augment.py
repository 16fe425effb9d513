"""MMDetection's ``AutoAugment``: a list of policies, each a list of transforms; one policy per image.

As in MMDetection (2.x ``pipelines/auto_augment.py``, 3.x ``transforms/augment_wrappers.py``): the
policy is picked uniformly, or by 3.x's ``prob`` (one weight per policy, summing to 1), and its
transforms run in order. The pick draws from torch's generator like every augmentation here, so
it is reproducible under the seed. Without ``policies``, 3.x's default (:func:`policies_v0`, the
"Learning Data Augmentation Strategies for Object Detection" policies) is used.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch

from detcore.data.transforms import DetTransform, Pipeline, Sample
from detcore.errors import ConfigError, DetcoreError
from detcore.registry import TRANSFORMS

# MMDetection 3.x's AUTOAUG_POLICIES_V0: (type, prob, level) per step
AUTOAUG_POLICIES_V0 = [
    [("Equalize", 0.8, 1), ("ShearY", 0.8, 4)], [("Color", 0.4, 9), ("Equalize", 0.6, 3)],
    [("Color", 0.4, 1), ("Rotate", 0.6, 8)], [("Solarize", 0.8, 3), ("Equalize", 0.4, 7)],
    [("Solarize", 0.4, 2), ("Solarize", 0.6, 2)], [("Color", 0.2, 0), ("Equalize", 0.8, 8)],
    [("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)], [("ShearX", 0.2, 9), ("Rotate", 0.6, 8)],
    [("Color", 0.6, 1), ("Equalize", 1.0, 2)], [("Invert", 0.4, 9), ("Rotate", 0.6, 0)],
    [("Equalize", 1.0, 9), ("ShearY", 0.6, 3)], [("Color", 0.4, 7), ("Equalize", 0.6, 0)],
    [("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)], [("Solarize", 0.6, 8), ("Color", 0.6, 9)],
    [("Solarize", 0.2, 4), ("Rotate", 0.8, 9)], [("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)],
    [("ShearX", 0.0, 0), ("Solarize", 0.8, 4)], [("ShearY", 0.8, 0), ("Color", 0.6, 4)],
    [("Color", 1.0, 0), ("Rotate", 0.6, 2)], [("Equalize", 0.8, 4), ("Equalize", 0.0, 8)],
    [("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)], [("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)],
    [("Posterize", 0.8, 2), ("Solarize", 0.6, 10)], [("Solarize", 0.6, 8), ("Equalize", 0.6, 1)],
    [("Color", 0.8, 6), ("Rotate", 0.4, 5)],
]


def policies_v0() -> list[list[dict[str, Any]]]:
    """MMDetection 3.x's default policies as configs (its ``Rotate`` here with 3.x's ``max_mag``)."""
    return [[{"type": kind, "prob": prob, "level": level, **({"max_mag": 30.0} if kind == "Rotate" else {})}
             for kind, prob, level in policy] for policy in AUTOAUG_POLICIES_V0]


def _check_policies(policies: Any) -> list[list[Mapping[str, Any]]]:
    if isinstance(policies, (str, Mapping)) or not isinstance(policies, Sequence) or not policies:
        raise ConfigError(f"AutoAugment: policies must be a non-empty list of policies (each a list of "
                          f"{{type: Name, ...}}), got {policies!r:.200}")
    for i, policy in enumerate(policies):
        if isinstance(policy, (str, Mapping)) or not isinstance(policy, Sequence) or not policy:
            raise ConfigError(f"AutoAugment: policies[{i}] must be a non-empty list of transforms, got {policy!r:.200}")
        for j, step in enumerate(policy):
            if not isinstance(step, Mapping) or "type" not in step:
                raise ConfigError(f"AutoAugment: policies[{i}][{j}] must be a mapping with a type, got {step!r:.200}")
    return [list(policy) for policy in policies]


def _check_weights(prob: Any, n: int) -> torch.Tensor | None:
    if prob is None:
        return None
    ok = (isinstance(prob, Sequence) and not isinstance(prob, str) and len(prob) == n
          and all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in prob))
    if not ok or abs(sum(prob) - 1.0) > 1e-6:
        raise ConfigError(f"AutoAugment: prob must be {n} non-negative numbers (one per policy) summing to 1, "
                          f"got {prob!r:.200}")
    return torch.tensor([float(p) for p in prob], dtype=torch.float64)


@TRANSFORMS.register()
class AutoAugment(DetTransform):
    """Pick one of ``policies`` per sample (uniformly, or weighted by ``prob``) and run its transforms."""

    def __init__(self, policies: Sequence[Sequence[Mapping[str, Any]]] | None = None,
                 prob: Sequence[float] | None = None) -> None:
        self.policies = copy.deepcopy(_check_policies(policies_v0() if policies is None else policies))
        self.prob = None if prob is None else list(prob)
        self._weights = _check_weights(prob, len(self.policies))
        self._pipelines = [Pipeline([self._build(step, i, j) for j, step in enumerate(policy)])
                           for i, policy in enumerate(self.policies)]

    @staticmethod
    def _build(step: Mapping[str, Any], i: int, j: int) -> Any:
        try:
            return TRANSFORMS.build(step)
        except DetcoreError as exc:
            raise ConfigError(f"AutoAugment: policies[{i}][{j}]: {exc}") from None

    def pick(self) -> int:
        """The index of the policy for the next sample (one draw from torch's generator)."""
        if self._weights is None:
            return int(torch.randint(len(self._pipelines), ()))
        return int(torch.multinomial(self._weights, 1))

    def __call__(self, image: Any, target: dict[str, Any]) -> Sample:
        return self._pipelines[self.pick()](image, target)

    def output_size(self, h: int, w: int) -> tuple[int, int] | None:
        sizes = {p.output_size(h, w) for p in self._pipelines}
        return sizes.pop() if len(sizes) == 1 else None

    def __repr__(self) -> str:
        return f"AutoAugment(policies={self.policies!r}, prob={self.prob!r})"
