"""MMDetection habits in detcore YAML configs: keys MMDetection users write, and what they mean here.

- ``model.roi_head.bbox_head.num_classes`` (two-stage) and ``model.bbox_head.num_classes``
  (single-stage) are MMDetection's spelling of ``model.num_classes``: accepted as it; the mask
  head's ``num_classes`` must agree.
- ``data.<split>.samples_per_gpu`` on the val/test splits is MMDetection's test batch size; the
  loader reads it (detcore's own key is ``data.test_samples_per_gpu``, for val and test).
- ``checkpoint_config.max_keep_ckpts`` is ``max_keep``; ``evaluation.save_best`` is
  ``checkpoint_config.save_best`` (the MMDetection spelling wins, as detcore's bases never use it);
  ``by_epoch`` in these sections is dropped with a warning (detcore counts intervals in the
  runner's unit).
- ``log_config.hooks``: MMDetection's logger hooks, and 3.x's ``visualizer.vis_backends``, become
  detcore's ``MlflowLoggerHook``/``WandbLoggerHook`` entries; the text and TensorBoard loggers are
  dropped, as detcore always writes both (:mod:`detcore.loggers.settings`).
- Top-level variables of MMDetection's Python configs (``dataset_type``, ``data_root``,
  ``img_norm_cfg``, ``train_pipeline``, ...) are not variables in YAML: nothing reads them, so
  each is named in a warning with the key to set instead.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from detcore.errors import ConfigError

# Top-level keys of MMDetection configs that a detcore YAML config does not read, and what to use.
IGNORED_TOP_LEVEL = {
    "dataset_type": "YAML has no variables: set data.train.type, data.val.type and data.test.type",
    "data_root": "YAML has no variables: write the full paths in data.<split>.ann_file and img_prefix",
    "img_norm_cfg": "set model.image_mean and model.image_std (0..1 scale)",
    "train_pipeline": "YAML has no variables: set data.train.pipeline",
    "test_pipeline": "YAML has no variables: set data.test.pipeline",
    "val_pipeline": "YAML has no variables: set data.val.pipeline",
    "total_epochs": "set runner.max_epochs",
    "fp16": "set amp: true (or pass --amp to detcore train)",
    "workflow": "detcore trains, then evaluates every evaluation.interval",
    "gpu_ids": "use launcher submit --gpus/--nproc, or torchrun",
}
IGNORED_DATA = {
    "train_dataloader": "set data.samples_per_gpu and data.workers_per_gpu",
    "val_dataloader": "set data.test_samples_per_gpu (or data.val.samples_per_gpu)",
    "test_dataloader": "set data.test_samples_per_gpu (or data.test.samples_per_gpu)",
}
SHAPES_ONLY = ("split", "num_train", "num_val", "size", "seed", "root")
HEAD_PATHS = (("roi_head", "bbox_head"), ("bbox_head",))


def _pop_head_classes(model: dict, where: str) -> None:
    """Move MMDetection's head ``num_classes`` to ``model.num_classes`` (in place on a copy)."""
    found = []
    for path in HEAD_PATHS:
        node: Any = model
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        head = node.get(path[-1]) if isinstance(node, dict) else None
        if isinstance(head, dict) and "num_classes" in head:
            found.append((".".join(path), head.pop("num_classes")))
            if not head:
                node.pop(path[-1])
    mask = (model.get("roi_head") or {}).get("mask_head") if isinstance(model.get("roi_head"), dict) else None
    if isinstance(mask, dict) and "num_classes" in mask:
        found.append(("roi_head.mask_head", mask.pop("num_classes")))
        if not mask:
            model["roi_head"].pop("mask_head")
    if isinstance(model.get("roi_head"), dict) and not model["roi_head"]:
        model.pop("roi_head")
    values = {v for _, v in found if not isinstance(v, (dict, list))}
    if len(values) > 1:
        listed = ", ".join(f"model.{p}.num_classes={v!r}" for p, v in found)
        raise ConfigError(f"{where}: {listed} disagree; detcore has one model.num_classes, set it once")
    if found:
        model["num_classes"] = found[0][1]


def check_dataset_keys(split_cfg: Mapping[str, Any], where: str) -> None:
    """One line for the classic mix-up of the shapes base with COCO files (and the reverse)."""
    kind = split_cfg.get("type")
    if kind == "ShapesDataset" and ("ann_file" in split_cfg or "img_prefix" in split_cfg):
        raise ConfigError(f"{where}: ann_file/img_prefix are CocoDataset options, but the type is ShapesDataset "
                          f"(it generates its own data); set type: CocoDataset and _delete_: true in this split "
                          f"to drop the shapes options")
    extra = [k for k in SHAPES_ONLY if k in split_cfg]
    if kind == "CocoDataset" and extra:
        raise ConfigError(f"{where}: {', '.join(extra)} are ShapesDataset options left from the base; add "
                          f"_delete_: true to this split so it holds only the CocoDataset keys (type, ann_file, "
                          f"img_prefix, ...)")


def _hook_sections(out: dict, where: str) -> list[str]:
    """MMDetection's spellings in checkpoint_config / evaluation / log_config (in place on a copy)."""
    warnings = []
    ckpt, evaluation, log = (out.get(k) for k in ("checkpoint_config", "evaluation", "log_config"))
    # detcore's own bases spell these the detcore way, so an MMDetection spelling is the user's and wins.
    if isinstance(ckpt, dict) and "max_keep_ckpts" in ckpt:
        ckpt["max_keep"] = ckpt.pop("max_keep_ckpts")
    if isinstance(evaluation, dict) and "save_best" in evaluation:
        out["checkpoint_config"] = {**(ckpt if isinstance(ckpt, dict) else {}), "save_best": evaluation.pop("save_best")}
    warnings += _logger_hooks(out, where)
    for name in ("checkpoint_config", "evaluation", "log_config"):
        section = out.get(name)
        if isinstance(section, dict) and "by_epoch" in section:
            section.pop("by_epoch")
            warnings.append(f"{where}: {name}.by_epoch is not read (intervals count epochs for EpochBasedRunner "
                            f"and iterations for IterBasedRunner)")
    return warnings


def _logger_hooks(out: dict, where: str) -> list[str]:
    """``log_config.hooks`` in detcore's spelling, with MMDetection 3.x's ``visualizer.vis_backends`` (or a
    top-level ``vis_backends``) added to it (in place on a copy); see :mod:`detcore.loggers.settings`."""
    from detcore.loggers.settings import normalize_hooks, vis_backends

    warnings = []
    found = vis_backends(out)
    if found is not None:
        key, backends = found
        out.pop("vis_backends", None)
        if isinstance(out.get("visualizer"), dict):
            out["visualizer"].pop("vis_backends", None)
            if not out["visualizer"] or set(out["visualizer"]) <= {"type", "name"}:
                out.pop("visualizer")  # MMEngine's DetLocalVisualizer: detcore draws its own pictures
        log = out.get("log_config")
        log = out["log_config"] = dict(log) if isinstance(log, dict) else {}
        hooks = log.get("hooks")
        log["hooks"] = (hooks if isinstance(hooks, list) else []) + backends
    log = out.get("log_config")
    if isinstance(log, dict) and "hooks" in log:
        log["hooks"], notes = normalize_hooks(log["hooks"], where)
        warnings += notes
    return warnings


def resolve_habits(cfg: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """``cfg`` with MMDetection's spellings resolved, and a warning per key nothing reads."""
    out = copy.deepcopy(dict(cfg))
    where = str(out.get("filename", "config"))
    warnings = [f"{where}: top-level key {key!r} is not read ({fix})"
                for key, fix in IGNORED_TOP_LEVEL.items() if key in out]
    data = out.get("data")
    if isinstance(data, dict):
        warnings += [f"{where}: data.{key} is not read ({fix})" for key, fix in IGNORED_DATA.items() if key in data]
        for split in ("train", "val", "test"):
            if isinstance(data.get(split), Mapping):
                check_dataset_keys(data[split], f"{where}: data.{split}")
    if isinstance(out.get("model"), dict):
        _pop_head_classes(out["model"], where)
    warnings += _hook_sections(out, where)
    return out, warnings
