"""The type names detcore registers itself, and the keys of its built-in hooks, known without torch.

``launcher submit`` (and ``detcore train``/``test``) check a config's type names before anything
starts. The registries fill up as their modules are imported, which means importing torch and
torchvision: about 2.5 s on 2 cores before every job could start, and some 750 MB held by a
``launcher submit`` that then follows its job for hours. A config that names only built-in types
and imports no module of its own is checked against this table instead; anything else (a
``custom_imports`` module, a name not here) takes the full check, whose errors suggest the
closest names. ``tests/unit/detcore/test_builtin_names.py`` keeps the table equal to what the
imported registries and hooks hold, so it cannot drift.
"""
from __future__ import annotations

# registry name (``Registry.name``) -> the names detcore's own modules register
BUILTIN: dict[str, frozenset[str]] = {
    "backbone": frozenset({"MobileNetV3", "ResNet", "TinyNet"}),
    "dataset": frozenset({"CocoDataset", "ShapesDataset"}),
    "detector": frozenset({"CascadeRCNN", "FCOS", "FasterRCNN", "MaskRCNN", "RetinaNet"}),
    "head": frozenset({"ClassAgnosticPredictor", "FCOSHead", "FastRCNNConvFCHead", "FastRCNNPredictor",
                       "MaskRCNNHeads", "MaskRCNNPredictor", "RPNHead", "RetinaNetHead", "TwoMLPHead"}),
    "hook": frozenset({"CheckpointHook", "EvalHook", "LRSchedulerHook", "LoggerHook"}),
    "lr schedule": frozenset({"cosine", "fixed", "step"}),
    "neck": frozenset({"FPN"}),
    "optimizer": frozenset({"Adam", "AdamW", "SGD"}),
    "transform": frozenset({"Normalize", "PhotoMetricDistortion", "RandomAffine", "RandomFlip", "RandomRotate",
                            "Resize", "SanitizeBoxes",
                            # MMDetection's augmentation names (detcore.data.augment)
                            "AutoAugment", "AutoContrast", "Brightness", "BrightnessTransform", "Color",
                            "ColorTransform", "Contrast", "ContrastTransform", "Equalize", "EqualizeTransform",
                            "Invert", "Posterize", "Rotate", "Sharpness", "Shear", "ShearX", "ShearY", "Solarize",
                            "SolarizeAdd", "Translate", "TranslateX", "TranslateY"}),
}

# config section -> (its hook class in detcore.engine.hooks, the keyword arguments it takes)
HOOK_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "log_config": ("LoggerHook", ("interval",)),
    "evaluation": ("EvalHook", ("interval", "metric", "num_images", "backend", "voc_method")),
    "checkpoint_config": ("CheckpointHook", ("interval", "max_keep", "save_best")),
}
