"""1. Training throughput: ``detcore train`` against a plain torchvision-style loop (goal: ratio >= 1.0).

Both sides run as fresh processes with the same thread count (OMP/MKL_NUM_THREADS and
``torch.set_num_threads``), the same generated shapes images, batch size, loader workers,
optimizer settings and number of iterations; runs alternate detcore/plain to spread drift.
The figure is steady-state images/s after ``warmup`` iterations:

* detcore: from the wall times of its log lines at iterations ``warmup`` and ``iters``
  (everything per iteration: data, step, hooks, logging; TensorBoard on), and, as a second
  figure, from ``iter_time`` in ``metrics.jsonl`` (data + step, the trainer's own number);
* plain: from ``time.perf_counter()`` after each iteration of the loop, and from its own
  data + step times.

Every model family, each a tiny model on the shapes images: Faster R-CNN, Mask R-CNN, RetinaNet,
FCOS and Cascade R-CNN (the plain loop builds the same network through
``detcore.models.build_detector``, which returns torchvision's own classes, with torchvision's own
RoI pooling), and torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn(weights=None,
weights_backbone=None, num_classes=4)`` against ``benchmarks/configs/faster_rcnn_mobilenet_v3_320_shapes.yaml``
(checked here to have the same parameters, name by name and shape by shape).

detcore trains with its defaults, which include what a plain loop does not do (the R-CNNs' sparse
RoIAlign backward on the CPU, :mod:`detcore.models.roi_align`). The ablation cases (only when
named with ``--case``) are the shapes and MobileNet cases with one switch turned (:data:`SWITCHES`),
each against the same plain loop:

* ``shapes_tv_roi_align``, ``mobilenet_tv_roi_align``: torchvision's RoIAlign backward instead of
  detcore's sparse one (the trainer alone against the loop);
* ``*_foreach``, ``*_fused``: the optimizer's multi-tensor or fused update (``optimizer.foreach``,
  ``optimizer.fused``);
* ``*_channels_last``: ``model.channels_last: true``;
* ``*_compile``: ``compile: true`` (backbone and neck through ``torch.compile``; compilation falls
  in the warm-up iterations, and its cost shows in ``details.<case>.detcore_first_window_s``);
* ``*_all``: compile, channels-last and the fused optimizer together.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import Context, Goal, Result, Row, compared, log, measured

TITLE = "training throughput: detcore train vs a plain torchvision-style loop"
BEAT = 1.10  # the shapes Faster R-CNN and MobileNet cases: beat the plain loop, not just match it


@dataclass(frozen=True)
class Case:
    key: str             # --case
    label: str
    config: Path
    plain: str           # plain_train --model: config (detcore's builder, torchvision's classes) or mobilenet
    batch: int
    input_size: int | None  # model.min_size = model.max_size, None: the config's own
    warmup: int
    iters: int
    log_interval: int
    extra: tuple[str, ...] = ()  # detcore-side overrides (the ablations)
    goal: float = 1.0    # detcore images/s over the plain loop's


# Ablations: suffix -> (what the label says, detcore-side overrides); each makes shapes_<suffix> and
# mobilenet_<suffix>, run only when named with --case
SWITCHES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tv_roi_align": ("torchvision's RoIAlign backward", ("+model.roi_head.roi_align_backward=torchvision",)),
    "foreach": ("optimizer.foreach", ("optimizer.foreach=true",)),
    "fused": ("optimizer.fused", ("optimizer.fused=true",)),
    "channels_last": ("model.channels_last", ("model.channels_last=true",)),
    "compile": ("compile (backbone + neck)", ("compile=true",)),
    "all": ("compile + channels_last + fused optimizer", ("compile=true", "model.channels_last=true",
                                                          "optimizer.fused=true")),
}
ABLATIONS = tuple(f"{base}_{suffix}" for suffix in SWITCHES for base in ("shapes", "mobilenet"))


def cases(ctx: Context) -> list[Case]:
    """The cases to run (``--case`` picks some by key)."""
    wanted = ctx.shared.get("cases")
    return [c for c in all_cases(ctx) if (c.key in wanted if wanted else c.key not in ABLATIONS)]


def all_cases(ctx: Context) -> list[Case]:
    shapes = jobs.REPO_ROOT / "configs" / "shapes"
    family = {"warmup": ctx.pick(3, 10), "iters": ctx.pick(9, 50), "log_interval": ctx.pick(3, 5)}
    tiny = {"warmup": ctx.pick(5, 20), "iters": ctx.pick(25, 120), "log_interval": ctx.pick(5, 10)}
    mobile = {"input_size": ctx.pick(128, 320), "warmup": ctx.pick(3, 5), "iters": ctx.pick(9, 30),
              "log_interval": ctx.pick(3, 5)}
    main = [
        Case("shapes", "shapes tiny Faster R-CNN", jobs.SHAPES_CONFIG, "config", batch=4, input_size=None, goal=BEAT,
             **tiny),
        Case("mobilenet", "fasterrcnn_mobilenet_v3_large_320_fpn", jobs.MOBILENET_CONFIG, "mobilenet", batch=2,
             goal=BEAT, **mobile),
        Case("mask", "shapes tiny Mask R-CNN", shapes / "mask_rcnn_tiny_shapes.yaml", "config", batch=4,
             input_size=None, **family),
        Case("retinanet", "shapes tiny RetinaNet", jobs.REPO_ROOT / "benchmarks" / "configs" / "retinanet_tiny_shapes.yaml",
             "config", batch=4, input_size=None, **family),
        Case("fcos", "shapes tiny FCOS", jobs.REPO_ROOT / "benchmarks" / "configs" / "fcos_tiny_shapes.yaml", "config",
             batch=4, input_size=None, **family),
        Case("cascade", "shapes tiny Cascade R-CNN", shapes / "cascade_rcnn_tiny_shapes.yaml", "config", batch=4,
             input_size=None, **family),
    ]
    # a speed switch aims at the base case's goal; torchvision's RoIAlign (the trainer alone) at matching the loop
    ablations = [replace(base, key=f"{base.key}_{suffix}", label=f"{base.label}, {what}", extra=extra,
                         goal=1.0 if suffix == "tv_roi_align" else base.goal)
                 for suffix, (what, extra) in SWITCHES.items() for base in main[:2]]
    return main + ablations


CASE_KEYS = ("shapes", "mobilenet", "mask", "retinanet", "fcos", "cascade", *ABLATIONS)  # --case choices


def same_architecture(case: Case) -> bool:
    """True when detcore's model from the config has torchvision's parameter names and shapes."""
    if case.plain != "mobilenet":
        return True  # the plain loop builds it with detcore's own builder
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    from detcore.config import load_config
    from detcore.models import build_detector

    cfg = load_config(case.config)
    ours = {k: tuple(v.shape) for k, v in build_detector(cfg["model"]).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=cfg["model"]["num_classes"] + 1).state_dict().items()}
    return ours == theirs


def _overrides(case: Case, workers: int) -> list[str]:
    out = [f"runner.max_iters={case.iters}", f"log_config.interval={case.log_interval}", jobs.NO_CHECKPOINTS,
           f"data.samples_per_gpu={case.batch}", f"data.workers_per_gpu={workers}",
           "auto_scale_lr.enable=false"]  # the same iterations whatever the batch (the worker would scale them)
    if case.input_size:
        out += [f"model.min_size={case.input_size}", f"model.max_size={case.input_size}"]
    return out


def run_detcore(ctx: Context, case: Case, threads: int, workers: int, timeout: float) -> tuple[jobs.Throughput, float]:
    """The run's throughput, and the wall time of its first ``log_interval`` iterations (data + step:
    with ``compile`` on, the compilation)."""
    work = ctx.workdir(f"train_{case.key}_detcore")
    cmd = [sys.executable, *jobs.detcore_train_args(case.config, work / "run", [*_overrides(case, workers), *case.extra])]
    jobs.run(cmd, work / "stdout.log", jobs.bench_env(threads), timeout, f"detcore train ({case.label})")
    first = min(jobs.read_metrics(work / "run"), key=lambda r: r["iter"])
    return jobs.detcore_throughput(work / "run", case.warmup, case.iters, case.batch), first["iter"] * first["iter_time"]


def run_plain(ctx: Context, case: Case, threads: int, workers: int, timeout: float) -> tuple[float, float]:
    from benchmarks.plain_train import throughput

    work = ctx.workdir(f"train_{case.key}_plain")
    out = work / "plain.json"
    overrides = [o for o in _overrides(case, workers) if o.startswith("model.")]
    cmd = [sys.executable, "-m", "benchmarks.plain_train", "--model", case.plain, "--config", str(case.config),
           "--iters", str(case.iters), "--batch", str(case.batch), "--workers", str(workers),
           "--threads", str(threads), "--out", str(out)]
    if overrides:
        cmd += ["--cfg-options", *overrides]
    jobs.run(cmd, work / "stdout.log", jobs.bench_env(threads), timeout, f"plain loop ({case.label})")
    return throughput(json.loads(out.read_text()), case.warmup)


def run(ctx: Context) -> Result:
    from detcore.config import load_config
    from detcore.data.shapes import ensure_shapes

    threads = os.cpu_count() or 1
    workers = int(load_config(jobs.SHAPES_CONFIG)["data"]["workers_per_gpu"])
    repeats = ctx.shared.get("pairs") or ctx.pick(1, 5)
    timeout = ctx.pick(600, 900)  # a loaded machine can take 10x longer than a quiet one
    train = load_config(jobs.SHAPES_CONFIG)["data"]["train"]
    ensure_shapes(num_train=train["num_train"], num_val=train["num_val"], size=train["size"], seed=train["seed"])

    rows: list[Row] = []
    details: dict = {}
    for case in cases(ctx):
        same = same_architecture(case)
        ours_wall, ours_step, data_share, plain_wall, plain_step, first_window = [], [], [], [], [], []
        for r in range(repeats):
            order = ("detcore", "plain") if r % 2 == 0 else ("plain", "detcore")
            for side in order:
                log(f"train_throughput: {case.label} {side} run {r + 1}/{repeats}")
                if side == "detcore":
                    t, first = run_detcore(ctx, case, threads, workers, timeout)
                    first_window.append(first)
                    ours_wall.append(t.wall)
                    ours_step.append(t.iter_time)
                    data_share.append(t.data_share)
                else:
                    w, s = run_plain(ctx, case, threads, workers, timeout)
                    plain_wall.append(w)
                    plain_step.append(s)
        arch = "" if same else "; WARNING: detcore's model differs from torchvision's"
        rows += [
            compared(f"{case.label}: detcore train", ours_wall, plain_wall, "img/s", Goal("ratio", ">=", case.goal),
                     note=f"wall time per iteration incl. hooks/logging; ratio vs plain loop{arch}"),
            measured(f"{case.label}: plain loop", plain_wall, "img/s", note="torchvision reference-style loop"),
            compared(f"{case.label}: detcore data+step (iter_time)", ours_step, plain_step, "img/s",
                     note="metrics.jsonl iter_time vs the loop's own data+step time; excludes hooks"),
        ]
        details[case.key] = {"same_architecture_as_torchvision": same, "detcore_data_time_share": data_share,
                             "detcore_first_window_s": first_window, "switches": list(case.extra),
                             "batch": case.batch, "input_size": case.input_size, "warmup": case.warmup,
                             "iters": case.iters, "log_interval": case.log_interval}
        if case.key == "shapes":
            ctx.shared["shapes_train_images_per_s"] = ours_wall
            ctx.shared["shapes_data_time_share"] = data_share
    settings = {"threads": threads, "loader_workers": workers, "repeats": repeats,
                "cases": [{**asdict(c), "config": str(c.config)} for c in cases(ctx)]}
    return Result(rows, settings, details)
