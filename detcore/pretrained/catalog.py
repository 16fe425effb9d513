"""The models usable by name, with torchvision's published numbers (``detcore model list``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from detcore.pretrained.names import BACKBONE_OF, DETECTOR_OF, PREFIX, TORCHVISION, TorchvisionWeights, detector_config

# torchvision's metric keys -> how the list shows them
_METRICS = {"box_map": "box AP", "mask_map": "mask AP", "acc@1": "top-1"}


@dataclass(frozen=True)
class ModelEntry:
    """One weights file of the catalogue."""

    name: str             # the shortest spelling: torchvision://resnet50, or ResNet50_Weights.IMAGENET1K_V2
    weights: str          # torchvision's name, e.g. ResNet50_Weights.IMAGENET1K_V1
    aliases: list[str]    # other spellings of the same file (DEFAULT, MMEngine's builder.member)
    builder: str
    task: str             # "detection", "instance segmentation" or "ImageNet backbone"
    published: dict[str, float]  # e.g. {"box AP": 37.0} on COCO val2017, {"top-1": 76.13} on ImageNet
    size_mb: float
    num_params: int
    file: str
    url: str
    cached: bool
    use: str              # the config to use, or the key and backbone the weights fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _meta(weights: TorchvisionWeights) -> dict:
    from torchvision.models import get_weight

    return get_weight(weights.name).meta


def published_metrics(builder: str, member: str | None = None) -> dict[str, float]:
    """torchvision's published numbers of ``builder``'s weights (its first, by default), as the list shows them."""
    enum, files, _ = TORCHVISION[builder]
    member = member or files[0][0]
    file = dict(files)[member]
    meta = _meta(TorchvisionWeights(builder, enum, member, file, ""))
    out = {}
    for dataset_metrics in (meta.get("_metrics") or {}).values():
        out.update({_METRICS[k]: float(v) for k, v in dataset_metrics.items() if k in _METRICS})
    return out


def catalog() -> list[ModelEntry]:
    """Every weights file detcore can load by name: COCO detectors first, then ImageNet backbones."""
    from detcore.pretrained.hub import checkpoints_dir

    folder = checkpoints_dir()
    entries = []
    for builder, (enum, files, default) in TORCHVISION.items():
        for i, (member, file) in enumerate(files):
            weights = TorchvisionWeights(builder, enum, member, file, "")
            meta = _meta(weights)
            aliases = [weights.name] if i == 0 else []
            aliases += [f"{enum}.DEFAULT"] if member == default else []
            aliases.append(f"{PREFIX}{builder}.{member.lower()}")
            if builder in DETECTOR_OF:
                task = "instance segmentation" if DETECTOR_OF[builder] == "MaskRCNN" else "detection"
                use = f"configs/torchvision/{detector_config(builder).name}"
            else:
                task = "ImageNet backbone"
                kind, depth = BACKBONE_OF[builder]
                use = f"model.backbone.weights ({kind}" + (f", depth {depth})" if depth else ")")
            entries.append(ModelEntry(
                name=PREFIX + builder if i == 0 else weights.name, weights=weights.name, aliases=aliases,
                builder=builder, task=task, published=published_metrics(builder, member),
                size_mb=float(meta.get("_file_size", 0.0)), num_params=int(meta.get("num_params", 0)), file=file,
                url=weights.url, cached=(folder / file).is_file(), use=use))
    return sorted(entries, key=lambda e: e.task == "ImageNet backbone")  # stable: table order within each


def format_catalog(entries: list[ModelEntry], cache: str) -> str:
    """The table ``detcore model list`` prints."""
    rows = [("NAME", "TASK", "PUBLISHED", "SIZE", "CACHED", "USE")]
    for e in entries:
        published = ", ".join(f"{k} {v:.1f}" for k, v in e.published.items()) or "-"
        name = e.name + (" (DEFAULT)" if any(a.endswith(".DEFAULT") for a in e.aliases) and "://" not in e.name else "")
        rows.append((name, e.task, published, f"{e.size_mb:.0f} MB", "yes" if e.cached else "no", e.use))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    lines += ["",
              "PUBLISHED: torchvision's figures (COCO val2017 AP x 100, ImageNet top-1 %).",
              "A detector is a checkpoint (detcore test/infer, init_detector, load_from) used with the config in USE;",
              "a backbone goes in model.backbone.weights. torchvision://BUILDER is the builder's first weights",
              "(MMDetection's meaning: torchvision://resnet50 = ResNet50_Weights.IMAGENET1K_V1); enum names work too.",
              f"cache: {cache} (TORCH_HOME/hub/checkpoints); fill it ahead with `detcore model download NAME ...`"]
    return "\n".join(lines)
