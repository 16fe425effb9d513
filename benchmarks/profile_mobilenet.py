"""Profile one training step of ``fasterrcnn_mobilenet_v3_large_320_fpn``: detcore's trainer vs the plain loop.

Each side runs in a fresh process of its own (as in the throughput benchmark, so nothing one
side sets up, such as threads or the allocator, reaches the other), with the same thread count,
seed, batch size and input size (the settings of ``benchmarks.train_throughput``'s mobilenet
case). For each side it records, per step, what the model was given and what it did,
independent of machine load: the images' dtype/size/value range out of the loader, their size
after the model's own ``GeneralizedRCNNTransform``, the number of RPN proposals and of sampled
RoIs (the box head's batch), ``torch.profiler``'s operator table (calls and self CPU time), and
the process's minor page faults and kernel CPU time per step. It writes the
comparison as JSON and Markdown:

    python -m benchmarks.profile_mobilenet [--steps 6] [--warmup 2] [--size 320] [--out benchmarks/results]

The operator counts are the load-independent evidence; the times are only indicative on a
shared machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from benchmarks import jobs

BATCH = 2


class Probe:
    """Forward hooks recording what the detector sees and does in each step."""

    def __init__(self, model) -> None:
        self.steps: list[dict[str, Any]] = []
        self.current: dict[str, Any] = {}
        model.transform.register_forward_pre_hook(self._pre_transform)
        model.transform.register_forward_hook(self._transform)
        model.rpn.register_forward_hook(self._rpn)
        model.roi_heads.box_head.register_forward_hook(self._box_head)

    def start(self) -> None:
        self.current = {}
        self.steps.append(self.current)

    def _pre_transform(self, _module, args) -> None:
        images = args[0]
        self.current["loader_images"] = [{"dtype": str(i.dtype).replace("torch.", ""), "shape": list(i.shape),
                                          "min": round(float(i.min()), 3), "max": round(float(i.max()), 3),
                                          "contiguous": i.is_contiguous()} for i in images]

    def _transform(self, _module, _args, out) -> None:
        image_list, _ = out
        self.current["model_input"] = list(image_list.tensors.shape)
        self.current["image_sizes"] = [list(s) for s in image_list.image_sizes]

    def _rpn(self, _module, _args, out) -> None:
        self.current["proposals"] = [int(p.shape[0]) for p in out[0]]

    def _box_head(self, _module, args, _out) -> None:
        self.current["sampled_rois"] = int(args[0].shape[0])


def _profile(step: Callable[[], None], probe: Probe, warmup: int, steps: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        probe.start()
        step()
    probe.steps.clear()
    times, faults, kernel = [], [], []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            probe.start()
            u0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            u1 = resource.getrusage(resource.RUSAGE_SELF)
            faults.append(u1.ru_minflt - u0.ru_minflt)
            kernel.append(u1.ru_stime - u0.ru_stime)
    ops: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "self_cpu_ms": 0.0})
    for event in prof.key_averages():
        ops[event.key]["calls"] += event.count / steps
        ops[event.key]["self_cpu_ms"] += event.self_cpu_time_total / 1000 / steps
    return {"threads": torch.get_num_threads(), "step_s": times, "minor_faults": faults, "kernel_s": kernel,
            "steps": probe.steps,
            "ops": {k: {"calls": round(v["calls"], 2), "self_cpu_ms": round(v["self_cpu_ms"], 2)}
                    for k, v in ops.items()}}


def _overrides(size: int, workers: int) -> list[str]:
    return [f"model.min_size={size}", f"model.max_size={size}", f"data.samples_per_gpu={BATCH}",
            f"data.workers_per_gpu={workers}", "runner.max_iters=1000", jobs.NO_CHECKPOINTS, "log_config.interval=5"]


def detcore_side(size: int, workers: int, warmup: int, steps: int, work: Path) -> dict[str, Any]:
    """Profile :meth:`Trainer._step` (loader + step + hooks) as ``detcore train`` runs it."""
    from detcore.config import load_config
    from detcore.engine.trainer import Trainer

    cfg = load_config(jobs.MOBILENET_CONFIG, _overrides(size, workers))
    trainer = Trainer(cfg, work, validate=False, seed=0)
    probe = Probe(trainer.model)
    trainer.train_loader.batch_sampler.set_epoch(0)
    data = iter(trainer.train_loader)
    for hook in trainer.hooks:
        hook.before_train()
    trainer.model.train()
    result = _profile(lambda: trainer._step(data), probe, warmup, steps)
    trainer.metrics.close(None, trainer.iter)
    return result


def plain_side(size: int, workers: int, warmup: int, steps: int) -> dict[str, Any]:
    """Profile one iteration of ``benchmarks.plain_train``'s loop (same model and loader code)."""
    import math

    import torch

    from benchmarks.plain_train import build_loader, build_model
    from detcore.config import load_config

    torch.manual_seed(0)
    cfg = load_config(jobs.MOBILENET_CONFIG, _overrides(size, workers))
    model = build_model("mobilenet", cfg["model"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg["optimizer"]["lr"], momentum=0.9, weight_decay=1e-4)
    clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    loader = iter(build_loader(cfg["data"]["train"], BATCH, workers, seed=0))
    probe = Probe(model)

    def step() -> None:
        images, targets = next(loader)
        loss_dict = model(list(images), list(targets))
        losses = sum(loss_dict.values())
        if not math.isfinite(losses.item()):
            raise SystemExit("profile_mobilenet: plain loop loss is not finite")
        optimizer.zero_grad()
        losses.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, **clip)
        optimizer.step()

    return _profile(step, probe, warmup, steps)


def _median(values: list) -> Any:
    return sorted(values)[len(values) // 2]


def _summary(side: dict[str, Any]) -> dict[str, Any]:
    steps = side["steps"]
    first = steps[0]
    return {"loader_image": first.get("loader_images", [{}])[0], "model_input": first.get("model_input"),
            "proposals_per_step": [sum(s.get("proposals", [])) for s in steps],
            "sampled_rois_per_step": [s.get("sampled_rois") for s in steps],
            "median_step_s": _median(side["step_s"]),
            "minor_page_faults_per_step": _median(side.get("minor_faults", [0])),
            "kernel_cpu_s_per_step": round(_median(side.get("kernel_s", [0])), 3),
            "malloc": side.get("malloc", ""),
            "total_op_calls": round(sum(o["calls"] for o in side["ops"].values()), 1)}


def markdown(result: dict[str, Any], top: int = 25) -> str:
    """The comparison as a Markdown report: summary, then the top operators by self CPU time."""
    d, p = result["detcore"], result["plain"]
    lines = [f"## {result['label']}", "", f"settings: {json.dumps(result['settings'])}", "",
             "| | detcore | plain loop |", "|---|---|---|"]
    sd, sp = _summary(d), _summary(p)
    for key in sd:
        lines.append(f"| {key} | {sd[key]} | {sp[key]} |")
    def op(side: dict, name: str, key: str) -> float:
        return side["ops"].get(name, {}).get(key, 0)

    every = sorted(set(d["ops"]) | set(p["ops"]))
    names = sorted(every, key=lambda k: -max(op(d, k, "self_cpu_ms"), op(p, k, "self_cpu_ms")))
    lines += ["", f"top {top} operators per step (calls, self CPU ms), sorted by the larger self time", "",
              "| operator | detcore calls | plain calls | detcore self ms | plain self ms |", "|---|---|---|---|---|"]
    for k in names[:top]:
        lines.append(f"| `{k}` | {op(d, k, 'calls')} | {op(p, k, 'calls')} | {op(d, k, 'self_cpu_ms')} | "
                     f"{op(p, k, 'self_cpu_ms')} |")
    differ = [k for k in every if op(d, k, "calls") != op(p, k, "calls")]
    lines += ["", "operators whose calls per step differ (detcore / plain; self CPU ms detcore / plain): "
              + (", ".join(f"`{k}` {op(d, k, 'calls')} / {op(p, k, 'calls')} "
                           f"({op(d, k, 'self_cpu_ms')} / {op(p, k, 'self_cpu_ms')})" for k in differ) or "none")]
    return "\n".join(lines) + "\n"


def profile_side(side: str, size: int, workers: int, warmup: int, steps: int, threads: int) -> dict[str, Any]:
    """One side, profiled in this process (``--side``)."""
    import torch

    torch.set_num_threads(threads)
    if side == "plain":
        return plain_side(size, workers, warmup, steps)
    from detcore.engine.malloc import keep_freed_memory

    with tempfile.TemporaryDirectory(prefix="profile_mobilenet_") as tmp:
        result = detcore_side(size, workers, warmup, steps, Path(tmp) / "run")
    result["malloc"] = keep_freed_memory()  # what the trainer decided (it runs once per process)
    return result


def run(size: int, workers: int, warmup: int, steps: int, threads: int, label: str,
        plain_first: bool = False) -> dict[str, Any]:
    """Each side in a fresh process of its own, as ``detcore train`` and the plain loop run in the
    throughput benchmark: what one process sets up (threads, allocator) cannot leak into the other."""
    sides = {}
    with tempfile.TemporaryDirectory(prefix="profile_mobilenet_") as tmp:
        for side in (("plain", "detcore") if plain_first else ("detcore", "plain")):
            out = Path(tmp) / f"{side}.json"
            cmd = [sys.executable, "-m", "benchmarks.profile_mobilenet", "--side", side, "--side-out", str(out),
                   "--size", str(size), "--workers", str(workers), "--warmup", str(warmup), "--steps", str(steps),
                   "--threads", str(threads)]
            subprocess.run(cmd, check=True, env=jobs.bench_env(threads))
            sides[side] = json.loads(out.read_text())
    return {"label": label, "settings": {"size": size, "batch": BATCH, "workers": workers, "warmup": warmup,
                                         "steps": steps, "threads": threads, "plain_first": plain_first,
                                         "processes": "one per side"},
            "detcore": sides["detcore"], "plain": sides["plain"]}


def main(argv: list[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_mobilenet", description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--plain-first", action="store_true", help="profile the plain loop first (order effects)")
    ap.add_argument("--label", default="profile")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--side", choices=["detcore", "plain"], help=argparse.SUPPRESS)  # one side, in this process
    ap.add_argument("--side-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        side = profile_side(args.side, args.size, args.workers, args.warmup, args.steps, args.threads)
        Path(args.side_out).write_text(json.dumps(side))
        return 0
    result = run(args.size, args.workers, args.warmup, args.steps, args.threads, args.label,
                 args.plain_first)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"profile_mobilenet_{args.label}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
