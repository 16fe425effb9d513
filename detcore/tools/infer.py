"""``detcore infer CONFIG CHECKPOINT INPUTS...``: detect objects in image files or folders."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tqdm import tqdm

from detcore.data.image_file import check_image_file
from detcore.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("config", help="YAML config, or 'none' to use the one saved in the checkpoint (for a torchvision "
                                   "name: configs/torchvision/NAME.yaml)")
    p.add_argument("checkpoint", help="checkpoint file (.pth, a detcore checkpoint or a plain state dict), or a "
                                      "torchvision COCO detector by name, e.g. torchvision://fasterrcnn_resnet50_fpn")
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--out-dir", required=True,
                   help="where annotated images (same relative paths and names as the inputs) and results.json go; "
                        "never an input folder")
    p.add_argument("--score-thr", type=float, default=0.3, help="draw detections scoring at least this")
    p.add_argument("--draw-min-side", type=int, default=512, metavar="PX",
                   help="draw images whose short side is smaller scaled up to PX pixels, so labels are readable "
                        "(default 512; 0 draws at each image's own size); results.json stays in the image's pixels")
    p.add_argument("--json", action="store_true", help="also write results.json and print a summary as JSON")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def collect_images(inputs: list[str]) -> list[tuple[Path, Path]]:
    """``(image, path relative to the inputs' common folder)`` for every image, each once.

    Folders are searched recursively; the relative paths keep the inputs' layout, so
    ``sub1/img.png`` and ``sub2/img.png`` stay two files under the output folder.
    """
    files: list[Path] = []
    roots: list[str] = []
    for item in inputs:
        path = Path(os.path.abspath(item))
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            roots.append(str(path))
        elif path.is_file():
            files.append(path)
            roots.append(str(path.parent))
        else:
            raise DataError(f"input {item} does not exist; give image files or folders")
    if not files:
        raise DataError(f"no images found in {', '.join(inputs)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    common = Path(os.path.commonpath(roots))
    unique = {os.path.realpath(f): f for f in files}  # the same file given twice is drawn once
    return [(f, f.relative_to(common)) for f in unique.values()]


def plan_outputs(images: list[tuple[Path, Path]], out_dir: Path) -> list[tuple[Path, Path]]:
    """``(image, output file)`` pairs: the relative layout under ``out_dir``, same names.

    DataError, before anything is written, when an output would overwrite an input image
    (``--out-dir`` equal to an input folder, or a folder that holds the inputs' layout).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out-dir {out_dir} exists and is not a folder; give a folder for the annotated images")
    inputs = {os.path.realpath(path) for path, _ in images}
    plan = [(path, out_dir / rel) for path, rel in images]
    for _, out in plan:
        if os.path.realpath(out) in inputs:
            raise DataError(f"--out-dir {out_dir} would overwrite the input image {out}; choose an output folder "
                            f"that is not an input folder")
    for path, _ in plan:
        check_image_file(path)  # headers only: a bad or over-large image fails before anything is written
    return plan


def run(args: argparse.Namespace) -> int:
    from detcore.apis import inference_detector, init_detector, show_result

    if args.draw_min_side < 0:
        raise DataError(f"--draw-min-side {args.draw_min_side} is negative; give a size in pixels, or 0 for the "
                        f"images' own size")
    out_dir = Path(args.out_dir)
    plan = plan_outputs(collect_images(args.inputs), out_dir)
    model = init_detector(None if args.config.lower() == "none" else args.config, args.checkpoint, args.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for path, out_file in tqdm(plan, desc="infer", unit="img"):
        result = inference_detector(model, str(path))
        show_result(str(path), result, score_thr=args.score_thr, out_file=out_file, min_side=args.draw_min_side)
        keep = result["scores"] >= args.score_thr
        records.append({"file": str(path), "out_file": str(out_file), "detections": [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "label": int(lbl), "class": n}
            for b, s, lbl, n, k in zip(result["boxes"], result["scores"], result["labels"], result["class_names"], keep)
            if k]})
    if args.json:
        (out_dir / "results.json").write_text(json.dumps(records, indent=2))
        print(json.dumps({"images": len(records), "detections": sum(len(r["detections"]) for r in records),
                          "out_dir": str(out_dir)}))
    else:
        print(f"annotated {len(records)} image(s) into {out_dir}")
    return 0
