"""R50-FPN Faster and Mask R-CNN training on one GPU: detcore against a plain torchvision loop.

Part of ``python -m benchmarks --gpu`` (``gpu_check``'s ``R50-FPN`` step). For each model
(Faster R-CNN, Mask R-CNN), precision (fp32, AMP) and side it trains on generated images
(batch 2 of 800x1333, boxes and box-shaped masks, 80 classes) for ``warmup`` + ``iters``
iterations and reports s/iter, images/s and the peak of ``torch.cuda.max_memory_allocated``
(reset per case), then inference images/s:

* detcore: the model from ``configs/{faster,mask}_rcnn/*_r50_fpn_1x_coco.yaml`` (``build_detector``)
  stepped the way ``detcore.engine.trainer.Trainer._step`` does it: ``torch.autocast`` +
  ``GradScaler``, ``zero_grad(set_to_none=True)``, the loss terms read once per step;
* plain: torchvision's own construction (``resnet50`` with ``FrozenBatchNorm2d``, 3 trainable
  stages, ``_resnet_fpn_extractor``, ``FasterRCNN``/``MaskRCNN``: what ``fasterrcnn_resnet50_fpn``
  builds with pretrained weights, without downloading them) in torchvision's reference loop
  (``references/detection/engine.py``: autocast + GradScaler, ``losses.item()`` per step).

Both sides see the same pre-generated batches, copied to the GPU each step as a loader's
would be. The published figures (detectron2's and MMDetection's model zoos: R50-FPN 1x, 2
images per GPU on V100: about 0.21 s/iter and 3.0-4.0 GB) are printed beside, as a reference
from other hardware and real COCO images, not as a goal.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from benchmarks.harness import REPO_ROOT, Row, log

CONFIGS = {"faster": REPO_ROOT / "configs" / "faster_rcnn" / "faster_rcnn_r50_fpn_1x_coco.yaml",
           "mask": REPO_ROOT / "configs" / "mask_rcnn" / "mask_rcnn_r50_fpn_1x_coco.yaml"}
LABELS = {"faster": "Faster R-CNN R50-FPN", "mask": "Mask R-CNN R50-FPN"}
PUBLISHED = "published (V100, COCO; other hardware): 0.21 s/iter, 3.0-4.0 GB/GPU at 2 img/GPU"
BATCH = 2


@dataclass(frozen=True)
class Case:
    model: str  # faster | mask
    side: str   # detcore | plain
    amp: bool

    @property
    def label(self) -> str:
        return f"{LABELS[self.model]}, {self.side}, {'AMP' if self.amp else 'fp32'}"


def cases() -> list[Case]:
    """Every case, the two sides of one model and precision next to each other."""
    return [Case(m, side, amp) for m in ("faster", "mask") for amp in (False, True) for side in ("detcore", "plain")]


def build_model(model: str, side: str, size: tuple[int, int]):
    """The detector of ``side`` for ``model`` (80 classes, inputs resized to ``size``)."""
    h, w = size
    if side == "detcore":
        from detcore.config import load_config
        from detcore.models import build_detector

        # random weights as on the plain side (the shipped configs start from ImageNet weights, not read here)
        cfg = load_config(CONFIGS[model], [f"model.min_size={min(h, w)}", f"model.max_size={max(h, w)}",
                                           "model.backbone.weights=null"])
        return build_detector(cfg["model"])
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    cls = FasterRCNN if model == "faster" else MaskRCNN
    return cls(backbone, num_classes=81, min_size=min(h, w), max_size=max(h, w))


def same_parameters(model: str, size: tuple[int, int] = (64, 96)) -> bool:
    """True when both sides' models have the same trainable parameter names and shapes."""
    shapes = [{k: tuple(p.shape) for k, p in build_model(model, side, size).named_parameters() if p.requires_grad}
              for side in ("detcore", "plain")]
    return shapes[0] == shapes[1]


def make_batches(size: tuple[int, int], masks: bool, count: int = 4, seed: int = 0) -> list[tuple[list, list]]:
    """``count`` CPU batches of ``BATCH`` random images with 8 random boxes (and box masks) each."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    for _ in range(count):
        images, targets = [], []
        for _ in range(BATCH):
            images.append(torch.rand(3, h, w, generator=gen))
            xy = torch.rand(8, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
            wh = 16 + torch.rand(8, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3])
            boxes = torch.cat([xy, xy + wh], 1)
            target = {"boxes": boxes, "labels": torch.randint(1, 81, (8,), generator=gen)}
            if masks:
                m = torch.zeros(8, h, w, dtype=torch.uint8)
                for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                    m[i, y0:y1, x0:x1] = 1
                target["masks"] = m
            targets.append(target)
        out.append((images, targets))
    return out


def _step_fn(case: Case, model, dev, batches: list) -> Callable[[int], float]:
    """One training step for iteration ``i`` on ``case.side``'s terms; returns the loss."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=case.amp and dev.type == "cuda")
    amp = scaler.is_enabled()

    def to_dev(i: int):
        images, targets = batches[i % len(batches)]
        return ([img.to(dev, non_blocking=True) for img in images],
                [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets])

    def detcore_step(i: int) -> float:  # Trainer._step
        images, targets = to_dev(i)
        with torch.autocast(dev.type, enabled=amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        values = torch.stack([v.detach().float() for v in losses.values()])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        total = float(values.sum().tolist())  # the trainer's one host sync per step
        scaler.step(opt)
        scaler.update()
        return total

    def plain_step(i: int) -> float:  # torchvision references/detection/engine.py
        images, targets = to_dev(i)
        with torch.autocast(dev.type, enabled=amp):
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
        value = losses.item()
        opt.zero_grad()
        scaler.scale(losses).backward()
        scaler.step(opt)
        scaler.update()
        return value

    return detcore_step if case.side == "detcore" else plain_step


def measure(case: Case, device: str, size: tuple[int, int], warmup: int, iters: int) -> dict[str, Any]:
    """Train ``case`` for ``warmup`` + ``iters`` steps: s/iter, img/s, peak memory, inference img/s, last loss."""
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    torch.manual_seed(0)
    batches = make_batches(size, masks=case.model == "mask")
    if cuda:
        batches = [([i.pin_memory() for i in imgs], [{k: v.pin_memory() for k, v in t.items()} for t in tgts])
                   for imgs, tgts in batches]
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    model = build_model(case.model, case.side, size).to(dev).train()
    step = _step_fn(case, model, dev, batches)
    loss = float("nan")
    for i in range(warmup):
        loss = step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(warmup, warmup + iters):
        loss = step(i)
    sync()
    s_iter = (time.perf_counter() - t0) / iters
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if cuda else float("nan")
    model.eval()
    images = [img.to(dev) for img in batches[0][0]]
    with torch.no_grad(), torch.autocast(dev.type, enabled=case.amp and cuda):
        model(images)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            model(images)
        sync()
    infer = BATCH * iters / (time.perf_counter() - t0)
    del model, step
    if cuda:
        torch.cuda.empty_cache()
    return {"s_iter": s_iter, "img_s": BATCH / s_iter, "peak_gb": peak, "infer_img_s": infer, "loss": loss}


def run_all(device: str, size: tuple[int, int], warmup: int, iters: int, budget_s: float,
            only: list[Case] | None = None) -> tuple[list[Row], list[dict[str, Any]]]:
    """Every case within ``budget_s`` seconds (cases past it are skipped, said in their row)."""
    rows: list[Row] = []
    figures: list[dict[str, Any]] = []
    start = time.monotonic()
    plain: dict[tuple[str, bool], float] = {}
    for case in only or cases():
        name = f"R50-FPN train {size[0]}x{size[1]}, batch {BATCH}: {case.label}"
        if time.monotonic() - start > budget_s:
            rows.append(Row(name, None, note=f"skipped: the {budget_s:.0f} s budget of this step was spent"))
            continue
        log(f"gpu train: {case.label}")
        try:
            fig = measure(case, device, size, warmup, iters)
        except Exception as exc:  # one failing case (e.g. out of memory) must not hide the others
            rows.append(Row(name, None, note=f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                            met=False))
            continue
        ok = math.isfinite(fig["loss"])
        figures.append({**vars(case), **fig})
        if case.side == "plain":
            plain[(case.model, case.amp)] = fig["img_s"]
        mem = f"peak {fig['peak_gb']:.2f} GB allocated" if math.isfinite(fig["peak_gb"]) else "no GPU memory figure"
        rows.append(Row(name, fig["img_s"], "img/s", met=ok,
                        note=f"{fig['s_iter']:.3f} s/iter; {mem}; inference {fig['infer_img_s']:.1f} img/s; "
                             f"{PUBLISHED}" + ("" if ok else f"; NON-FINITE LOSS {fig['loss']}")))
    for row, fig in zip([r for r in rows if r.value is not None], figures):
        base = plain.get((fig["model"], fig["amp"]))
        if fig["side"] == "detcore" and base:
            row.ratio = fig["img_s"] / base
    return rows, figures


def table(figures: list[dict[str, Any]]) -> str:
    """A Markdown table of the figures with the published reference column."""
    lines = ["| model | side | precision | s/iter | img/s | peak memory (GB) | inference img/s | "
             "published s/iter, memory (V100, other hardware) |", "|---|---|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {LABELS[f['model']]} | {f['side']} | {'AMP' if f['amp'] else 'fp32'} | {f['s_iter']:.3f} | "
                     f"{f['img_s']:.2f} | {f['peak_gb']:.2f} | {f['infer_img_s']:.1f} | 0.21 s/iter, 3.0-4.0 GB |")
    return "\n".join(lines)
