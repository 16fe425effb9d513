"""COCO-format detection datasets on pycocotools.

``CocoDataset`` reads an MMDetection-style split config (``ann_file``, ``img_prefix``,
``classes``, ``pipeline``, ...) and returns ``(image, target)`` pairs that torchvision's
detection models accept.

Bad-box policy: a box partially outside its image is clipped to the image; a box entirely
outside the image is skipped, counted in ``dataset.skipped`` and reported in one warning per
annotation file. A box with a non-positive width or height is refused, naming the file, the
annotation id and the image id, unless the dataset sets ``skip_degenerate_boxes: true`` (then it
is skipped and counted like the others; COCO 2017 train has two boxes of height 0, so the COCO
configs set it). Boxes that are not four finite numbers, unknown category ids, duplicate ids,
image file names that leave ``img_prefix`` (absolute, or with a ``..`` part), missing, corrupt
or over-large image files (``detcore.data.image_file``) and, for training, an image with more
than ``max_boxes_per_image`` boxes raise :class:`~detcore.errors.DataError` naming the file and
the record.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torchvision import tv_tensors

from detcore.data.coco_json import coco_from_dict, load_coco_json, validate_coco
from detcore.data.decode import check_decoder, decode_rgb
from detcore.data.transforms import Pipeline, build_pipeline, to_float_image
from detcore.errors import DataError
from detcore.registry import DATASETS

logger = logging.getLogger(__name__)

MAX_BOXES_PER_IMAGE = 1000  # per training image; COCO's most crowded image has under 100


@dataclass(frozen=True)
class ImageInfo:
    """What evaluation needs to map predictions back: sizes are (height, width)."""

    image_id: int
    file_name: str
    orig_size: tuple[int, int]
    img_shape: tuple[int, int] | None  # after a deterministic pipeline; None if it is random


@DATASETS.register()
class CocoDataset(torch.utils.data.Dataset):
    """A COCO json + image folder as ``(image, target)`` pairs for torchvision detectors.

    Labels are ``1..K`` in ``classes`` order (all categories by id when ``classes`` is None);
    0 is background. ``self.cat_ids[k - 1]`` is the COCO category id of label ``k``.
    Crowd annotations never enter ``target``; they stay in ``self.coco`` for evaluation.
    ``pipeline`` is a list of transform configs (``build_pipeline``) or a ready callable
    ``(image, target) -> (image, target)``. ``decoder``: ``torchvision`` (RGB JPEGs by
    ``torchvision.io.decode_jpeg``, the rest by Pillow) or ``pillow`` (:mod:`detcore.data.decode`).
    """

    def __init__(self, ann_file: str | Path, img_prefix: str | Path, classes: Sequence[str] | None = None,
                 pipeline: Sequence[Mapping[str, Any]] | Callable = (), filter_empty_gt: bool = True,
                 test_mode: bool = False, with_mask: bool = False,
                 max_boxes_per_image: int = MAX_BOXES_PER_IMAGE, skip_degenerate_boxes: bool = False,
                 decoder: str = "torchvision") -> None:
        self.ann_file = Path(ann_file)
        self.decoder = check_decoder(decoder, "decoder (dataset)")
        self.img_prefix = Path(img_prefix)
        self.test_mode = test_mode
        self.with_mask = with_mask
        if isinstance(pipeline, Pipeline):
            self.pipeline = pipeline
        elif callable(pipeline):
            self.pipeline = Pipeline([pipeline])
        else:
            self.pipeline = build_pipeline(pipeline)
        if not isinstance(skip_degenerate_boxes, bool):
            raise DataError(f"skip_degenerate_boxes must be true or false, got {skip_degenerate_boxes!r:.100}")
        data = load_coco_json(self.ann_file)
        validate_coco(data, self.ann_file, skip_degenerate_boxes=skip_degenerate_boxes)
        data.setdefault("annotations", [])
        data.setdefault("categories", [])
        self.coco = coco_from_dict(data)
        self.cat_ids, self.CLASSES = self._select_classes(classes)
        self.cat2label = {cat_id: k + 1 for k, cat_id in enumerate(self.cat_ids)}
        self.skipped: Counter[str] = Counter()
        self._first_skipped: dict[str, str] = {}
        self._targets = {img_id: self._index_image(img_id) for img_id in self.coco.imgs}
        self._report_skipped()
        if not test_mode:
            self._check_box_count(max_boxes_per_image)
        keep_empty = test_mode or not filter_empty_gt
        self.img_ids = [img["id"] for img in data["images"] if keep_empty or len(self._targets[img["id"]][1])]
        if not self.img_ids:
            raise DataError(
                f"no images left after filtering in {self.ann_file}: {len(data['images'])} images, none with a "
                f"usable non-crowd box of classes {list(self.CLASSES)}; check classes (names must match the "
                f"file's categories), or set filter_empty_gt=False / test_mode=True")

    # --- indexing -------------------------------------------------------------------------------
    def _select_classes(self, classes: Sequence[str] | None) -> tuple[list[int], tuple[str, ...]]:
        cats = sorted(self.coco.cats.values(), key=lambda c: c["id"])
        if classes is None:
            if not cats:
                raise DataError(f"{self.ann_file} has no categories; add a 'categories' list")
            return [c["id"] for c in cats], tuple(c["name"] for c in cats)
        if isinstance(classes, str):
            classes = [classes]
        by_name: dict[str, int] = {}
        for c in cats:
            by_name.setdefault(c["name"], c["id"])
        unknown = [name for name in classes if name not in by_name]
        if unknown:
            raise DataError(f"classes {unknown} are not categories of {self.ann_file}; "
                            f"its categories are {sorted(by_name)}")
        if len(set(classes)) != len(classes):
            raise DataError(f"classes {list(classes)} names a category twice; list each once")
        return [by_name[name] for name in classes], tuple(classes)

    def _index_image(self, img_id: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Clipped xyxy boxes, labels and annotation ids of the usable annotations of one image."""
        info = self.coco.imgs[img_id]
        w, h = info["width"], info["height"]
        boxes, labels, ann_ids = [], [], []
        for ann in self.coco.imgToAnns.get(img_id, []):
            if ann.get("iscrowd", 0) or ann["category_id"] not in self.cat2label:
                continue
            x, y, bw, bh = ann["bbox"]
            if bw <= 0 or bh <= 0:
                self._skip("non-positive width or height", ann)
                continue
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
            if x2 <= x1 or y2 <= y1:
                self._skip("entirely outside the image", ann)
                continue
            if self.with_mask and "segmentation" not in ann:
                raise DataError(f"{self.ann_file}: annotation id {ann['id']} of image id {img_id} has no "
                                f"'segmentation', but with_mask=True; add masks or set with_mask=False")
            boxes.append((x1, y1, x2, y2))
            labels.append(self.cat2label[ann["category_id"]])
            ann_ids.append(ann["id"])
        return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64), ann_ids)

    def _check_box_count(self, limit: int) -> None:
        """Refuse an image with more than ``limit`` training boxes: box matching costs memory
        proportional to anchors x boxes (a million boxes asked for 32 GB in ``box_iou``)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise DataError(f"max_boxes_per_image must be a positive integer, got {limit!r}")
        counts = {img_id: len(boxes) for img_id, (boxes, _, _) in self._targets.items()}
        img_id = max(counts, key=counts.__getitem__, default=None)
        if img_id is not None and counts[img_id] > limit:
            name = self.coco.imgs[img_id].get("file_name")
            raise DataError(f"{self.ann_file}: image id {img_id} ({name}) has {counts[img_id]} boxes, more than "
                            f"max_boxes_per_image={limit}; remove some, mark groups iscrowd=1, or raise the limit "
                            f"in the dataset config (max_boxes_per_image: {counts[img_id]})")

    def _skip(self, reason: str, ann: dict) -> None:
        if not self.skipped[reason]:
            self._first_skipped[reason] = f"annotation id {ann['id']} of image id {ann['image_id']}, bbox {ann['bbox']}"
        self.skipped[reason] += 1

    def _report_skipped(self) -> None:
        if self.skipped:
            parts = [f"{n} with {reason} (first: {self._first_skipped[reason]})" for reason, n in self.skipped.items()]
            logger.warning("%s: skipped %d annotations with unusable boxes: %s", self.ann_file,
                           sum(self.skipped.values()), "; ".join(parts))

    # --- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.img_ids)

    def get_aspect_ratio(self, i: int) -> float:
        """Width / height of image ``i`` from the json (no decoding)."""
        info = self.coco.imgs[self.img_ids[i]]
        return info["width"] / info["height"]

    def get_img_info(self, image_id: int) -> ImageInfo:
        """Sizes of an image id: ``orig_size`` from the json, ``img_shape`` after the pipeline."""
        info = self.coco.imgs.get(image_id)
        if info is None:
            raise DataError(f"image id {image_id} is not in {self.ann_file}")
        h, w = info["height"], info["width"]
        return ImageInfo(image_id, info["file_name"], (h, w), self.pipeline.output_size(h, w))

    def load_pixels(self, image_id: int) -> tv_tensors.Image:
        """Decode an image as uint8 RGB ``[3, H, W]``; DataError names a missing or corrupt file."""
        info = self.coco.imgs[image_id]
        path = self.img_prefix / info["file_name"]
        if not path.is_file():
            raise DataError(f"image file {path} (image id {image_id} in {self.ann_file}) does not exist; "
                            f"check img_prefix")
        rgb = decode_rgb(path, f" (image id {image_id} in {self.ann_file})", self.decoder)
        h, w = rgb.shape[-2:]
        if (w, h) != (info["width"], info["height"]):
            raise DataError(f"image file {path} is {w}x{h} but {self.ann_file} says "
                            f"{info['width']}x{info['height']} (image id {image_id}); fix the json or the file")
        return tv_tensors.Image(rgb)

    def load_image(self, image_id: int) -> tv_tensors.Image:
        """Decode an image as float32 RGB in 0..1; DataError names a missing or corrupt file."""
        return to_float_image(self.load_pixels(image_id))

    def load_masks(self, image_id: int, ann_ids: list[int]) -> np.ndarray:
        """uint8 masks [N, H, W] of the given annotations (polygons, RLE or uncompressed RLE)."""
        info = self.coco.imgs[image_id]
        masks = np.zeros((len(ann_ids), info["height"], info["width"]), dtype=np.uint8)
        for k, ann_id in enumerate(ann_ids):
            try:
                masks[k] = self.coco.annToMask(self.coco.anns[ann_id])
            except Exception as exc:  # pycocotools raises TypeError/ValueError/IndexError on bad segms
                raise DataError(f"{self.ann_file}: annotation id {ann_id} of image id {image_id} has a malformed "
                                f"segmentation ({type(exc).__name__}: {exc}); expected polygons or RLE") from None
        return masks

    def ground_truth(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of one image's usable xyxy boxes (original pixels) and labels (1..K), before the pipeline."""
        boxes, labels, _ = self._targets[image_id]
        return boxes.copy(), labels.copy()

    def __getitem__(self, i: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        image_id = self.img_ids[i]
        image = self.load_pixels(image_id)  # the pipeline makes it float 0..1 (after steps exact on uint8)
        h, w = image.shape[-2:]
        boxes, labels, ann_ids = self._targets[image_id]
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes.copy()), format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(labels.copy()),
            "image_id": image_id,
            "orig_size": (h, w),
        }
        if self.with_mask:
            target["masks"] = tv_tensors.Mask(torch.from_numpy(self.load_masks(image_id, ann_ids)))
        image, target = self.pipeline(image, target)
        target["img_shape"] = tuple(image.shape[-2:])
        return image, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.ann_file}, {len(self)} images, classes={list(self.CLASSES)}, "
                f"test_mode={self.test_mode}, with_mask={self.with_mask})")
