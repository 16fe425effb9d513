"""10. Real-size data: detcore's train loader against torchvision's detection reference pipeline on
generated JPEGs (goal: ratio >= 1.0), and the loader workers one GPU needs.

Two image sets are generated once into ``$DETCORE_CACHE`` (``bench-jpeg<h>x<w>-n<N>-seed0``, 200
images each in the full run; not committed): 800x1333, the size detectors train at, and 640x480,
a typical COCO photo. Each image is a noisy colour gradient with 2-14 filled polygons of 5-12
vertices, saved as JPEG quality 90 (about 400 KB at 800x1333), with a COCO json of their boxes,
polygons and areas (10% of the objects marked ``iscrowd``, which both sides leave out).

Both sides run the same way: a ``DataLoader`` with one worker process and batches of 2 (the R50-FPN
batch per GPU) over the same images in the same order, alternating sides, after a warm-up pass
(files in the page cache on both sides):

* ``detcore``: the dataset and collate ``detcore.engine.setup.build_split_loader`` builds for a
  config with the COCO instance base's training split (``configs/_base_/datasets/coco_instance.yaml``:
  ``Resize [1333, 800]``, ``RandomFlip 0.5``, masks): decode, resize, flip, float image in 0..1
  (the model normalises), masks, boxes clipped and checked, the trainer's per-sample seeding;
* ``plain``: torchvision's ``references/detection`` training transforms as its ``train.py`` builds
  them for ``--data-augmentation hflip``: ``CocoDetection`` (PIL decode) +
  ``ConvertCocoPolysToMask`` + ``RandomHorizontalFlip(0.5)`` + ``PILToTensor`` +
  ``ToDtype(float, scale=True)``, written out below after ``coco_utils.py`` and ``transforms.py``,
  with its ``collate_fn``. It resizes nothing: torchvision's models resize on the GPU.

The figure is images per CPU second of the worker process (from the first batch on: decoding,
transforms, collate and the copy into shared memory), what one worker delivers on a core of its
own; a wall-clock figure is shown beside it. ``workers per GPU`` is how many workers keep up with
one GPU at the published R50-FPN speed, 2 images per 0.21 s iteration (detectron2/MMDetection on a
V100), i.e. 9.5 images/s, with :data:`HEADROOM` for heavier images and a busier node, from the
slower of the two sets.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO_ROOT, Context, Goal, Result, Row, compared, log, measured

TITLE = "real-size data: detcore's train loader vs torchvision's reference pipeline on 800x1333 JPEGs"
GOAL = Goal("ratio", ">=", 1.0)
H, W = 800, 1333  # the size detection models train at (COCO photos are resized up to it)
COCO_SIZE = (480, 640)  # a typical COCO photo, which detcore's COCO pipeline resizes in the worker
PUBLISHED_S_PER_ITER, IMAGES_PER_ITER = 0.21, 2  # R50-FPN 1x, 2 images per GPU (detectron2 / MMDetection)
# Workers feed at least twice the GPU's rate: a GPU node's cores also run the training process and
# the other ranks' workers, and a real dataset's JPEGs vary in size; twice covers a worker at half
# the measured rate.
HEADROOM = 2.0
CATEGORIES = [{"id": i + 1, "name": f"class{i + 1}", "supercategory": "object"} for i in range(8)]


# ---- the images ------------------------------------------------------------------------------

def ensure_images(images: int, seed: int = 0, root: Path | None = None, size: tuple[int, int] = (H, W)) -> Path:
    """``<cache>/bench-jpeg<h>x<w>-n<images>-seed<seed>`` with ``img/*.jpg`` and ``ann.json``,
    generated once (under a file lock, then an atomic rename)."""
    from filelock import FileLock

    from detcore.data.shapes import default_cache_root

    cache = root or default_cache_root()
    target = cache / f"bench-jpeg{size[0]}x{size[1]}-n{images}-seed{seed}"
    if (target / "ann.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f".{target.name}.lock")):
        if not (target / "ann.json").is_file():
            tmp = cache / f".{target.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            generate(tmp, images, seed, size)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    return target


def generate(root: Path, images: int, seed: int = 0, size: tuple[int, int] = (H, W)) -> Path:
    """Write ``images`` JPEGs of ``size`` (h, w) with polygons, and their COCO json (same bytes for the same seed)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": CATEGORIES}
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(images):
        tint = rng.uniform(0, 80, 3)
        base = np.stack([xx / w * 170 + tint[0], yy / h * 170 + tint[1], (xx + yy) / (w + h) * 170 + tint[2]], -1)
        img = Image.fromarray(np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 15))):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), np.exp(rng.uniform(np.log(10), np.log(300)) + np.log(h / H))
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 13))))
            radii = r * rng.uniform(0.5, 1.0, len(angles))
            xs = np.clip(cx + radii * np.cos(angles), 0, w - 1)
            ys = np.clip(cy + radii * np.sin(angles), 0, h - 1)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            poly = [round(float(v), 2) for p in zip(xs, ys) for v in p]
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 9)),
                "iscrowd": int(rng.uniform() < 0.1), "segmentation": [poly],
                "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                "area": round(float((x1 - x0) * (y1 - y0) * 0.7), 2)})
        img.save(root / "img" / f"{i:06d}.jpg", quality=90)
        coco["images"].append({"id": i + 1, "file_name": f"{i:06d}.jpg", "height": h, "width": w})
    (root / "ann.json").write_text(json.dumps(coco))
    return root


# ---- torchvision's references/detection, written out ----------------------------------------

class ConvertCocoPolysToMask:
    """``references/detection/coco_utils.py``'s ``ConvertCocoPolysToMask``: COCO annotations of one
    image -> boxes (xyxy, clipped), labels, masks (polygons decoded by pycocotools), without crowds
    and empty boxes."""

    def __call__(self, image, target):
        import torch
        from pycocotools import mask as coco_mask

        w, h = image.size
        anno = [obj for obj in target["annotations"] if obj.get("iscrowd", 0) == 0]
        boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=w)
        boxes[:, 1::2].clamp_(min=0, max=h)
        classes = torch.tensor([obj["category_id"] for obj in anno], dtype=torch.int64)
        masks = []
        for obj in anno:
            rles = coco_mask.frPyObjects(obj["segmentation"], h, w)
            mask = torch.as_tensor(coco_mask.decode(rles), dtype=torch.uint8)
            masks.append(mask.any(dim=2) if mask.ndim == 3 else mask)
        masks = torch.stack(masks) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        return image, {"boxes": boxes[keep], "labels": classes[keep], "masks": masks[keep],
                       "image_id": target["image_id"]}


class ReferenceTrainTransforms:
    """``references/detection/presets.py`` ``DetectionPresetTrain(data_augmentation="hflip")`` with
    ``transforms.py``'s ``RandomHorizontalFlip`` (on the PIL image), ``PILToTensor`` and ``ToDtype``."""

    def __init__(self, flip: float = 0.5) -> None:
        self.flip = flip

    def __call__(self, image, target):
        import torch
        from torchvision.transforms import functional as F

        image, target = ConvertCocoPolysToMask()(image, target)
        if torch.rand(1) < self.flip:
            image = F.hflip(image)
            width = F.get_image_size(image)[0]
            target["boxes"][:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            target["masks"] = target["masks"].flip(-1)
        image = F.pil_to_tensor(image)
        return F.convert_image_dtype(image, torch.float), target


def plain_loader(root: Path, order: list[int], flip: float = 0.5):
    """``(dataset, collate, keys)``: the reference pipeline over ``order`` (dataset indices)."""
    import contextlib
    import io

    from torchvision.datasets import CocoDetection

    class Reference(CocoDetection):  # references/detection/coco_utils.py get_coco: CocoDetection + transforms
        def __getitem__(self, index: int):
            image, anns = super().__getitem__(index)
            return ReferenceTrainTransforms(flip)(image, {"image_id": self.ids[index], "annotations": anns})

    with contextlib.redirect_stdout(io.StringIO()):
        dataset = Reference(str(root / "img"), str(root / "ann.json"))
    return dataset, _collate, order


def _collate(batch):
    return tuple(zip(*batch))  # references/detection/utils.py collate_fn


def detcore_config(root: Path, flip: float = 0.5) -> dict:
    """A config with the COCO instance base's training split (pipeline, masks), pointed at ``root``."""
    from detcore.config import load_config

    cfg = load_config(REPO_ROOT / "configs" / "_base_" / "datasets" / "coco_instance.yaml")
    train = {**cfg["data"]["train"], "ann_file": str(root / "ann.json"), "img_prefix": str(root / "img")}
    if flip != 0.5:
        train["pipeline"] = [{**t, "prob": flip} if t["type"] == "RandomFlip" else t for t in train["pipeline"]]
    return {**cfg, "data": {**cfg["data"], "train": train, "workers_per_gpu": 0, "samples_per_gpu": 1}}


def detcore_loader(root: Path, order: list[int], flip: float = 0.5):
    """``(dataset, collate, keys)``: the trainer's dataset (``SeededSamples`` over ``CocoDataset``) and
    collate, over ``order``."""
    import torch

    from detcore.engine.dist import DistInfo
    from detcore.engine.setup import build_split_loader

    loader = build_split_loader(detcore_config(root, flip), "train", DistInfo(0, 1, 0, torch.device("cpu")), seed=0,
                                train=True)
    return loader.dataset, loader.collate_fn, [(0, i) for i in order]


def kept_images(root: Path) -> list[int]:
    """Dataset indices of the images with a non-crowd object (detcore's training split and the
    reference's ``_coco_remove_images_without_annotations`` keep the same ones)."""
    ann = json.loads((root / "ann.json").read_text())
    with_objects = {a["image_id"] for a in ann["annotations"] if not a["iscrowd"]}
    return [k for k, img in enumerate(ann["images"]) if img["id"] in with_objects]


def rate(parts: tuple, batch: int = 2) -> tuple[float, float]:
    """Images per second of one loader worker over ``parts`` (``(dataset, collate, keys)``), batches
    of ``batch``: per CPU second of the worker process (decoding, transforms, collate and putting the
    batch into shared memory: what one worker on a core of its own delivers, steady on a shared
    machine) and per wall second of the main process, both from the first batch on (worker start-up
    left out)."""
    import psutil
    import torch

    dataset, collate, keys = parts
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=keys, num_workers=1,
                                         collate_fn=collate, persistent_workers=True)
    it = iter(loader)
    images, _ = next(it)
    worker = psutil.Process().children()[-1]
    c0, t0, n = sum(worker.cpu_times()[:2]), time.perf_counter(), 0
    for images, _ in it:
        n += len(images)
    wall = time.perf_counter() - t0
    cpu = sum(worker.cpu_times()[:2]) - c0
    del it, loader  # ends the worker
    return n / cpu, n / wall


def same_samples(root: Path, count: int) -> dict:
    """Without flips, detcore's samples against the reference's over the first ``count`` images: the
    largest pixel difference (x255), and whether labels (category ids) and masks are equal and boxes
    within float32 rounding (detcore adds width to x in float64, the reference in float32)."""
    import torch

    order = kept_images(root)[:count]  # the reference's indices; detcore's split holds only these, in order
    ours, theirs = detcore_loader(root, list(range(count)), flip=0.0)[0], plain_loader(root, order, flip=0.0)[0]
    cat_ids = ours.dataset.cat_ids
    pixels, same = 0.0, True
    for j, k in enumerate(order):
        (img, t), (ref, r) = ours[(0, j)], theirs[k]
        pixels = max(pixels, float((img - ref).abs().max()) * 255)
        labels = torch.tensor([cat_ids[int(v) - 1] for v in t["labels"]], dtype=torch.int64)
        same &= (torch.allclose(t["boxes"].as_subclass(torch.Tensor), r["boxes"], rtol=0, atol=1e-3)
                 and torch.equal(labels, r["labels"])
                 and torch.equal(t["masks"].as_subclass(torch.Tensor), r["masks"]))
    return {"max_pixel_difference": pixels, "boxes_labels_masks_equal": bool(same), "images": count}


def measure(root: Path, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Per-worker rates of both sides over ``root``'s kept images, alternating, after a warm-up pass."""
    order = kept_images(root)
    ours = list(range(len(order)))  # detcore's training split holds only the kept images, in the same order
    rate(detcore_loader(root, ours[:6]))  # imports, page cache
    rate(plain_loader(root, order[:6]))
    got: dict[str, list[tuple[float, float]]] = {"detcore": [], "plain": []}
    for r in range(repeats):
        for side in (("detcore", "plain") if r % 2 == 0 else ("plain", "detcore")):
            got[side].append(rate(detcore_loader(root, ours) if side == "detcore" else plain_loader(root, order)))
    return got


def workers_needed(per_worker: float) -> int:
    """Loader workers for one GPU at the published R50-FPN speed with :data:`HEADROOM`."""
    return math.ceil(HEADROOM * IMAGES_PER_ITER / PUBLISHED_S_PER_ITER / per_worker)


def run(ctx: Context) -> Result:
    import torch

    from detcore.config import load_config

    images, repeats = ctx.pick(24, 200), ctx.pick(2, 4)
    sets = {"800x1333": (H, W), "640x480": COCO_SIZE}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the main process only receives batches
    got, roots, check = {}, {}, {}
    try:
        for name, size in sets.items():
            log(f"real_data: {images} generated {name} JPEGs (cached), {repeats} passes per side")
            roots[name] = ensure_images(images, size=size)
            got[name] = measure(roots[name], repeats)
        check = same_samples(roots["800x1333"], min(6, images))
    finally:
        torch.set_num_threads(threads)
    need = IMAGES_PER_ITER / PUBLISHED_S_PER_ITER
    cpu = {name: ([c for c, _ in g["detcore"]], [c for c, _ in g["plain"]]) for name, g in got.items()}
    slowest = min(min(ours) for ours, _ in cpu.values())
    default = load_config(REPO_ROOT / "configs" / "_base_" / "datasets" / "coco_instance.yaml")["data"]["workers_per_gpu"]
    ours, plain = cpu["800x1333"]
    small, small_plain = cpu["640x480"]
    rows: list[Row] = [
        compared(f"detcore train loader, {W}x{H} JPEG + masks, per worker", ours, plain, "img/s", GOAL,
                 note="images per CPU second of one loader worker: decode, resize, flip, float 0..1, masks, box "
                      "checks, into shared memory; ratio vs the reference"),
        measured("torchvision references/detection pipeline, per worker", plain, "img/s",
                 note="CocoDetection + ConvertCocoPolysToMask + RandomHorizontalFlip + PILToTensor + ToDtype"),
        compared("  the same, per wall second", [w for _, w in got["800x1333"]["detcore"]],
                 [w for _, w in got["800x1333"]["plain"]], "img/s", note="wall clock: includes waiting for the shared cores"),
        compared("detcore train loader, 640x480 JPEG resized to 800x1067 in the worker", small, small_plain, "img/s",
                 note="COCO-size photos: detcore's COCO pipeline resizes in the worker (MMDetection's Resize), the "
                      "reference in the model (on the GPU); no goal"),
        Row("loader workers to feed one GPU at 0.21 s/iter, 2 img/iter", float(workers_needed(slowest)), "workers",
            note=f"ceil({HEADROOM} x {need:.2f} img/s / slowest detcore worker {slowest:.1f} img/s); "
                 f"COCO base configs' workers_per_gpu: {default}"),
        Row("same samples as the reference without flips", 1.0 if check["boxes_labels_masks_equal"] else 0.0,
            met=check["boxes_labels_masks_equal"] and check["max_pixel_difference"] <= 1.0,
            note=f"boxes, labels, masks equal: {check['boxes_labels_masks_equal']}; largest pixel difference "
                 f"{check['max_pixel_difference']:.3g}/255 over {check['images']} images"),
    ]
    settings = {"images": images, "repeats": repeats, "sets": {k: list(v) for k, v in sets.items()},
                "batch": 2, "loader_workers": 1, "published_s_per_iter": PUBLISHED_S_PER_ITER,
                "images_per_iter": IMAGES_PER_ITER, "headroom": HEADROOM, "cache": {k: str(v) for k, v in roots.items()}}
    return Result(rows, settings, {"same_samples": check, "workers_needed": workers_needed(slowest),
                                   "gpu_images_per_s": need, "rates_cpu_wall": got})
