"""Hostile or broken input: devices, FIFOs, alias bombs, deep nesting, decompression bombs, a
flood of boxes, model and data values past their bounds, symbolic link loops, image file names
that leave ``img_prefix``, boxes without area. Each case runs ``detcore`` as a subprocess under an address-space limit
(``RLIMIT_AS``) and a wall-clock limit enforced by the harness (the subprocess timeout; no
timing is asserted). It must exit 2 with one line naming the file or key, no traceback, and
leave nothing behind.

Limits: config-only cases never import torch and run under 1 GiB (``detcore config show``
needs under 0.5 GiB; ``/dev/zero`` as a base once reached 5.2 GB, an alias bomb 3 GB).
Cases that import torch run under 6 GiB (importing torch maps about 3.5 GiB of address
space; a CPU training step of the tiny shapes model fits in 5 GiB), which still stops a
60000x60000 decode (10.8 GB) or a 200k-box ``box_iou`` (6.5 GB).
"""
from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.catalogue.test_detcore_bad_input import PNG, SHAPES, _materialise, coco, dataset_config

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30
CONFIG_AS, TORCH_AS = 1 * GIB, 6 * GIB
TIMEOUT_S = 180  # the harness's bound: a hang fails the case, it is not a benchmark

FIFO, HEADER_60K, HEADER_12K, BOXES = "__fifo__", "__png60000__", "__png12000__", "__200k_boxes__"
LINK = "__link__:"  # a symbolic link to what follows


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def bomb(levels: int = 9, width: int = 10) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def split_test_config(ann: str = "{t}/ann.json") -> str:
    return (f"_base_: {SHAPES}\nclasses: null\ndata:\n  workers_per_gpu: 0\n  test: {{_delete_: true, type: CocoDataset, "
            f"ann_file: {ann}, img_prefix: {{t}}/img, pipeline: [], test_mode: true}}\n")


def diamond(levels: int = 5, width: int = 10) -> dict[str, str]:
    """Each level lists the one below ``width`` times: width**levels loads if nothing stops it."""
    files = {"l0.yaml": "a: 1\n"}
    files.update({f"l{i}.yaml": f"_base_: [{', '.join([f'l{i - 1}.yaml'] * width)}]\n" for i in range(1, levels)})
    files["c.yaml"] = f"_base_: [{', '.join([f'l{levels - 1}.yaml'] * width)}]\n"
    return files


CATS3 = ((1, "a"), (2, "b"), (3, "c"))
SHOW = ["config", "show", "{t}/c.yaml", "--json"]
WORK = ["train", "{t}/c.yaml", "--work-dir", "{t}/work", "--no-validate"]
# (name, c.yaml, extra argv, words): model and data values a run must refuse before it starts
VALUES = [
    ("anchor-sizes-strings", f"_base_: {SHAPES}\nmodel: {{anchor_generator: {{sizes: [[a], [b], [c], [d]]}}}}\n", [],
     ["c.yaml: model.anchor_generator.sizes.0.0 must be an anchor side in pixels", "got 'a'"]),
    ("min-size-100000", f"_base_: {SHAPES}\n", ["--cfg-options", "model.min_size=100000"],
     ["model.min_size must be at most 16384", "got 100000"]),
    ("max-size-list", f"_base_: {SHAPES}\n", ["--cfg-options", "model.max_size=[800]"],
     ["model.max_size must be a positive integer, got [800]"]),
    ("batch-1e9-float", f"_base_: {SHAPES}\n", ["--cfg-options", "data.samples_per_gpu=1e9"],
     ["data.samples_per_gpu must be a positive integer, got 1000000000.0"]),
    ("batch-1e9", f"_base_: {SHAPES}\n", ["--cfg-options", "data.samples_per_gpu=1000000000"],
     ["data.samples_per_gpu must be at most 4096", "got 1000000000"]),
    ("split-batch", f"_base_: {SHAPES}\ndata: {{val: {{samples_per_gpu: 0}}}}\n", [],
     ["data.val.samples_per_gpu must be a positive integer, got 0"]),
    ("workers-100000", f"_base_: {SHAPES}\n", ["--cfg-options", "data.workers_per_gpu=100000"],
     ["data.workers_per_gpu must be at most 256", "got 100000"]),
    ("num-classes-1e8", f"_base_: {SHAPES}\n", ["--cfg-options", "model.num_classes=100000000"],
     ["model.num_classes must be at most 100000"]),
    ("resize-scale-100000", f"_base_: {SHAPES}\ndata: {{train: {{pipeline: [{{type: Resize, scale: [100000, 800]}}]}}}}"
                            "\n", [], ["data.train.pipeline.0.scale.0 must be at most 16384", "got 100000"]),
    ("resize-scales-string", f"_base_: {SHAPES}\ndata: {{train: {{pipeline: [{{type: Resize, scales: [[1333, "
                             "'800']]}]}}\n", [],
     ["data.train.pipeline.0.scales.0.1 must be a positive integer, got '800'", "without quotes"]),
    ("aspect-ratio-zero", f"_base_: {SHAPES}\nmodel: {{anchor_generator: {{aspect_ratios: [0.0, 1.0]}}}}\n", [],
     ["model.anchor_generator.aspect_ratios.0 must be an aspect ratio", "got 0.0"]),
    ("rpn-samples-1e9", f"_base_: {SHAPES}\n", ["--cfg-options", "model.rpn.batch_size_per_image=1000000000"],
     ["model.rpn.batch_size_per_image must be at most 100000"]),
    ("rpn-iou-above-one", f"_base_: {SHAPES}\nmodel: {{rpn: {{fg_iou_thresh: 7}}}}\n", [],
     ["model.rpn.fg_iou_thresh must be a number in [0, 1], got 7"]),
    ("rpn-bg-above-fg", f"_base_: {SHAPES}\nmodel: {{rpn: {{bg_iou_thresh: 0.8}}}}\n", [],
     ["model.rpn.bg_iou_thresh (0.8) must not be above fg_iou_thresh (0.7)"]),
    ("roi-fraction-zero", f"_base_: {SHAPES}\nmodel: {{roi_head: {{positive_fraction: 0}}}}\n", [],
     ["model.roi_head.positive_fraction must be a number in (0, 1], got 0"]),
    ("image-mean-255", f"_base_: {SHAPES}\nmodel: {{image_mean: [123.675, 116.28, 103.53]}}\n", [],
     ["model.image_mean.0 must be a mean of 0..1 pixel values", "divide 0..255 values by 255"]),
]
# (id, files, argv, words in the one error line, address-space limit)
CASES = [
    ("base-dev-zero", {"c.yaml": "_base_: /dev/zero\n"}, SHOW, ["/dev/zero", "not a regular file"], CONFIG_AS),
    ("base-dev-urandom", {"c.yaml": "_base_: /dev/urandom\n"}, SHOW, ["/dev/urandom", "not a regular file"], CONFIG_AS),
    ("base-fifo", {"f.yaml": FIFO, "c.yaml": "_base_: f.yaml\n"}, SHOW, ["f.yaml", "not a regular file"], CONFIG_AS),
    ("config-fifo", {"c.yaml": FIFO}, SHOW, ["c.yaml", "not a regular file"], CONFIG_AS),
    ("config-dev-zero", {}, ["config", "show", "/dev/zero"], ["/dev/zero", "not a regular file"], CONFIG_AS),
    ("config-too-large", {"c.yaml": "a: [" + "1, " * 1_000_000 + "1]\n"}, SHOW, ["c.yaml", "bytes"], CONFIG_AS),
    ("alias-bomb-json", {"c.yaml": bomb()}, SHOW, ["c.yaml", "aliases are expanded"], CONFIG_AS),
    ("alias-bomb-base", {"b.yaml": bomb(), "c.yaml": "_base_: b.yaml\n"}, SHOW, ["b.yaml", "aliases"], CONFIG_AS),
    ("base-diamond", diamond(), SHOW, ["the _base_ tree loads more than 256 files"], CONFIG_AS),
    ("recursive-alias", {"c.yaml": "a: &x [1, *x]\n"}, SHOW, ["c.yaml", "recursive alias"], CONFIG_AS),
    ("deep-nesting", {"c.yaml": "a: " + "[" * 50_000 + "]" * 50_000 + "\n"}, SHOW, ["c.yaml", "nested"], CONFIG_AS),
    ("deep-nesting-mapping", {"c.yaml": "".join(f"{'  ' * i}k{i}:\n" for i in range(100))}, SHOW,
     ["c.yaml", "nested deeper than"], CONFIG_AS),
    ("not-utf8", {"c.yaml": b"name: caf\xe9\n"}, SHOW, ["c.yaml", "not UTF-8"], CONFIG_AS),
    ("json-set", {"c.yaml": "s: !!set {a, b}\n"}, SHOW, ["c.yaml", "!!set", "not supported"], CONFIG_AS),
    ("json-binary", {"c.yaml": "b: !!binary aGVsbG8=\n"}, SHOW, ["c.yaml", "!!binary"], CONFIG_AS),
    ("json-timestamp", {"c.yaml": "d: !!timestamp 2024-01-01\n"}, SHOW, ["c.yaml", "!!timestamp"], CONFIG_AS),
    ("huge-integer", {"c.yaml": "a: " + "9" * 5000 + "\n"}, SHOW, ["c.yaml", "quote it"], CONFIG_AS),
    ("seed-negative", {}, ["train", SHAPES, "--seed", "-1"], ["--seed", "0 to 4294967295", "-1"], CONFIG_AS),
    ("seed-too-large", {}, ["train", SHAPES, "--seed", str(2 ** 64)], ["--seed", "0 to 4294967295"], CONFIG_AS),
    ("test-image-60000", {"c.yaml": split_test_config(), "img/a.png": HEADER_60K,
                          "ann.json": coco(images=((1, "a.png", 60000, 60000),), cats=CATS3)},
     ["test", "{t}/c.yaml", "{t}/t.pth"], ["a.png", "pixels", "DETCORE_MAX_IMAGE_PIXELS"], TORCH_AS),
    ("infer-image-60000", {"big.png": HEADER_60K}, ["infer", "none", "{t}/t.pth", "{t}/big.png", "--out-dir", "{t}/o"],
     ["big.png", "pixels", "DETCORE_MAX_IMAGE_PIXELS"], TORCH_AS),
    ("infer-image-12000", {"big.png": HEADER_12K}, ["infer", "none", "{t}/t.pth", "{t}/big.png", "--out-dir", "{t}/o"],
     ["big.png", "12000x12000", "above the limit of 67108864", "DETCORE_MAX_IMAGE_PIXELS"], TORCH_AS),
    ("train-200k-boxes", {"c.yaml": dataset_config(), "img/a.png": PNG, "ann.json": BOXES},
     ["train", "{t}/c.yaml", "--work-dir", "{t}/work", "--no-validate"],
     ["ann.json", "image id 1 (a.png) has 200000 boxes", "max_boxes_per_image"], TORCH_AS),
    # ---- model and data values: refused with the config, before a work dir (train imports torch first)
    *((f"value-{name}", {"c.yaml": text}, [*WORK, *extra], words, TORCH_AS) for name, text, extra, words in VALUES),
    ("value-config-show", {"c.yaml": VALUES[0][1]}, [*SHOW, *VALUES[0][2]], VALUES[0][3], CONFIG_AS),
    ("value-test", {}, ["test", SHAPES, "{t}/none.pth", "--cfg-options", "+data.test_samples_per_gpu=100000"],
     ["data.test_samples_per_gpu must be at most 4096", "got 100000"], TORCH_AS),
    # ---- symbolic link loops: named as loops, not "not found"
    ("config-link-loop", {"a.yaml": "__link__:b.yaml", "b.yaml": "__link__:a.yaml"},
     ["config", "show", "{t}/a.yaml"], ["a.yaml: symbolic link loop", "a.yaml -> {t}/b.yaml -> {t}/a.yaml"],
     CONFIG_AS),
    ("config-link-to-itself", {"c.yaml": "__link__:c.yaml"}, ["train", "{t}/c.yaml", "--work-dir", "{t}/work"],
     ["c.yaml: symbolic link loop", "c.yaml -> {t}/c.yaml"], TORCH_AS),
    ("base-link-loop", {"a.yaml": "__link__:b.yaml", "b.yaml": "__link__:a.yaml", "c.yaml": "_base_: a.yaml\n"},
     SHOW, ["c.yaml: _base_ file 'a.yaml' is a symbolic link loop", "b.yaml"], CONFIG_AS),
    ("config-link-dangling", {"c.yaml": "__link__:gone.yaml"}, SHOW,
     ["c.yaml: is a symbolic link to gone.yaml, which does not exist"], CONFIG_AS),
    # ---- annotation files: names confined to img_prefix, boxes with a size
    ("file-name-traversal", {"c.yaml": dataset_config(), "img/a.png": PNG,
                             "ann.json": coco(images=((1, "../../../../../../etc/hostname", 32, 32),))},
     [*WORK], ["ann.json: image id 1 has file_name '../../../../../../etc/hostname'", "leaves the image folder",
               "img_prefix"], TORCH_AS),
    ("file-name-absolute", {"c.yaml": dataset_config(), "img/a.png": PNG,
                            "ann.json": coco(images=((1, "/etc/hostname", 32, 32),))},
     [*WORK], ["ann.json: image id 1 has file_name '/etc/hostname'", "an absolute path"], TORCH_AS),
    ("bbox-negative-width", {"c.yaml": dataset_config(), "img/a.png": PNG,
                             "ann.json": coco(anns=((1, 1, 1, [2, 2, 10, 10]), (7, 1, 1, [2, 2, -5, 4])))},
     [*WORK], ["ann.json: annotation id 7 of image id 1", "bbox [2, 2, -5, 4]", "non-positive width or height",
               "skip_degenerate_boxes"], TORCH_AS),
    ("eval-gt-negative-width", {"gt.json": coco(anns=((1, 1, 1, [2, 2, 10, 10]), (7, 1, 1, [2, 2, -5, 4]))),
                                "dt.json": json.dumps([{"image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10],
                                                        "score": 0.9}])},
     ["eval", "--ann", "{t}/gt.json", "--results", "{t}/dt.json"],
     ["gt.json: annotation id 7 of image id 1", "non-positive width or height"], CONFIG_AS),
    ("eval-gt-zero-height-map", {"gt.json": coco(anns=((3, 1, 1, [2, 2, 10, 0]),)), "dt.json": "[]"},
     ["eval", "--ann", "{t}/gt.json", "--results", "{t}/dt.json", "--metric", "mAP"],
     ["gt.json: annotation id 3 of image id 1", "bbox [2, 2, 10, 0]"], CONFIG_AS),
    ("convert-via-traversal", {"img/a.png": PNG, "via.json": json.dumps(
        {"k": {"filename": "../../../../etc/hostname", "size": 1, "regions": []}})},
     ["convert", "via", "{t}/via.json", "{t}/out.json", "--class-name", "x", "--img-dir", "{t}/img"],
     ["via.json entry 'k': filename '../../../../etc/hostname'", "leaves the image folder"], CONFIG_AS),
    ("convert-via-image-60000", {"img/big.png": HEADER_60K, "via.json": json.dumps(
        {"k": {"filename": "big.png", "size": 1, "regions": []}})},
     ["convert", "via", "{t}/via.json", "{t}/out.json", "--class-name", "x", "--img-dir", "{t}/img"],
     ["big.png", "via.json entry 'k'", "pixels", "DETCORE_MAX_IMAGE_PIXELS"], CONFIG_AS),
]


def _write_special(t: Path, files: dict) -> dict:
    """Create FIFOs, crafted PNG headers and big files; return the rest for ``_materialise``."""
    rest = {}
    for name, content in files.items():
        path = t / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == FIFO:
            os.mkfifo(path)
        elif isinstance(content, str) and content.startswith(LINK):
            path.symlink_to(content[len(LINK):])
        elif content in (HEADER_60K, HEADER_12K):
            side = 60000 if content == HEADER_60K else 12000
            path.write_bytes(png_header(side, side))
        elif content == BOXES:
            anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [i % 20, i % 17, 8, 8], "area": 64,
                     "iscrowd": 0} for i in range(200_000)]
            path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
                                        "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            rest[name] = content
    return rest


def _limit(nbytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return apply


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_fast_and_bounded(case, tmp_path: Path) -> None:
    _, files, argv, words, address_space = case
    needs_checkpoint = any("{t}/t.pth" in a for a in argv)
    _materialise(tmp_path, {**_write_special(tmp_path, files), **({"t.pth": "__faster__"} if needs_checkpoint else {})})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DETCORE_MAX_IMAGE_PIXELS", None)
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", *[a.replace("{t}", str(tmp_path)) for a in argv]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                          preexec_fn=_limit(address_space))
    err = proc.stderr
    errors = [line for line in err.splitlines() if line.startswith("detcore ") and ": error: " in line]
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    for word in words:
        assert word.replace("{t}", str(tmp_path)) in errors[0], errors[0]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, f"left behind: {set(after) - set(before)}"


def test_a_yaml_date_prints_as_json_text(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("d: 2024-01-01\nlr: 1e-4\n")
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", "config", "show", str(tmp_path / "c.yaml"),
                           "--json"], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=TIMEOUT_S, preexec_fn=_limit(CONFIG_AS))
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["d"] == "2024-01-01" and shown["lr"] == 1e-4
