"""Datasets, pipelines and loaders.

Names are imported on first use (``detcore.data.CocoDataset`` imports ``detcore.data.coco``),
so tools that need only the annotation-file code (``detcore eval``, the converters) start
without importing torch. Building a dataset registers the built-in types (``CocoDataset``,
``ShapesDataset``, the transforms and MMDetection's augmentations) in ``detcore.registry`` first.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

_EXPORTS = {
    "CocoDataset": "detcore.data.coco", "ImageInfo": "detcore.data.coco",
    "ShapesDataset": "detcore.data.shapes", "ensure_shapes": "detcore.data.shapes",
    "generate_shapes": "detcore.data.shapes", "build_pipeline": "detcore.data.transforms",
    "build_dataloader": "detcore.data.loader", "collate": "detcore.data.loader",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'detcore.data' has no attribute {name!r}")


def register_builtin_types() -> None:
    """Import the modules whose classes register themselves in DATASETS and TRANSFORMS."""
    for module in ("detcore.data.transforms", "detcore.data.augment", "detcore.data.coco", "detcore.data.shapes"):
        importlib.import_module(module)


def build_dataset(split_cfg: Mapping[str, Any], **overrides: Any) -> Any:
    """Build ``data.train|val|test`` (``{type: Name, ...}``) from DATASETS; ``overrides`` win."""
    from detcore.errors import ConfigError
    from detcore.registry import DATASETS

    if not isinstance(split_cfg, Mapping):
        raise ConfigError(f"a dataset config must be a mapping like {{type: CocoDataset, ann_file: ...}}, "
                          f"got {split_cfg!r:.200}")
    register_builtin_types()
    return DATASETS.build({**split_cfg, **overrides})


__all__ = ["CocoDataset", "ImageInfo", "ShapesDataset", "build_dataset", "build_dataloader", "collate",
           "build_pipeline", "generate_shapes", "ensure_shapes", "register_builtin_types"]
