"""High-level inference: ``init_detector``, ``inference_detector``, its async variant, ``show_result``.

Images may be file paths, HxWx3 uint8 RGB arrays, or 3xHxW tensors (uint8, or float in
0..1). Results are plain per-image dicts with numpy arrays, in the input image's pixels.
"""
from __future__ import annotations

import asyncio
import os
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from detcore.apis.visualize import DRAW_MIN_SIDE, draw_result, to_uint8
from detcore.checkpoint import load_checkpoint, load_weights
from detcore.config import config_from_text, import_custom_modules, load_config
from detcore.data.image_file import read_rgb
from detcore.errors import CheckpointError, DataError
from detcore.models import build_detector

ImageLike = str | os.PathLike | np.ndarray | torch.Tensor


def init_detector(config: str | os.PathLike | dict | None, checkpoint: str | os.PathLike | None = None,
                  device: str = "cpu", cfg_options: Sequence[str] = ()) -> nn.Module:
    """Build a detector in eval mode; the config may be omitted and read from the checkpoint's meta.

    ``checkpoint``: a detcore checkpoint (a work dir's ``latest.pth``), a plain state dict file, or a
    torchvision COCO detector by name (``torchvision://fasterrcnn_resnet50_fpn``, with
    ``configs/torchvision/fasterrcnn_resnet50_fpn.yaml``, which is also the default config for it).
    ``model.backbone.weights`` is not read: the checkpoint holds the whole network (MMDetection's
    ``init_detector`` does the same). The model gets ``cfg`` and ``class_names`` attributes (names by
    label: label k is ``class_names[k - 1]``; COCO's 90 slots for ``label_ids: coco``) and a
    ``show_result(img, result, score_thr=0.3, out_file=None)`` method (MMDetection's; :func:`show_result`
    with the model's class names). ``device``: cpu, cuda or cuda:N; a CUDA device that is not there
    is a one-line ConfigError.
    """
    from detcore.engine.dist import resolve_device
    from detcore.evaluation.label_ids import check_checkpoint_labels, label_ids_of, label_names

    target = resolve_device(device, 0)
    ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
    meta = (ckpt or {}).get("meta", {})
    if config is None and meta.get("torchvision"):
        from detcore.pretrained.names import detector_config

        config = detector_config(meta["torchvision"])
        if not config.is_file():
            raise CheckpointError(f"init_detector: {checkpoint} needs its config, {config.name} from detlaunch's "
                                  f"configs/torchvision/ (not found at {config}); pass the config's path")
    if config is None:
        if ckpt is None or not meta.get("config"):
            raise CheckpointError("init_detector needs a config, or a checkpoint whose meta holds one")
        cfg = config_from_text(meta["config"])
        import_custom_modules(cfg)
    elif isinstance(config, dict):
        cfg = dict(config)
    else:
        cfg = load_config(config, cfg_options)
    label_ids = label_ids_of(cfg)
    check_checkpoint_labels(label_ids, meta, checkpoint)
    model = build_detector(cfg["model"], backbone_weights=False)
    if ckpt is not None:
        load_weights(model, ckpt)
    classes = label_names(label_ids, meta.get("classes") or cfg.get("classes"))
    model.cfg = cfg
    model.class_names = list(classes) if classes else [str(i + 1) for i in range(cfg["model"]["num_classes"])]
    model.show_result = _ShowResult(model.class_names)
    return model.to(target).eval()


class _ShowResult:
    """``model.show_result(img, result, score_thr=0.3, out_file=None)`` as on MMDetection's detectors.

    MMDetection's drawing-style arguments (colours, thickness, font size, window name, wait time) are
    accepted and not used; ``show=True`` is refused, there is no display here: pass ``out_file``.
    ``min_side`` as in :func:`show_result` (0 draws at the image's own size, as MMDetection does).
    """

    STYLE = frozenset({"bbox_color", "text_color", "mask_color", "thickness", "font_size", "win_name", "wait_time"})

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)

    def __call__(self, img: ImageLike, result: dict, score_thr: float = 0.3, *,
                 out_file: str | os.PathLike | None = None, show: bool = False, min_side: int = DRAW_MIN_SIDE,
                 **style: Any) -> np.ndarray:
        unknown = sorted(set(style) - self.STYLE)
        if unknown:
            raise TypeError(f"show_result() got unexpected keyword arguments {unknown}")
        if show:
            raise DataError("show_result(show=True): there is no display here; pass out_file=PATH to write the "
                            "drawing (the array is also returned)")
        return show_result(img, result, score_thr=score_thr, out_file=out_file, class_names=self.class_names,
                           min_side=min_side)


def load_image(img: ImageLike) -> torch.Tensor:
    """A float 3xHxW tensor in 0..1 from a path, an HxWx3 uint8 array or a tensor."""
    if isinstance(img, (str, os.PathLike)):
        arr = np.asarray(read_rgb(img))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    if isinstance(img, np.ndarray):
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        if img.ndim != 3 or img.shape[2] not in (3, 4):
            raise DataError(f"image array must be HxWx3 (RGB), got shape {img.shape}")
        t = torch.from_numpy(np.array(img[..., :3])).permute(2, 0, 1)
        return t.float() / 255 if t.dtype == torch.uint8 else t.float()
    if isinstance(img, torch.Tensor):
        if img.dim() != 3 or img.shape[0] != 3:
            raise DataError(f"image tensor must be 3xHxW, got shape {tuple(img.shape)}")
        return img.float() / 255 if img.dtype == torch.uint8 else img.float()
    raise DataError(f"unsupported image type {type(img).__name__}; give a path, an array or a tensor")


def _to_result(pred: dict, class_names: Sequence[str]) -> dict:
    labels = pred["labels"].cpu().numpy()
    result = {"boxes": pred["boxes"].cpu().numpy(), "scores": pred["scores"].cpu().numpy(), "labels": labels,
              "class_names": [class_names[int(lbl) - 1] if 0 < int(lbl) <= len(class_names) else str(int(lbl))
                              for lbl in labels]}
    if "masks" in pred:
        result["masks"] = (pred["masks"][:, 0] > 0.5).cpu().numpy()
    return result


@torch.no_grad()
def inference_detector(model: nn.Module, imgs: ImageLike | Sequence[ImageLike]) -> dict | list[dict]:
    """Detect objects; one result dict for one image, a list for a list (run as one batch)."""
    single = not isinstance(imgs, (list, tuple))
    batch = [load_image(i) for i in ([imgs] if single else imgs)]
    device = next(model.parameters()).device
    preds = model([b.to(device) for b in batch])
    results = [_to_result(p, getattr(model, "class_names", [])) for p in preds]
    return results[0] if single else results


_SEMAPHORES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = \
    weakref.WeakKeyDictionary()


async def async_inference_detector(model: nn.Module, imgs: ImageLike | Sequence[ImageLike],
                                   max_in_flight: int = 4) -> dict | list[dict]:
    """``inference_detector`` for asyncio callers: runs in a worker thread, at most
    ``max_in_flight`` requests per model and event loop at once, so the loop stays free."""
    loop = asyncio.get_running_loop()
    semaphore = _SEMAPHORES.setdefault(loop, {}).setdefault(id(model), asyncio.Semaphore(max_in_flight))
    async with semaphore:
        return await loop.run_in_executor(None, inference_detector, model, imgs)


def show_result(img: ImageLike, result: dict, score_thr: float = 0.3, out_file: str | os.PathLike | None = None,
                class_names: Sequence[str] | None = None, min_side: int = DRAW_MIN_SIDE) -> np.ndarray:
    """Draw boxes, masks and labels; returns the drawing as HxWx3 uint8 RGB and writes ``out_file`` when given.

    An image whose short side is under ``min_side`` pixels is drawn scaled up to it (a 128x128
    image becomes 512x512), so labels are readable; ``min_side=0`` draws at the image's own size.
    ``result`` stays in the image's pixels either way.
    """
    image = to_uint8(load_image(img))
    names = class_names or result.get("class_names")
    if names is not None and class_names is None:
        # result["class_names"] is per detection: map labels to names for drawing
        mapping = {int(lbl): n for lbl, n in zip(result["labels"], names)}
        names = [mapping.get(i, str(i)) for i in range(1, max(mapping, default=0) + 1)]
    pred: dict[str, Any] = {k: torch.as_tensor(np.asarray(result[k])) for k in ("boxes", "scores", "labels")}
    if "masks" in result:
        pred["masks"] = torch.as_tensor(np.asarray(result["masks"], dtype=np.float32))
    canvas = draw_result(image, pred, names, score_thr, min_side=min_side).permute(1, 2, 0).numpy()
    if out_file is not None:
        out = Path(out_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas).save(out)
    return canvas
