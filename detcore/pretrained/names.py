"""torchvision's pretrained weights by name, known without torch.

A config value such as ``model.backbone.weights`` or ``load_from`` names weights in one of the
spellings MMDetection and torchvision users write:

- ``torchvision://resnet50``: MMDetection's (mmcv's) name, the builder's first weights, the ones
  torchvision published before it had several (``resnet50-0676ba61.pth``, ImageNet ``IMAGENET1K_V1``;
  ``COCO_V1`` for a detector);
- ``torchvision://resnet50.imagenet1k_v2``: MMEngine's builder-dot-weights key;
- ``ResNet50_Weights.IMAGENET1K_V2``, ``ResNet50_Weights.DEFAULT``: torchvision's enum names (also
  after ``torchvision://``).

Anything else without a ``scheme://`` is a local file. :data:`TORCHVISION` lists the builders
detcore can use, with each weights file's name; ``tests/unit/pretrained/test_weights_names.py`` keeps
it equal to torchvision's weights API (``get_model_weights``, ``Weights.url``, ``DEFAULT``), so it
cannot drift. The table lets ``launcher submit`` check a name and say whether its file is cached
without importing torch; loading goes through :mod:`detcore.pretrained.hub`.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from detcore.errors import ConfigError

PREFIX = "torchvision://"
URL_BASE = "https://download.pytorch.org/models/"
_ENUM = re.compile(r"^[A-Za-z][A-Za-z0-9_]*_Weights\.[A-Za-z0-9_]+$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# builder -> (torchvision's weights enum, ((member, file name), ...) in torchvision's order, DEFAULT's member)
TORCHVISION: dict[str, tuple[str, tuple[tuple[str, str], ...], str]] = {
    "resnet18": ("ResNet18_Weights", (("IMAGENET1K_V1", "resnet18-f37072fd.pth"),), "IMAGENET1K_V1"),
    "resnet34": ("ResNet34_Weights", (("IMAGENET1K_V1", "resnet34-b627a593.pth"),), "IMAGENET1K_V1"),
    "resnet50": ("ResNet50_Weights", (("IMAGENET1K_V1", "resnet50-0676ba61.pth"),
                                      ("IMAGENET1K_V2", "resnet50-11ad3fa6.pth")), "IMAGENET1K_V2"),
    "resnet101": ("ResNet101_Weights", (("IMAGENET1K_V1", "resnet101-63fe2227.pth"),
                                        ("IMAGENET1K_V2", "resnet101-cd907fc2.pth")), "IMAGENET1K_V2"),
    "resnet152": ("ResNet152_Weights", (("IMAGENET1K_V1", "resnet152-394f9c45.pth"),
                                        ("IMAGENET1K_V2", "resnet152-f82ba261.pth")), "IMAGENET1K_V2"),
    "mobilenet_v3_large": ("MobileNet_V3_Large_Weights", (("IMAGENET1K_V1", "mobilenet_v3_large-8738ca79.pth"),
                                                          ("IMAGENET1K_V2", "mobilenet_v3_large-5c1a4163.pth")),
                           "IMAGENET1K_V2"),
    "fasterrcnn_resnet50_fpn": ("FasterRCNN_ResNet50_FPN_Weights",
                                (("COCO_V1", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"),), "COCO_V1"),
    "fasterrcnn_resnet50_fpn_v2": ("FasterRCNN_ResNet50_FPN_V2_Weights",
                                   (("COCO_V1", "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"),), "COCO_V1"),
    "fasterrcnn_mobilenet_v3_large_fpn": ("FasterRCNN_MobileNet_V3_Large_FPN_Weights",
                                          (("COCO_V1", "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth"),), "COCO_V1"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ("FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
                                              (("COCO_V1", "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"),),
                                              "COCO_V1"),
    "maskrcnn_resnet50_fpn": ("MaskRCNN_ResNet50_FPN_Weights",
                              (("COCO_V1", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),), "COCO_V1"),
    "maskrcnn_resnet50_fpn_v2": ("MaskRCNN_ResNet50_FPN_V2_Weights",
                                 (("COCO_V1", "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"),), "COCO_V1"),
    "retinanet_resnet50_fpn": ("RetinaNet_ResNet50_FPN_Weights",
                               (("COCO_V1", "retinanet_resnet50_fpn_coco-eeacb38b.pth"),), "COCO_V1"),
    "retinanet_resnet50_fpn_v2": ("RetinaNet_ResNet50_FPN_V2_Weights",
                                  (("COCO_V1", "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth"),), "COCO_V1"),
    "fcos_resnet50_fpn": ("FCOS_ResNet50_FPN_Weights",
                          (("COCO_V1", "fcos_resnet50_fpn_coco-99b0c9b7.pth"),), "COCO_V1"),
}
# ImageNet classifiers: the detcore backbone their weights fit, as (type, depth or None)
BACKBONE_OF: dict[str, tuple[str, int | None]] = {
    "resnet18": ("ResNet", 18), "resnet34": ("ResNet", 34), "resnet50": ("ResNet", 50), "resnet101": ("ResNet", 101),
    "resnet152": ("ResNet", 152), "mobilenet_v3_large": ("MobileNetV3", None),
}
# COCO detectors: the detcore detector type (model.type) their weights fit; configs/torchvision/<builder>.yaml
DETECTOR_OF: dict[str, str] = {
    "fasterrcnn_resnet50_fpn": "FasterRCNN", "fasterrcnn_resnet50_fpn_v2": "FasterRCNN",
    "fasterrcnn_mobilenet_v3_large_fpn": "FasterRCNN", "fasterrcnn_mobilenet_v3_large_320_fpn": "FasterRCNN",
    "maskrcnn_resnet50_fpn": "MaskRCNN", "maskrcnn_resnet50_fpn_v2": "MaskRCNN",
    "retinanet_resnet50_fpn": "RetinaNet", "retinanet_resnet50_fpn_v2": "RetinaNet", "fcos_resnet50_fpn": "FCOS",
}


@dataclass(frozen=True)
class TorchvisionWeights:
    """One weights file of torchvision, as a config named it."""

    builder: str   # torchvision's model builder, e.g. "resnet50"
    enum: str      # its weights enum, e.g. "ResNet50_Weights"
    member: str    # e.g. "IMAGENET1K_V1" (never the DEFAULT alias: what it stands for)
    file: str      # e.g. "resnet50-0676ba61.pth" (the hub cache's name, with its sha256 prefix)
    given: str     # the spelling in the config, e.g. "torchvision://resnet50"

    @property
    def name(self) -> str:
        """torchvision's name of these weights, e.g. ``ResNet50_Weights.IMAGENET1K_V1``."""
        return f"{self.enum}.{self.member}"

    @property
    def url(self) -> str:
        return URL_BASE + self.file

    @property
    def sha256_prefix(self) -> str:
        """The hash prefix in the file name (``0676ba61``), which torch hub checks a download against."""
        match = re.search(r"-([a-f0-9]+)\.", self.file)
        return match.group(1) if match else ""

    @property
    def is_detector(self) -> bool:
        return self.builder in DETECTOR_OF


def _member(builder: str, member: str) -> tuple[str, str] | None:
    """``(member, file)`` of ``builder``'s weights ``member`` (``DEFAULT`` resolved), or None."""
    _enum, files, default = TORCHVISION[builder]
    member = default if member == "DEFAULT" else member
    return next(((m, f) for m, f in files if m == member), None)


def _by_enum(enum: str, member: str, given: str) -> TorchvisionWeights | None:
    builder = next((b for b, (e, _, _) in TORCHVISION.items() if e == enum), None)
    found = _member(builder, member) if builder else None
    return TorchvisionWeights(builder, enum, found[0], found[1], given) if found else None


def spellings() -> list[str]:
    """Every name :func:`parse_weights` accepts, in its shortest spellings (for suggestions and help)."""
    out = [PREFIX + b for b in TORCHVISION]
    for enum, files, _ in TORCHVISION.values():
        out += [f"{enum}.{m}" for m, _ in files] + [f"{enum}.DEFAULT"]
    return out


def _unknown(value: str, where: str) -> ConfigError:
    pool = [s for s in spellings() if s.startswith(PREFIX) == value.startswith(PREFIX)]
    close = difflib.get_close_matches(value, pool, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    return ConfigError(f"{where}: unknown weights name {value!r}; {hint}detcore loads torchvision://BUILDER "
                       f"(MMDetection's names, e.g. torchvision://resnet50, torchvision://fasterrcnn_resnet50_fpn) and "
                       f"torchvision's enum names (e.g. ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.DEFAULT) of "
                       f"the models `detcore model list` shows")


def parse_weights(value: object, where: str = "weights") -> TorchvisionWeights | None:
    """The torchvision weights ``value`` names, or None when it is a local file path (or not a string).

    ConfigError (one line, with the closest names) for a misspelt name, and for a URL scheme detcore
    does not load (``open-mmlab://``, ``https://``: MMDetection's checkpoints hold another
    network's keys).
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith(PREFIX):
        rest = text[len(PREFIX):]
        if rest in TORCHVISION:  # MMDetection's name: the builder's first weights
            enum, files, _ = TORCHVISION[rest]
            return TorchvisionWeights(rest, enum, files[0][0], files[0][1], value)
        left, _, right = rest.partition(".")
        if left in TORCHVISION and right:  # MMEngine's resnet50.imagenet1k_v2
            found = _member(left, right.upper())
            if found:
                return TorchvisionWeights(left, TORCHVISION[left][0], found[0], found[1], value)
        elif _ENUM.match(rest):
            found_enum = _by_enum(left, right, value)
            if found_enum:
                return found_enum
        raise _unknown(text, where)
    if _ENUM.match(text):
        enum, _, member = text.partition(".")
        found_enum = _by_enum(enum, member, value)
        if found_enum is None:
            raise _unknown(text, where)
        return found_enum
    if _SCHEME.match(text):
        raise ConfigError(f"{where}: {value!r}: detcore loads torchvision:// names and local files only (MMDetection's "
                          f"open-mmlab:// and download.openmmlab.com checkpoints hold another network's keys and do "
                          f"not load into detcore's torchvision models); use a name from `detcore model list` or "
                          f"a file on disk")
    return None


def is_weights_name(value: object) -> bool:
    """True when ``value`` is spelt as a weights name (``torchvision://...``, ``Xxx_Weights.YYY``),
    right or misspelt; such a value is never a file path."""
    return isinstance(value, str) and (value.strip().startswith(PREFIX) or bool(_ENUM.match(value.strip())))


def hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch hub finds it (``TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``,
    else ``~/.cache/torch``), without importing torch. ``torch.hub.set_dir`` in the same process is not seen;
    the loader itself asks torch (:func:`detcore.pretrained.hub.checkpoints_dir`)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def cached_file(weights: TorchvisionWeights) -> Path | None:
    """The file in this machine's hub cache, or None when it is not there."""
    path = hub_checkpoints_dir() / weights.file
    return path if path.is_file() else None


def backbone_fit_problem(weights: TorchvisionWeights, backbone: str, depth: int | None = None) -> str | None:
    """Why ``weights`` cannot initialise a ``backbone`` (detcore's type, with its ``depth``), or None."""
    if weights.is_detector:
        return (f"{weights.given} is a whole COCO detector ({DETECTOR_OF[weights.builder]}); give it to load_from "
                f"(or as the checkpoint of detcore test/infer), not to model.backbone.weights")
    fits = BACKBONE_OF[weights.builder]
    if fits == (backbone, depth) or (fits[0] == backbone == "MobileNetV3"):
        return None
    these = f"{fits[0]}-{fits[1]}" if fits[1] else fits[0]
    if backbone == fits[0] == "ResNet":
        return f"{weights.given} holds {these} weights but model.backbone.depth is {depth}; use " \
               f"{PREFIX}resnet{depth} or set depth: {fits[1]}"
    usable = [PREFIX + b for b, (t, d) in BACKBONE_OF.items() if t == backbone and (d is None or d == depth)]
    return (f"{weights.given} holds {these} weights, which do not fit a {backbone} backbone" +
            (f"; use {' or '.join(usable)}" if usable else f"; {backbone} has no torchvision weights, give a file"))


def detector_config(builder: str) -> Path:
    """``configs/torchvision/<builder>.yaml`` of this source tree (the config of a COCO detector's weights;
    it may be absent from an installed package: then give the config's path yourself)."""
    return Path(__file__).resolve().parents[2] / "configs" / "torchvision" / f"{builder}.yaml"
