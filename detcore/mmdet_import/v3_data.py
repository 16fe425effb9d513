"""Map MMDetection 3.x's data keys onto detcore's ``data``, ``classes`` and the model's input settings.

``train_dataloader``/``val_dataloader``/``test_dataloader`` become ``data.train``/``val``/``test``
(batch size and workers, dataset type, ``data_root`` joined onto ``ann_file`` and
``data_prefix.img`` as MMEngine joins them, ``metainfo.classes``, the resize and flip steps of the
pipeline); ``model.data_preprocessor`` becomes the model's normalisation. The test pipeline's
resize becomes the model's ``min_size``/``max_size`` (torchvision's models resize at test time).
"""
from __future__ import annotations

from typing import Any

from detcore.mmdet_import.data_map import dataset_head, normalization, plain_variables, under_root
from detcore.mmdet_import.source import Source
from detcore.mmdet_import.transform_map import UnmappedStep, is_augmentation, map_augmentation

LOADERS = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader"}
# Pipeline steps whose work detcore's dataset or torchvision's model transform already does.
BUILT_IN = {"LoadImageFromFile", "PackDetInputs", "Pad", "ImageToTensor", "DefaultFormatBundle", "Collect"}
PALETTE_NOTE = "detcore picks the colours it draws with itself"
RANGE_NOTE = "range: detcore picks one of the listed scales, not between them"


def _resize_scale(src: Source, p: str) -> Any:
    """The ``scale`` of a Resize step (``scale`` in 3.x, ``img_scale`` in 2.x spelling)."""
    if src.get(f"{p}.keep_ratio", True) is not True:
        src.note(f"{p}.keep_ratio", "detcore's Resize keeps the aspect ratio")
    src.use(f"{p}.type")
    return src.get(f"{p}.scale", src.get(f"{p}.img_scale"))


def _pipeline(src: Source, path: str, model: dict, train: bool) -> tuple[list[dict], bool]:
    """detcore transforms for the 3.x pipeline at ``path`` and whether it loads masks."""
    out: list[dict] = []
    with_mask = False
    for i, step in enumerate(src.items(path)):
        p = f"{path}.{i}"
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "Resize" and ("scale" in step or "img_scale" in step):
            scale = _resize_scale(src, p)
            if train:
                out.append({"type": "Resize", "scale": scale})
            elif isinstance(scale, list) and len(scale) == 2 and all(isinstance(s, int) for s in scale):
                model["max_size"], model["min_size"] = max(scale), min(scale)
        elif kind == "RandomResize" and train and "ratio_range" not in step and _pairs(step.get("scale")):
            scales = _resize_scale(src, p)
            src.note(f"{p}.type", RANGE_NOTE)
            out.append({"type": "Resize", "scales": scales})
        elif kind == "RandomChoiceResize" and train and _pairs(step.get("scales")):
            src.use(f"{p}.type")
            if src.get(f"{p}.keep_ratio", True) is not True:
                src.note(f"{p}.keep_ratio", "detcore's Resize keeps the aspect ratio")
            out.append({"type": "Resize", "scales": src.get(f"{p}.scales")})
        elif kind == "RandomFlip":
            prob = src.get(f"{p}.prob", 0.5)
            src.use(f"{p}.type")
            if src.get(f"{p}.direction", "horizontal") != "horizontal":
                src.note(f"{p}.direction", "detcore flips horizontally")
            if train:
                out.append({"type": "RandomFlip", "prob": prob})
        elif is_augmentation(kind, 3) and train:
            try:
                out.append(map_augmentation(src.get(p), 3))
            except UnmappedStep as exc:
                src.note(p, f"left out: {exc}")
        elif kind == "LoadAnnotations":
            with_mask = bool(src.get(f"{p}.with_mask", False))
            src.use(f"{p}.type", f"{p}.with_bbox", f"{p}.poly2mask", f"{p}.backend_args")
        elif kind in BUILT_IN:
            src.use(p)
    return out, with_mask


def _pairs(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, list) and len(v) == 2 for v in value)


def _dataset(src: Source, path: str, model: dict, masks: bool, train: bool) -> dict:
    path, out = dataset_head(src, path)
    root = src.get(f"{path}.data_root") or ""
    if src.has(f"{path}.ann_file"):
        out["ann_file"] = under_root(root, src.get(f"{path}.ann_file"))
    prefix = next((f"{path}.data_prefix.{k}" for k in ("img", "img_path") if src.has(f"{path}.data_prefix.{k}")), None)
    if prefix:
        out["img_prefix"] = under_root(root, src.get(prefix))
    elif root:
        out["img_prefix"] = root
    classes = src.get(f"{path}.metainfo.classes")
    if isinstance(classes, list):
        out["classes"] = list(classes)
    elif isinstance(classes, str):
        out["classes"] = [classes]  # MMDetection reads ('balloon') (no comma) as one class
    if src.lookup(f"{path}.metainfo.palette") == src.lookup("metainfo.palette"):
        src.use(f"{path}.metainfo.palette")  # the top-level metainfo's, listed once there
    elif src.has(f"{path}.metainfo.palette"):
        src.note(f"{path}.metainfo.palette", PALETTE_NOTE)
    src.use(f"{path}.test_mode", f"{path}.backend_args")
    if src.get(f"{path}.filter_cfg.filter_empty_gt", True) is False and train:
        out["filter_empty_gt"] = False
    if src.has(f"{path}.filter_cfg.min_size"):
        src.note(f"{path}.filter_cfg.min_size", "detcore keeps small images (it drops only images without "
                                                "boxes, filter_empty_gt)")
    pipeline, with_mask = _pipeline(src, f"{path}.pipeline", model, train)
    if with_mask or masks:
        out["with_mask"] = True
    out["pipeline"] = pipeline
    return out


def _loader(src: Source, split: str, data: dict, model: dict, masks: bool) -> None:
    """``data.<split>`` and its batch size and workers from ``<split>_dataloader``."""
    p = LOADERS[split]
    train = split == "train"
    data[split] = _dataset(src, f"{p}.dataset", model, masks, train)
    batch, workers = src.get(f"{p}.batch_size"), src.get(f"{p}.num_workers")
    if train:
        if batch is not None:
            data["samples_per_gpu"] = batch
        if workers is not None:
            data["workers_per_gpu"] = workers
    else:
        if batch is not None and split == "val":
            data["test_samples_per_gpu"] = batch
        elif batch is not None and batch != data.get("test_samples_per_gpu", 1):
            data[split]["samples_per_gpu"] = batch
        if workers is not None and workers != data.get("workers_per_gpu"):
            data[split]["workers_per_gpu"] = workers
    src.use(f"{p}.persistent_workers", f"{p}.pin_memory", f"{p}.collate_fn")
    src.use_if(f"{p}.drop_last", False)
    src.use_if(f"{p}.sampler.type", "DefaultSampler", "InfiniteSampler")
    src.use_if(f"{p}.sampler.shuffle", train)
    src.use_if(f"{p}.sampler.seed", None)
    src.use_if(f"{p}.batch_sampler.type", "AspectRatioBatchSampler")  # detcore groups by aspect ratio too
    src.use_if(f"{p}.batch_sampler", None)


def map_preprocessor(src: Source, model: dict) -> None:
    """``model.data_preprocessor`` -> the model's ``image_mean``/``image_std`` (0..1 scale, RGB)."""
    p = "model.data_preprocessor"
    src.use_if(f"{p}.type", "DetDataPreprocessor")
    normalization(src, p, "bgr_to_rgb", False, model)
    if not src.use_if(f"{p}.pad_size_divisor", 32, 1) and src.has(f"{p}.pad_size_divisor"):
        src.note(f"{p}.pad_size_divisor", "torchvision's models pad each batch to a multiple of 32")
    src.use_if(f"{p}.pad_mask", True, False)
    src.use_if(f"{p}.pad_value", 0)
    src.use_if(f"{p}.boxtype2tensor", True)


def map_data_v3(src: Source, model: dict) -> dict:
    """``classes`` and ``data`` from the 3.x data loaders (and the model's input settings)."""
    map_preprocessor(src, model)
    masks = model["type"] == "MaskRCNN"
    data: dict = {}
    for split in LOADERS:
        if isinstance(src.lookup(LOADERS[split]), dict):
            _loader(src, split, data, model, masks)
        else:
            src.use_if(LOADERS[split], None)
    classes = next((d.get("classes") for d in (data.get(s) for s in LOADERS) if isinstance(d, dict)
                    and d.get("classes")), None)
    if src.lookup("metainfo.classes") == classes:  # the variable the guide's configs give every split
        if src.has("metainfo.palette"):
            src.note("metainfo.palette", PALETTE_NOTE)
        src.use("metainfo")
    plain_variables(src, data)
    order = ("samples_per_gpu", "workers_per_gpu", "test_samples_per_gpu")
    data = {**{k: data[k] for k in order if k in data}, **{k: v for k, v in data.items() if k not in order}}
    return {"classes": list(classes) if classes else None, "data": data}
