"""MMDetection's checkpoint strings: backbone ``init_cfg``/``pretrained`` and ``load_from``/``resume``.

``torchvision://NAME`` (torchvision's ImageNet weights, MMDetection's meaning) and local paths
carry over as written: ``model.backbone.weights`` and ``load_from`` take them. OpenMMLab's
model-zoo names (``open-mmlab://``, ``mmcls://``, ...) and download URLs do not: the backbone
starts without weights and the summary says why and what to set instead.
"""
from __future__ import annotations

from typing import Any

from detcore.mmdet_import.source import Source

TORCHVISION = "torchvision://"
ZOO_SCHEMES = ("open-mmlab://", "openmmlab://", "mmcls://", "mmpretrain://", "modelzoo://")


def _scheme_problem(checkpoint: str, key: str) -> str | None:
    """Why the checkpoint string cannot be used as it is (None: it can)."""
    if checkpoint.startswith(ZOO_SCHEMES):
        return (f"an OpenMMLab model-zoo name, which detcore does not resolve; {key} takes torchvision://NAME "
                f"(torchvision's ImageNet weights, e.g. torchvision://resnet50) or a local file")
    if checkpoint.startswith(("http://", "https://")):
        return (f"a URL of an MMDetection checkpoint, whose parameter names are another network's and do not load "
                f"into detcore's torchvision models; set {key} to a torchvision name from `detcore model list` "
                f"(e.g. {'torchvision://resnet50' if 'backbone' in key else 'torchvision://maskrcnn_resnet50_fpn'}) "
                f"or a detcore checkpoint")
    return None


def backbone_weights(src: Source) -> str | None:
    """``model.backbone.weights`` from the backbone's ``init_cfg`` (2.x and 3.x) or the older
    ``model.pretrained``: the checkpoint string when detcore can load it, else None (noted)."""
    key = "model.backbone.weights"
    for path in ("model.backbone.init_cfg", "model.pretrained", "model.backbone.pretrained"):
        if not src.has(path):
            continue
        value = src.lookup(path)
        if value is None:
            src.use(path)
            continue
        if isinstance(value, str):
            checkpoint, where = value, path
        elif isinstance(value, dict) and value.get("type") in ("Pretrained", "PretrainedInit") \
                and isinstance(value.get("checkpoint"), str):
            if value.get("prefix"):
                src.note(path, "loads one part (prefix) of another model's checkpoint; use load_from for a whole "
                               "detector, or set model.backbone.weights to a backbone state dict")
                return None
            checkpoint, where = value["checkpoint"], f"{path}.checkpoint"
            src.use(f"{path}.type", f"{path}.map_location")
        else:
            continue  # another initialiser (Kaiming, ...): left for the summary as not mapped
        problem = _scheme_problem(checkpoint, key)
        if problem:
            src.note(where, problem)
            return None
        src.get(where)
        return checkpoint
    return None


def map_load_from(src: Source, out: dict[str, Any]) -> None:
    """``load_from`` (kept as written; a URL or model-zoo name is listed as not carried over) and
    3.x's ``resume`` (``resume=True`` with a ``load_from`` resumes from that file)."""
    if src.has("load_from"):
        value = src.get("load_from")
        out["load_from"] = value
        if isinstance(value, str) and not value.startswith(TORCHVISION):
            problem = _scheme_problem(value, "load_from")
            if problem:
                src.note("load_from", problem)
    if src.use_if("resume", False, None):
        return
    if src.lookup("resume") is True:
        if isinstance(out.get("load_from"), str):
            out["resume_from"] = out.pop("load_from")
            src.use("resume")
        else:
            src.note("resume", "resumes from the work dir's latest checkpoint: pass --resume auto to detcore train "
                               "(the launcher resumes by itself)")
