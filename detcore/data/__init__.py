"""Datasets, pipelines and loaders.

Importing this package registers the built-in dataset types (``CocoDataset``,
``ShapesDataset``) and transforms in ``detcore.registry``.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch.utils.data import Dataset

from detcore.data import coco, shapes, transforms  # noqa: F401  (registers built-in types)
from detcore.data.coco import CocoDataset, ImageInfo
from detcore.data.loader import build_dataloader, collate
from detcore.data.shapes import ShapesDataset, ensure_shapes, generate_shapes
from detcore.data.transforms import build_pipeline
from detcore.errors import ConfigError
from detcore.registry import DATASETS


def build_dataset(split_cfg: Mapping[str, Any], **overrides: Any) -> Dataset:
    """Build ``data.train|val|test`` (``{type: Name, ...}``) from DATASETS; ``overrides`` win."""
    if not isinstance(split_cfg, Mapping):
        raise ConfigError(f"a dataset config must be a mapping like {{type: CocoDataset, ann_file: ...}}, "
                          f"got {split_cfg!r:.200}")
    return DATASETS.build({**split_cfg, **overrides})


__all__ = ["CocoDataset", "ImageInfo", "ShapesDataset", "build_dataset", "build_dataloader", "collate",
           "build_pipeline", "generate_shapes", "ensure_shapes"]
