"""Converters from other annotation formats to COCO instances json.

Each converter reads a dataset in its own on-disk format, validates it (``DataError``
naming the file and record), writes COCO json atomically and returns a summary
``{images, annotations, categories, skipped}``. ``detcore convert`` is the command line.
"""
from __future__ import annotations

from detcore.data.converters.cityscapes import CITYSCAPES_INSTANCE_CLASSES, convert_cityscapes
from detcore.data.converters.via import convert_via
from detcore.data.converters.voc import VOC_CLASSES, convert_voc

__all__ = ["CITYSCAPES_INSTANCE_CLASSES", "VOC_CLASSES", "convert_cityscapes", "convert_via", "convert_voc"]
