"""What a detector's label numbers mean, and how they become a dataset's category ids.

``label_ids: classes`` (the default): label ``k`` is the ``k``-th class of ``classes``, i.e. the
dataset's ``k``-th category (``dataset.cat_ids[k - 1]``), as in every model detcore trains.
``label_ids: coco``: label ``k`` is COCO category id ``k``, torchvision's 91-slot numbering
(``weights.meta["categories"]``: 0 is background, the ids COCO left out are ``N/A``). torchvision's
COCO detectors predict these; their detections are matched to a dataset's categories by id, so
they are evaluated on any COCO-format file that uses COCO's ids (val2017, or a subset of it).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

from detcore.errors import ConfigError, DataError

LABEL_IDS = ("classes", "coco")


def label_ids_of(cfg: Mapping[str, Any]) -> str:
    """The config's ``label_ids`` (default ``classes``); ConfigError for another value."""
    value = cfg.get("label_ids") or "classes"
    if value not in LABEL_IDS:
        raise ConfigError(f"{cfg.get('filename', 'config')}: label_ids must be classes (label k is the k-th of "
                          f"classes) or coco (label k is COCO category id k, torchvision's COCO models); got "
                          f"{value!r:.100}")
    return value


@functools.lru_cache(maxsize=1)
def coco_names() -> tuple[str, ...]:
    """COCO's category names by id (index 0 is ``__background__``, gaps are ``N/A``), from torchvision's
    weights metadata."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return tuple(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def label_names(label_ids: str, classes: Sequence[str] | None) -> list[str] | None:
    """Names by label (label ``k`` is ``names[k - 1]``): COCO's names for ``coco``, else ``classes``."""
    if label_ids == "coco":
        return list(coco_names()[1:])
    return list(classes) if classes else None


def check_coco_categories(categories: Mapping[int, Mapping[str, Any]], where: str) -> None:
    """DataError unless the categories (``coco.cats``: id -> {name}) use COCO's ids: every id a COCO
    detector predicts must name the same category, and at least one must be there."""
    names = coco_names()
    shared = [cid for cid in categories if isinstance(cid, int) and 0 < cid < len(names) and names[cid] != "N/A"]
    for cid in sorted(shared):
        if categories[cid].get("name") != names[cid]:
            raise DataError(f"{where}: category id {cid} is {categories[cid].get('name')!r}, but in COCO (and for a "
                            f"model with label_ids: coco) id {cid} is {names[cid]!r}; such a model reports COCO "
                            f"category ids, so evaluate it on a COCO-format file with COCO's ids and names")
    if not shared:
        raise DataError(f"{where}: none of its category ids {sorted(categories)[:10]} is a COCO category; a model "
                        f"with label_ids: coco reports COCO category ids (1 person, 2 bicycle, ... 90 toothbrush)")


def category_of_label(label_ids: str, cat_ids: Sequence[int]):
    """``category(label) -> category id or None`` (None: a category the dataset does not have)."""
    if label_ids == "coco":
        known = set(cat_ids)
        return lambda label: label if label in known else None
    cat_ids = list(cat_ids)

    def by_index(label: int) -> int:
        if not 0 < label <= len(cat_ids):
            raise DataError(f"predicted label {label} is outside 1..{len(cat_ids)}; the model's num_classes must be "
                            f"the dataset's {len(cat_ids)} classes (or set label_ids: coco for a model that "
                            f"predicts COCO category ids)")
        return cat_ids[label - 1]

    return by_index


def check_checkpoint_labels(label_ids: str, meta: Mapping[str, Any], checkpoint: object) -> None:
    """ConfigError when a checkpoint predicts COCO category ids (its meta says ``label_ids: coco``, as
    torchvision's detectors by name do) and the config reads labels otherwise."""
    theirs = meta.get("label_ids")
    if theirs == "coco" and label_ids != "coco":
        builder = meta.get("torchvision")
        fix = f"use configs/torchvision/{builder}.yaml, or set" if builder else "set"
        raise ConfigError(f"checkpoint {checkpoint} predicts COCO category ids (label_ids: coco) but the config reads "
                          f"labels as the k-th of classes; {fix} label_ids: coco and model.num_classes: 90 in the "
                          f"config")
