"""Map MMDetection 3.x's schedule and runtime keys onto detcore's.

``optim_wrapper`` -> ``optimizer``, ``optimizer_config.grad_clip`` and ``amp``;
``param_scheduler`` -> ``lr_config`` (a ``LinearLR``/``ConstantLR`` from 0 is the warmup,
``MultiStepLR``/``StepLR`` the steps, ``CosineAnnealingLR`` the cosine policy); ``train_cfg`` ->
``runner`` and the evaluation interval; ``default_hooks`` -> ``checkpoint_config`` and
``log_config`` (``visualizer.vis_backends``' MLflow and W&B loggers -> ``log_config.hooks``);
``val_evaluator`` -> ``evaluation``; ``auto_scale_lr``, ``load_from``, ``resume`` and
``work_dir`` as they are. MMEngine's runtime defaults (scope, env, visualiser, log processor)
are what detcore does anyway and are not listed.
"""
from __future__ import annotations

from typing import Any

from detcore.mmdet_import.logger_map import map_vis_backends
from detcore.mmdet_import.source import Source
from detcore.mmdet_import.weights_map import map_load_from

OPTIMIZERS = ("SGD", "Adam", "AdamW")
WARMUPS = {"LinearLR": "linear", "ConstantLR": "constant"}
STEP_SCHEDULERS = ("MultiStepLR", "StepLR")
COCO_KEYS = {"mAP": "AP", "mAP_50": "AP50", "mAP_75": "AP75", "mAP_s": "APs", "mAP_m": "APm", "mAP_l": "APl"}
RUNTIME_DEFAULTS = {  # MMEngine's runtime settings that change nothing detcore does
    "default_scope": ("mmdet", None), "log_level": ("INFO",), "env_cfg.cudnn_benchmark": (False,),
    "env_cfg.mp_cfg.mp_start_method": ("fork", "spawn"), "env_cfg.mp_cfg.opencv_num_threads": (0,),
    "env_cfg.dist_cfg.backend": ("nccl",), "launcher": ("none", "pytorch", "slurm"),
    "visualizer.type": ("DetLocalVisualizer",), "visualizer.name": ("visualizer",),
    "log_processor.type": ("LogProcessor",), "log_processor.by_epoch": (True, False),
    "log_processor.window_size": (50,), "val_cfg.type": ("ValLoop",), "test_cfg.type": ("TestLoop",),
    "default_hooks.timer.type": ("IterTimerHook",), "default_hooks.param_scheduler.type": ("ParamSchedulerHook",),
    "default_hooks.sampler_seed.type": ("DistSamplerSeedHook",),
    "default_hooks.visualization.type": ("DetVisualizationHook",), "default_hooks.logger.type": ("LoggerHook",),
    "default_hooks.checkpoint.type": ("CheckpointHook",),
}


def metric_key(name: Any, metrics: list[str]) -> str | None:
    """detcore's name of the metric MMDetection calls ``name`` (``coco/bbox_mAP``, ``bbox_mAP``,
    ``auto``, ``pascal_voc/mAP``): ``bbox_AP``, ``segm_AP50``, ``mAP`` ...; None when there is none."""
    if name == "auto":
        first = metrics[0] if metrics else "bbox"
        return "mAP" if first == "mAP" else f"{first}_AP"
    if not isinstance(name, str):
        return None
    name = name.split("/", 1)[-1]
    if name in ("mAP", "AP50"):
        return "mAP"
    kind, _, rest = name.partition("_")
    if kind in ("bbox", "segm") and rest in COCO_KEYS:
        return f"{kind}_{COCO_KEYS[rest]}"
    return None


def _optimizer(src: Source, out: dict) -> None:
    w = "optim_wrapper"
    kind = src.get(f"{w}.type", "OptimWrapper")
    if kind == "AmpOptimWrapper":
        out["amp"] = True
        if not src.use_if(f"{w}.loss_scale", "dynamic"):
            if src.has(f"{w}.loss_scale"):
                src.note(f"{w}.loss_scale", "detcore scales the loss dynamically (torch.amp.GradScaler)")
    elif kind != "OptimWrapper":
        src.note(f"{w}.type", "detcore steps the optimizer once per batch (amp: true for mixed precision)")
    if src.has(f"{w}.optimizer"):
        opt = {k: src.get(f"{w}.optimizer.{k}") for k in ("type", "lr", "momentum", "weight_decay", "betas", "eps",
                                                          "nesterov") if src.has(f"{w}.optimizer.{k}")}
        out["optimizer"] = opt
        if opt.get("type") not in OPTIMIZERS:
            src.note(f"{w}.optimizer.type", f"detcore has {', '.join(OPTIMIZERS)}; kept as written, choose one of them")
    clip = src.lookup(f"{w}.clip_grad")
    grad_clip = None
    if isinstance(clip, dict):
        if clip.get("type", "norm") != "norm":
            src.note(f"{w}.clip_grad.type", "detcore clips the gradient norm (clip_grad_norm_)")
        grad_clip = {k: src.get(f"{w}.clip_grad.{k}") for k in ("max_norm", "norm_type") if k in clip}
        src.use(f"{w}.clip_grad.type")
    else:
        src.use_if(f"{w}.clip_grad", None)
    out["optimizer_config"] = {"grad_clip": grad_clip}


def _runner(src: Source, out: dict) -> bool:
    """``runner`` from ``train_cfg``; True when training counts epochs."""
    t = "train_cfg"
    kind = src.get(f"{t}.type")
    by_epoch = kind == "EpochBasedTrainLoop" or (kind is None and (src.has(f"{t}.max_epochs")
                                                                   or src.get(f"{t}.by_epoch") is True))
    if by_epoch and src.has(f"{t}.max_epochs"):
        out["runner"] = {"type": "EpochBasedRunner", "max_epochs": src.get(f"{t}.max_epochs")}
    elif (kind in (None, "IterBasedTrainLoop")) and src.has(f"{t}.max_iters"):
        out["runner"] = {"type": "IterBasedRunner", "max_iters": src.get(f"{t}.max_iters")}
        by_epoch = False
    elif kind is not None:
        src.note(f"{t}.type", "detcore trains with an epoch or iteration loop (EpochBasedTrainLoop with "
                              "max_epochs, IterBasedTrainLoop with max_iters)")
    src.use(f"{t}.by_epoch")
    if src.get(f"{t}.val_begin", 1) != 1:
        src.note(f"{t}.val_begin", "detcore validates every evaluation.interval from the start")
    return by_epoch


def _schedulers(src: Source) -> list[tuple[str, dict]]:
    value = src.lookup("param_scheduler")
    if isinstance(value, dict):
        return [("param_scheduler", value)]
    return [(f"param_scheduler.{i}", s) for i, s in enumerate(src.items("param_scheduler")) if isinstance(s, dict)]


def _lr_config(src: Source, out: dict, by_epoch: bool) -> None:
    """``lr_config`` from ``param_scheduler`` (MMEngine schedulers count epochs unless by_epoch=False)."""
    lr_cfg: dict = {"policy": "fixed"}
    base_lr = (out.get("optimizer") or {}).get("lr")
    max_units = (out.get("runner") or {}).get("max_epochs" if by_epoch else "max_iters")
    for p, sched in _schedulers(src):
        kind = sched.get("type")
        unit_ok = sched.get("by_epoch", True) == by_epoch
        if kind in WARMUPS and sched.get("begin", 0) == 0 and sched.get("by_epoch", True) is False \
                and "warmup" not in lr_cfg and isinstance(sched.get("end"), int):
            factor = "start_factor" if kind == "LinearLR" else "factor"
            lr_cfg.update(warmup=WARMUPS[kind], warmup_iters=src.get(f"{p}.end"),
                          warmup_ratio=src.get(f"{p}.{factor}", 1.0 / 3))
            src.use(f"{p}.type", f"{p}.begin", f"{p}.by_epoch")
            src.use_if(f"{p}.end_factor", 1.0, 1)
        elif kind in STEP_SCHEDULERS and lr_cfg["policy"] == "fixed" and sched.get("begin", 0) == 0:
            if kind == "MultiStepLR":
                steps = src.get(f"{p}.milestones")
            else:
                size, end = src.get(f"{p}.step_size"), sched.get("end", max_units)
                steps = list(range(size, end, size)) if isinstance(size, int) and size > 0 \
                    and isinstance(end, int) else size
            lr_cfg.update(policy="step", step=steps, gamma=src.get(f"{p}.gamma", 0.1))
            src.use(f"{p}.type", f"{p}.begin")
            _unit(src, p, unit_ok, by_epoch)
            end = sched.get("end")
            if end is None or max_units is None or (isinstance(end, int) and end >= max_units):
                src.use(f"{p}.end")
        elif kind == "CosineAnnealingLR" and lr_cfg["policy"] == "fixed":
            lr_cfg["policy"] = "cosine"
            eta_min, ratio = src.get(f"{p}.eta_min", 0.0), src.get(f"{p}.eta_min_ratio")
            if isinstance(ratio, (int, float)):
                lr_cfg["min_lr_ratio"] = ratio
            elif isinstance(eta_min, (int, float)) and isinstance(base_lr, (int, float)) and base_lr > 0:
                lr_cfg["min_lr_ratio"] = round(eta_min / base_lr, 8)
            src.use(f"{p}.type", f"{p}.convert_to_iter_based")
            _unit(src, p, unit_ok, by_epoch)
            span = (sched.get("begin", 0), sched.get("end", max_units), sched.get("T_max", max_units))
            if span == (0, max_units, max_units) or span == (0, None, max_units):
                src.use(f"{p}.begin", f"{p}.end", f"{p}.T_max")
            else:
                src.note(p, "detcore anneals from the first to the last iteration of the run (begin 0, T_max = "
                            "the run's length)")
    out["lr_config"] = lr_cfg


def _unit(src: Source, p: str, unit_ok: bool, by_epoch: bool) -> None:
    if unit_ok:
        src.use(f"{p}.by_epoch")
    else:
        src.note(f"{p}.by_epoch", f"detcore counts LR steps in the loop's unit ({'epochs' if by_epoch else 'iterations'}"
                                  f"); the values were kept as written, convert them")


def _hooks(src: Source, out: dict, by_epoch: bool) -> None:
    h = "default_hooks"
    metrics = (out.get("evaluation") or {}).get("metric", ["bbox"])
    ckpt: dict = {"interval": src.get(f"{h}.checkpoint.interval", 1)}
    if src.has(f"{h}.checkpoint.max_keep_ckpts"):
        ckpt["max_keep"] = src.get(f"{h}.checkpoint.max_keep_ckpts")
    best = src.lookup(f"{h}.checkpoint.save_best")
    if isinstance(best, str):
        key = metric_key(best, metrics)
        ckpt["save_best"] = key or best
        if key:
            src.use(f"{h}.checkpoint.save_best")
        else:
            src.note(f"{h}.checkpoint.save_best", "not a metric detcore computes (bbox_AP, segm_AP, mAP, ...); "
                                                  "kept as written")
        if not src.use_if(f"{h}.checkpoint.rule", "greater", None) and src.has(f"{h}.checkpoint.rule"):
            src.note(f"{h}.checkpoint.rule", "detcore keeps the greatest value")
    src.use_if(f"{h}.checkpoint.by_epoch", by_epoch)
    src.use_if(f"{h}.checkpoint.save_last", True)
    src.use_if(f"{h}.checkpoint.save_optimizer", True)
    src.use_if(f"{h}.checkpoint.save_param_scheduler", True)
    out["checkpoint_config"] = ckpt
    out["log_config"] = {"interval": src.get(f"{h}.logger.interval", 50)}
    interval = out["log_config"]["interval"]
    loggers = map_vis_backends(src, interval if isinstance(interval, int) and interval > 0 else 10)
    if loggers:
        out["log_config"]["hooks"] = loggers
    src.use_if(f"{h}.visualization.draw", False)
    src.use(f"{h}.visualization.interval", f"{h}.visualization.show")
    for path, allowed in RUNTIME_DEFAULTS.items():
        src.use_if(path, *allowed)
    out["custom_hooks"] = []


def _evaluation(src: Source, out: dict, data: dict) -> None:
    """``evaluation`` from ``val_evaluator`` (CocoMetric, VOCMetric) and the loop's ``val_interval``."""
    e = "val_evaluator"
    if not isinstance(src.lookup(e), dict):
        for key in (e, "test_evaluator", "val_cfg", "test_cfg"):
            src.use_if(key, None)  # validation switched off: detcore validates when data.val is set
        return
    kind = src.get(f"{e}.type")
    evaluation: dict = {"interval": src.get("train_cfg.val_interval", 1)}
    if kind == "VOCMetric":
        metric = src.get(f"{e}.metric", "mAP")
        evaluation["metric"] = ["mAP"]
        if metric != "mAP":
            src.note(f"{e}.metric", "VOCMetric computes mAP here")
        mode = src.get(f"{e}.eval_mode", "area")
        evaluation["voc_method"] = mode if mode in ("area", "11points") else "area"
        src.use_if(f"{e}.iou_thrs", 0.5, [0.5])
    else:
        metric = src.get(f"{e}.metric", "bbox")
        wanted = [metric] if isinstance(metric, str) else list(metric) if isinstance(metric, list) else ["bbox"]
        evaluation["metric"] = [m for m in wanted if m in ("bbox", "segm")] or ["bbox"]
        if kind != "CocoMetric" or evaluation["metric"] != wanted:
            src.note(f"{e}.metric" if kind == "CocoMetric" else f"{e}.type",
                     "detcore evaluates COCO bbox and segm, and Pascal VOC mAP; kept: "
                     + ", ".join(evaluation["metric"]))
        src.use_if(f"{e}.format_only", False)
        src.use(f"{e}.classwise", f"{e}.proposal_nums", f"{e}.sort_categories")
    ann = src.lookup(f"{e}.ann_file")
    if ann == (data.get("val") or {}).get("ann_file") or ann is None:
        src.use(f"{e}.ann_file")
    elif isinstance(ann, str):
        src.note(f"{e}.ann_file", "detcore evaluates against data.val.ann_file (the annotations it validates on)")
    src.use(f"{e}.backend_args")
    test = src.lookup("test_evaluator")
    if test == src.lookup(e):
        src.use("test_evaluator")
    out["evaluation"] = evaluation


def map_schedule_v3(src: Source, data: dict) -> dict:
    """optimizer, AMP, grad clip, LR schedule, loop, hooks, evaluation and the runtime keys."""
    out: dict = {}
    _optimizer(src, out)
    by_epoch = _runner(src, out)
    _lr_config(src, out, by_epoch)
    _evaluation(src, out, data)
    _hooks(src, out, by_epoch)
    map_load_from(src, out)
    if src.has("work_dir"):
        out["work_dir"] = src.get("work_dir")
    if src.has("auto_scale_lr"):
        out["auto_scale_lr"] = {k: src.get(f"auto_scale_lr.{k}") for k in ("enable", "base_batch_size")
                                if src.has(f"auto_scale_lr.{k}")}
    runner, lr = out.get("runner") or {}, (out.get("optimizer") or {}).get("lr")
    for name, value in (("max_epochs", runner.get("max_epochs")), ("max_iters", runner.get("max_iters")),
                        ("max_iter", runner.get("max_iters")), ("base_lr", lr)):
        if value is not None:
            src.use_if(name, value)  # a plain variable the config filled its loop or optimizer with
    if src.has("tta_model"):
        src.note("tta_model", "test-time augmentation is not done here: detcore tests at one scale, unflipped")
        src.use("tta_pipeline", "img_scales")
    if src.has("randomness"):
        src.note("randomness", "pass --seed and --deterministic to detcore train")
    order = ("optimizer", "optimizer_config", "amp", "lr_config", "runner", "checkpoint_config", "evaluation")
    return {**{k: out[k] for k in order if k in out}, **{k: v for k, v in out.items() if k not in order}}
