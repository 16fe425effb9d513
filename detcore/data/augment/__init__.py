"""MMDetection's augmentation names and parameters on torchvision's ``transforms.v2``.

2.x (``mmdet/datasets/pipelines/auto_augment.py``): ``Rotate``, ``Translate``, ``Shear``,
``ColorTransform``, ``BrightnessTransform``, ``ContrastTransform``, ``EqualizeTransform``,
``AutoAugment``. 3.x (``mmdet/datasets/transforms/{geometric,colorspace,augment_wrappers}.py``):
``Rotate``, ``TranslateX``/``TranslateY``, ``ShearX``/``ShearY``, ``Color``, ``Brightness``,
``Contrast``, ``Sharpness``, ``Solarize``, ``SolarizeAdd``, ``Posterize``, ``Equalize``,
``AutoContrast``, ``Invert`` and ``AutoAugment`` (3.x's default policies included).

Importing this package registers them in ``TRANSFORMS``; ``build_pipeline`` imports it.
"""
from __future__ import annotations

from detcore.data.augment import auto_augment, colorspace, geometric  # noqa: F401  (register the names)
from detcore.data.augment.auto_augment import AutoAugment, policies_v0
from detcore.data.augment.geometric import Rotate, Shear, ShearX, ShearY, Translate, TranslateX, TranslateY

__all__ = ["AutoAugment", "Rotate", "Shear", "ShearX", "ShearY", "Translate", "TranslateX", "TranslateY",
           "policies_v0"]
