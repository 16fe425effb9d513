"""Map MMDetection's ``data``, pipelines, schedule and runtime keys onto detcore's."""
from __future__ import annotations

import posixpath
from typing import Any

from detcore.evaluation.metrics import predicts_masks
from detcore.mmdet_import.logger_map import map_loggers
from detcore.mmdet_import.source import Source
from detcore.mmdet_import.v3_schedule import metric_key
from detcore.mmdet_import.weights_map import map_load_from
from detcore.mmdet_import.transform_map import UnmappedStep, is_augmentation, map_augmentation

WRAPPERS = ("RepeatDataset", "ClassBalancedDataset", "MultiImageMixDataset")
# Transforms whose job detcore (or torchvision's model transform) already does.
BUILT_IN = {"LoadImageFromFile", "DefaultFormatBundle", "Collect", "ImageToTensor", "Pad", "LoadAnnotations",
            "MultiScaleFlipAug", "Normalize"}
LR_POLICIES = {"step": "step", "CosineAnnealing": "cosine", "fixed": "fixed"}
SPLITS = ("train", "val", "test")
OPTIMIZERS = ("SGD", "Adam", "AdamW")


def _pipeline(src: Source, path: str, model: dict, train: bool) -> tuple[list[dict], bool]:
    """detcore transforms for the MMDetection pipeline at ``path`` (of the train split: ``train``) and
    whether it loads masks."""
    out: list[dict] = []
    with_mask = False
    for i, step in enumerate(src.lookup(path) if isinstance(src.lookup(path), list) else []):
        p = f"{path}.{i}"
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "Resize" and "img_scale" in step:
            scale = src.get(f"{p}.img_scale")
            src.use(f"{p}.type")
            if not src.get(f"{p}.keep_ratio", True):
                src.note(f"{p}.keep_ratio", "detcore's Resize keeps the aspect ratio")
            many = isinstance(scale, list) and scale and isinstance(scale[0], list)
            if many and src.get(f"{p}.multiscale_mode", "range") == "range":
                src.note(f"{p}.multiscale_mode", "range: detcore picks one of the listed scales, not between them")
            out.append({"type": "Resize", "scales": scale} if many else {"type": "Resize", "scale": scale})
        elif kind == "RandomFlip" and train:
            prob = src.get(f"{p}.flip_ratio", src.get(f"{p}.prob", 0.5))
            src.use(f"{p}.type")
            if src.get(f"{p}.direction", "horizontal") != "horizontal":
                src.note(f"{p}.direction", "detcore flips horizontally")
            out.append({"type": "RandomFlip", "prob": prob})
        elif is_augmentation(kind, 2) and train:
            try:
                out.append(map_augmentation(src.get(p), 2))
            except UnmappedStep as exc:
                src.note(p, f"left out: {exc}")
        elif kind == "LoadAnnotations":
            with_mask = bool(src.get(f"{p}.with_mask", False))
            src.use(f"{p}.type", f"{p}.with_bbox", f"{p}.poly2mask")
        elif kind == "Normalize":
            _normalize(src, p, model)
        elif kind == "MultiScaleFlipAug":
            scale = src.get(f"{p}.img_scale")
            if isinstance(scale, list) and len(scale) == 2 and all(isinstance(s, int) for s in scale):
                model["max_size"], model["min_size"] = max(scale), min(scale)
            src.use(f"{p}.type", f"{p}.flip")
            sub, _ = _pipeline(src, f"{p}.transforms", model, train)
            out.extend(t for t in sub if t["type"] != "RandomFlip")
        elif kind in BUILT_IN or kind == "RandomFlip" or (kind == "Resize" and ".transforms." in p):
            src.use(p)  # done by the model's own transform (resize to min/max size, pad, normalise)
    return out, with_mask


def _normalize(src: Source, p: str, model: dict) -> None:
    src.use(f"{p}.type")
    normalization(src, p, "to_rgb", True, model)


def normalization(src: Source, p: str, rgb_key: str, rgb_default: bool, model: dict) -> None:
    """The model's ``image_mean``/``image_std`` (0..1 scale, RGB) from MMDetection's ``mean``/``std``
    at ``p`` (0..255, in BGR order when the ``rgb_key`` flag is false: reordered, and said so)."""
    mean, std = src.get(f"{p}.mean"), src.get(f"{p}.std")
    if src.get(f"{p}.{rgb_key}", rgb_default) is False and isinstance(mean, list) and isinstance(std, list):
        mean, std = mean[::-1], std[::-1]
        src.note(f"{p}.{rgb_key}", "detcore feeds RGB images; mean and std reordered to RGB, but BGR-trained "
                                   "(caffe) weights do not carry over")
    if isinstance(mean, list) and isinstance(std, list):
        model["image_mean"] = [round(m / 255, 6) for m in mean]
        model["image_std"] = [round(s / 255, 6) for s in std]


def dataset_head(src: Source, path: str) -> tuple[str, dict]:
    """The path of the dataset inside any wrappers at ``path`` (each wrapper noted) and its head (``type``, and ``skip_degenerate_boxes`` for COCO)."""
    while src.lookup(f"{path}.type") in WRAPPERS:
        src.note(f"{path}.type", f"{src.lookup(f'{path}.type')} wrapper dropped; the inner dataset is used")
        src.use(f"{path}.times", f"{path}.oversample_thr")
        path = f"{path}.dataset"
    kind = src.get(f"{path}.type", "CocoDataset")
    out: dict = {"type": kind}
    if kind == "CocoDataset":  # MMDetection's CocoDataset drops boxes under 1 pixel without a word
        out["skip_degenerate_boxes"] = True
    else:
        src.note(f"{path}.type", "detcore reads COCO json: convert the annotations (detcore convert voc|"
                                 "cityscapes|via) and set type: CocoDataset")
    return path, out


def _dataset(src: Source, path: str, model: dict, masks: bool) -> dict:
    path, out = dataset_head(src, path)
    root = src.get(f"{path}.data_root") or ""
    for key in ("ann_file", "img_prefix"):
        if src.has(f"{path}.{key}"):
            out[key] = under_root(root, src.get(f"{path}.{key}"))
    if src.has(f"{path}.classes"):
        out["classes"] = list(src.get(f"{path}.classes"))
    src.use(f"{path}.filter_empty_gt", f"{path}.test_mode")
    pipeline, with_mask = _pipeline(src, f"{path}.pipeline", model, train=path.startswith("data.train"))
    if with_mask or masks:
        out["with_mask"] = True
    out["pipeline"] = pipeline
    if src.has(f"{path}.samples_per_gpu"):  # MMDetection's tools/test.py reads the test batch size here
        out["samples_per_gpu"] = src.get(f"{path}.samples_per_gpu")
    return out


def map_data(src: Source, model: dict) -> dict:
    """``classes`` and ``data`` (and the model's image size and normalisation, set in ``model``)."""
    out: dict = {}
    masks = predicts_masks(model)
    data: dict = {}
    for key in ("samples_per_gpu", "workers_per_gpu"):
        if src.has(f"data.{key}"):
            data[key] = src.get(f"data.{key}")
        if src.has(f"data.train_dataloader.{key}"):  # overrides data.<key> for the training loader
            data[key] = src.get(f"data.train_dataloader.{key}")
    for key in ("test_dataloader", "val_dataloader"):
        if src.has(f"data.{key}.samples_per_gpu") and "test_samples_per_gpu" not in data:
            data["test_samples_per_gpu"] = src.get(f"data.{key}.samples_per_gpu")
    for split in SPLITS:
        if src.has(f"data.{split}"):
            data[split] = _dataset(src, f"data.{split}", model, masks)
    classes = src.get("classes")
    if classes is None:
        classes = next((d.get("classes") for d in data.values() if isinstance(d, dict) and d.get("classes")), None)
    if isinstance(classes, str):
        src.note("classes", "a file of class names is not read: list the names in the YAML")
        classes = None
    out["classes"] = list(classes) if classes else None
    out["data"] = data
    plain_variables(src, data)
    return out


def plain_variables(src: Source, data: dict) -> None:
    """The top-level variables MMDetection's configs use to fill ``data`` (used: what they hold
    is mapped where they were used); a ``dataset_type`` no dataset has is listed."""
    dataset_type = src.lookup("dataset_type")
    if isinstance(dataset_type, str):
        types = {d.get("type") for d in data.values() if isinstance(d, dict)}
        if dataset_type not in types:
            src.note("dataset_type", f"a plain variable in MMDetection too: the datasets' type is "
                                     f"{', '.join(sorted(map(str, types)))}; set data.<split>.type to change it")
        else:
            src.use("dataset_type")
    src.use("data_root", "img_norm_cfg", "train_pipeline", "test_pipeline", "val_pipeline", "backend_args",
            "file_client_args")


def under_root(root: str, value: Any) -> Any:
    """``value`` joined onto ``data_root`` as MMDetection joins it (``os.path.join``; absolute paths
    and an empty root leave it as it is)."""
    return posixpath.join(root, value) if isinstance(value, str) and root and value else value


def _amp(src: Source, out: dict) -> None:
    """``fp16 = dict(loss_scale=...)`` and the FP16 optimizer hooks -> ``amp: true``."""
    hook = src.get("optimizer_config.type", "OptimizerHook")
    if hook in ("Fp16OptimizerHook", "GradientCumulativeFp16OptimizerHook") or src.has("fp16"):
        out["amp"] = True
        for key in ("fp16.loss_scale", "optimizer_config.loss_scale"):
            if not src.use_if(key, "dynamic") and src.has(key):
                src.note(key, "detcore scales the loss dynamically (torch.amp.GradScaler)")
        src.use("fp16", "optimizer_config.type")
    elif hook != "OptimizerHook":
        src.note("optimizer_config.type", "detcore steps the optimizer once per batch (amp: true for mixed "
                                          "precision)")


def map_schedule(src: Source) -> dict:
    """optimizer, grad clip, LR policy and warmup, runner, hooks' intervals and the runtime keys."""
    out: dict = {}
    if src.has("optimizer"):
        opt = {k: src.get(f"optimizer.{k}") for k in ("type", "lr", "momentum", "weight_decay", "betas", "eps",
                                                       "nesterov") if src.has(f"optimizer.{k}")}
        out["optimizer"] = opt
        if opt.get("type") not in OPTIMIZERS:
            src.note("optimizer.type", f"detcore has {', '.join(OPTIMIZERS)}; kept as written, choose one of them")
    clip = src.get("optimizer_config.grad_clip")
    out["optimizer_config"] = {"grad_clip": dict(clip) if isinstance(clip, dict) else None}
    _amp(src, out)
    if src.has("lr_config"):
        lr = {"policy": LR_POLICIES.get(src.get("lr_config.policy"), src.get("lr_config.policy"))}
        if lr["policy"] not in LR_POLICIES.values():
            src.note("lr_config.policy", "not a detcore policy (step, cosine, fixed); kept as written")
        for key in ("step", "gamma", "min_lr_ratio", "warmup", "warmup_iters", "warmup_ratio"):
            if src.has(f"lr_config.{key}"):
                lr[key] = src.get(f"lr_config.{key}")
        if lr.get("warmup") == "exp":
            src.note("lr_config.warmup", "detcore warms up linear or constant; linear used")
            lr["warmup"] = "linear"
        if src.has("lr_config.min_lr"):
            src.note("lr_config.min_lr", "detcore takes min_lr_ratio (min_lr / optimizer.lr)")
        src.use("lr_config.by_epoch")
        out["lr_config"] = lr
    runner = {k: src.get(f"runner.{k}") for k in ("type", "max_epochs", "max_iters") if src.has(f"runner.{k}")}
    if src.has("total_epochs"):
        runner = {"type": "EpochBasedRunner", "max_epochs": src.get("total_epochs")}
    if runner:
        out["runner"] = runner
    ckpt = {"interval": src.get("checkpoint_config.interval", 1)}
    if src.has("checkpoint_config.max_keep_ckpts"):
        ckpt["max_keep"] = src.get("checkpoint_config.max_keep_ckpts")
    src.use("checkpoint_config.by_epoch")
    out["checkpoint_config"] = ckpt
    if src.has("evaluation"):
        metric = src.get("evaluation.metric", "bbox")
        ev = {"interval": src.get("evaluation.interval", 1), "metric": [metric] if isinstance(metric, str) else metric}
        if src.has("evaluation.save_best"):
            best = src.get("evaluation.save_best")
            out["checkpoint_config"]["save_best"] = metric_key(best, ev["metric"]) or best
            if not metric_key(best, ev["metric"]):
                src.note("evaluation.save_best", "not a metric detcore computes (bbox_AP, segm_AP, mAP, ...); kept "
                                                 "as written")
        out["evaluation"] = ev
    out["log_config"] = {"interval": src.get("log_config.interval", 50)}
    loggers = map_loggers(src, "log_config.hooks", _positive(out["log_config"]["interval"]))
    if loggers:
        out["log_config"]["hooks"] = loggers
    for i, hook in enumerate(src.items("custom_hooks")):
        if isinstance(hook, dict) and hook.get("type") == "NumClassCheckHook":
            src.use(f"custom_hooks.{i}")  # detcore checks num_classes against the dataset itself
    out["custom_hooks"] = []
    map_load_from(src, out)
    for key in ("resume_from", "work_dir"):
        if src.has(key):
            out[key] = src.get(key)
    if src.has("auto_scale_lr"):
        out["auto_scale_lr"] = {k: src.get(f"auto_scale_lr.{k}") for k in ("enable", "base_batch_size")
                                if src.has(f"auto_scale_lr.{k}")}
    if src.lookup("workflow") in ([["train", 1]], [("train", 1)]):
        src.use("workflow")
    if src.lookup("dist_params") == {"backend": "nccl"}:
        src.use("dist_params")  # detcore picks nccl on GPUs and gloo on CPUs
    if src.lookup("log_level") == "INFO":
        src.use("log_level")
    return out


def _positive(value: Any) -> int:
    """A log interval to count logger intervals against (MMCV's 10 when it is not a whole number >= 1)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 10
