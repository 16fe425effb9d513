"""The COCO side every converter shares: the json skeleton, atomic writing, the summary.

Kept apart from the format readers so each of ``voc.py``, ``cityscapes.py`` and ``via.py``
only has to produce ``images``, ``annotations`` and ``categories`` lists.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from detcore.atomic import replacing
from detcore.data.image_file import check_image_file
from detcore.errors import DataError

logger = logging.getLogger(__name__)


def build_coco_dict(images: list[dict], annotations: list[dict], categories: list[dict],
                    description: str) -> dict[str, Any]:
    """Return a COCO instances dict that ``pycocotools.coco.COCO`` loads as is."""
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_coco_json(dataset: dict[str, Any], out_path: str | os.PathLike) -> Path:
    """Write ``dataset`` to ``out_path`` atomically (temp file in the same folder + ``os.replace``).

    A reader never sees a half-written file, and a failed conversion leaves any previous
    output untouched. The parent folder is created if needed.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out, fsync=True) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(dataset, f)
    return out


def summarize(dataset: dict[str, Any], skipped: int, out_path: Path, source: str) -> dict[str, int]:
    """Log and return ``{images, annotations, categories, skipped}`` for a written dataset."""
    summary = {
        "images": len(dataset["images"]),
        "annotations": len(dataset["annotations"]),
        "categories": len(dataset["categories"]),
        "skipped": skipped,
    }
    logger.info("converted %s -> %s: %d images, %d annotations, %d categories, %d skipped",
                source, out_path, summary["images"], summary["annotations"], summary["categories"], skipped)
    return summary


def read_image_size(path: Path, record: str) -> tuple[int, int]:
    """Return ``(width, height)`` of the image file at ``path`` (reads the header only).

    ``record`` names the annotation that needs the size, for the error message. The image size
    limit of the datasets applies (:mod:`detcore.data.image_file`): a converted dataset holds no
    image that training would refuse.
    """
    if not path.is_file():
        raise DataError(f"{record}: image file {path} does not exist; it is needed for the image size. "
                        f"Check the image folder option.")
    return check_image_file(path, f" ({record})")
