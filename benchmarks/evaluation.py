"""5. Evaluation: ``detcore eval`` against pycocotools' COCOeval called directly (goal: ratio <= 1.05,
identical numbers).

A synthetic COCO ground truth (``images`` images of 640x480, 80 categories, 1-12 objects each,
areas from small to large) and a results file with ``dets`` detections per image (jittered
copies of ground-truth boxes with mostly right labels, plus random boxes, random scores) are
generated deterministically (numpy seed 0) into the run's temp dir. Then, as fresh processes,
alternating:

* ``python -m detcore.tools.cli eval --ann GT --results DT --metric bbox --json``
* ``python -m benchmarks.evaluation pycocotools GT DT``: ``COCO(GT)``, ``loadRes(DT)``,
  ``COCOeval(..., "bbox")``, ``evaluate/accumulate/summarize`` and nothing else (no torch);
* ``detcore eval ... --backend faster-coco-eval`` (the optional C++ COCOeval), when installed.

The figure is each command's wall time, start to exit (what a user waits for). The twelve
summary numbers of the two must be equal to the last bit; the row says so. A third figure
is the wall time of a process that only imports ``detcore eval``'s module: the fixed part of
its cost, which a larger results file amortises.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from benchmarks import jobs
from benchmarks.harness import Context, Goal, Result, Row, compared, log, measured, not_available

TITLE = "evaluation: detcore eval vs pycocotools COCOeval on a large synthetic results file"
GOAL = Goal("ratio", "<=", 1.05)
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
NUM_CATEGORIES = 80
WIDTH, HEIGHT = 640, 480
CORNER_CUT = 0.25  # the masks of generate(masks=True): octagons in the boxes


def octagon(box: Sequence[float], cut: float = CORNER_CUT) -> list[float]:
    """The polygon ``[x1, y1, x2, y2, ...]`` of box ``[x, y, w, h]`` with its corners cut at ``cut`` of each
    side (a shape whose mask IoU differs from its box IoU); its area is ``w * h * (1 - 2 * cut ** 2)``."""
    x, y, w, h = box
    a, b = cut * w, cut * h
    return [x + a, y, x + w - a, y, x + w, y + b, x + w, y + h - b, x + w - a, y + h, x + a, y + h, x, y + h - b,
            x, y + b]


def _rles(boxes: Sequence[Sequence[float]]) -> list[dict]:
    """Compressed RLEs (``counts`` as text, as a results file holds them) of the boxes' octagons."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects([octagon(b) for b in boxes], HEIGHT, WIDTH) if len(boxes) else []
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]


def generate(out_dir: Path, images: int, dets: int, seed: int = 0, masks: bool = False) -> tuple[Path, Path]:
    """Write ``gt.json`` and ``dt.json``; the same bytes for the same arguments.

    ``masks``: every object also gets an octagon polygon (``segmentation``, mask ``area``) and every
    detection the RLE of its box's octagon, as a Mask R-CNN's results file holds them; the boxes
    are the same as without."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cats = [{"id": c + 1, "name": f"class{c + 1:02d}", "supercategory": "synthetic"} for c in range(NUM_CATEGORIES)]
    imgs, anns, results = [], [], []
    ann_id = 0
    for image_id in range(1, images + 1):
        imgs.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": WIDTH, "height": HEIGHT})
        n = int(rng.integers(1, 13))
        side = np.exp(rng.uniform(np.log(8), np.log(300), size=(n, 2)))  # small (< 32^2) to large (> 96^2)
        xy = rng.uniform(0, 1, size=(n, 2)) * (np.array([WIDTH, HEIGHT]) - side)
        labels = rng.integers(1, NUM_CATEGORIES + 1, size=n)
        for (x, y), (w, h), c in zip(xy, side, labels):
            ann_id += 1
            box = [round(float(x), 2), round(float(y), 2), round(float(w), 2), round(float(h), 2)]
            ann = {"id": ann_id, "image_id": image_id, "category_id": int(c), "iscrowd": 0, "bbox": box,
                   "area": round(float(w * h), 2)}
            if masks:
                ann["segmentation"] = [[round(v, 2) for v in octagon(box)]]
                ann["area"] = round(float(w * h) * (1 - 2 * CORNER_CUT ** 2), 2)
            anns.append(ann)
        # detections: jittered ground truth (a few per object), the rest random
        k = min(dets, 3 * n)
        src = rng.integers(0, n, size=k)
        jitter = rng.normal(0, 0.08, size=(k, 4)) * np.concatenate([side[src], side[src]], axis=1)
        boxes = np.concatenate([xy[src], side[src]], axis=1) + jitter
        det_labels = np.where(rng.uniform(size=k) < 0.8, labels[src], rng.integers(1, NUM_CATEGORIES + 1, size=k))
        r = dets - k
        rside = np.exp(rng.uniform(np.log(8), np.log(300), size=(r, 2)))
        rxy = rng.uniform(0, 1, size=(r, 2)) * (np.array([WIDTH, HEIGHT]) - rside)
        boxes = np.concatenate([boxes, np.concatenate([rxy, rside], axis=1)])
        det_labels = np.concatenate([det_labels, rng.integers(1, NUM_CATEGORIES + 1, size=r)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
        scores = np.concatenate([rng.uniform(0.3, 1.0, size=k), rng.uniform(0.0, 0.6, size=r)])
        boxes = boxes.round(2).tolist()
        rles = _rles(boxes) if masks else [None] * len(boxes)
        for b, c, s, rle in zip(boxes, det_labels.tolist(), scores.round(4).tolist(), rles):
            results.append({"image_id": image_id, "category_id": c, "bbox": b, "score": s,
                            **({"segmentation": rle} if rle else {})})
    out_dir.mkdir(parents=True, exist_ok=True)
    gt, dt = out_dir / "gt.json", out_dir / "dt.json"
    gt.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    dt.write_text(json.dumps(results))
    return gt, dt


def run_detcore(gt: Path, dt: Path, timeout: float, backend: str = "pycocotools",
                metrics: Sequence[str] = ("bbox",)) -> ProcessRun:
    """``detcore eval --json`` as a fresh process; ``stats``: ``{metric: {AP, ...}}``."""
    cmd = [sys.executable, "-m", "detcore.tools.cli", "--log-level", "WARNING", "eval", "--ann", str(gt),
           "--results", str(dt), "--metric", *metrics, "--json", "--backend", backend]
    return timed_process(cmd, timeout, f"detcore eval --backend {backend}", json.loads)


def faster_available() -> str | None:
    """None when detcore can use faster-coco-eval, else why not."""
    from detcore.errors import ConfigError
    from detcore.evaluation.coco_eval import check_backend

    try:
        check_backend("faster-coco-eval")
    except ConfigError as exc:
        return str(exc)
    return None


def run_pycocotools(gt: Path, dt: Path, timeout: float, metrics: Sequence[str] = ("bbox",)) -> ProcessRun:
    """The baseline (:func:`pycocotools_main`) as a fresh process; ``stats``: ``{metric: {AP, ...}}``."""
    cmd = [sys.executable, "-m", "benchmarks.evaluation", "pycocotools", str(gt), str(dt), *metrics]
    return timed_process(cmd, timeout, "pycocotools", json.loads)


def import_time(timeout: float) -> float:
    """Wall time of a process that only imports what ``detcore eval`` imports (the CLI's fixed cost)."""
    cmd = [sys.executable, "-c", "import detcore.tools.eval_tool"]
    return timed_process(cmd, timeout, "import detcore.tools.eval_tool", lambda out: {}).seconds


@dataclass(frozen=True)
class ProcessRun:
    """One fresh process: wall seconds from spawn to exit, its peak RSS, its CPU seconds (user +
    system, less sensitive to other load than the wall time), what its stdout said."""

    seconds: float
    peak_mib: float
    stats: dict
    cpu_s: float = 0.0


# Runs the command as its own child and reports that child's wall time, peak RSS and CPU time. A
# process spawned straight from the benchmark would report at least the benchmark's own RSS (700 MB
# with torch imported): Linux carries the pre-exec memory's high-water mark into ru_maxrss across
# exec, and a (v)forked child starts with its parent's memory. This small process forks it instead.
_MEASURE = r"""
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "peak_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}, f)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def timed_process(cmd: list[str], timeout: float, what: str, parse: Callable[[str], dict],
                  env: dict | None = None) -> ProcessRun:
    """Run ``cmd`` (``cmd[0]`` a path) from the repository root as a fresh process; its wall time from
    spawn to exit, its own peak RSS (``ru_maxrss`` from ``wait4``) and CPU time, and ``parse(stdout)``.
    JobFailed on a non-zero exit, or after ``timeout`` seconds (its process group is killed)."""
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.json"
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _MEASURE, str(figures), *cmd], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or jobs.bench_env(),
                                cwd=str(jobs.REPO_ROOT), start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise jobs.JobFailed(f"{what} timed out after {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise jobs.JobFailed(f"{what} exited {proc.returncode}: {stderr.strip()[-800:]}")
        got = json.loads(figures.read_text())
    return ProcessRun(got["seconds"], got["peak_kib"] / 1024, parse(stdout), got["cpu_s"])


def _differences(stats: dict, reference: dict) -> dict:
    return {k: (stats[k], reference[k]) for k in METRIC_KEYS if stats[k] != reference[k]}


def run(ctx: Context) -> Result:
    images, dets = ctx.pick((500, 100), (5000, 100))
    repeats = 2  # pycocotools takes about a minute per run at 5,000 images on 2 cores
    timeout = 1800.0
    log(f"evaluation: generating {images} images x {dets} detections")
    t0 = time.perf_counter()
    gt, dt = generate(ctx.workdir("evaluation"), images, dets)
    gen_s = time.perf_counter() - t0
    no_faster = faster_available()
    sides = ["detcore", "pycocotools"] + ([] if no_faster else ["faster"])
    times: dict[str, list[float]] = {side: [] for side in sides}
    stats: dict[str, dict] = {}
    imports, mismatches = [], {"detcore": [], "faster": []}
    for r in range(repeats):
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:  # rotate the order between repeats
            log(f"evaluation: {side} run {r + 1}/{repeats}")
            if side == "pycocotools":
                got = run_pycocotools(gt, dt, timeout)
            else:
                got = run_detcore(gt, dt, timeout, "faster-coco-eval" if side == "faster" else "pycocotools")
            times[side].append(got.seconds)
            stats[side] = got.stats["bbox"]
        imports.append(import_time(timeout))
        for side in mismatches:
            diff = _differences(stats[side], stats["pycocotools"]) if side in stats else {}
            if diff:
                mismatches[side].append(diff)
    reference = stats["pycocotools"]
    rows = [
        compared(f"detcore eval, {images:,} images x {dets} dets", times["detcore"], times["pycocotools"], "s", GOAL,
                 note="fresh process, start to exit; ratio vs pycocotools below"),
        measured("pycocotools COCOeval directly", times["pycocotools"], "s",
                 note="fresh process; COCO, loadRes, COCOeval"),
        measured("  python -c 'import detcore.tools.eval_tool'", imports, "s",
                 note="the fixed start-up cost inside the detcore eval figure (imports: pycocotools, numpy; no torch)"),
        _identical_row("12 summary numbers identical", mismatches["detcore"], reference),
    ]
    if no_faster:
        rows.append(not_available("detcore eval --backend faster-coco-eval", no_faster))
    else:
        rows += [
            compared("detcore eval --backend faster-coco-eval", times["faster"], times["pycocotools"], "s", GOAL,
                     note="the optional C++ COCOeval; ratio vs pycocotools above"),
            _identical_row("  its 12 summary numbers identical", mismatches["faster"], reference, FASTER_TOLERANCE),
        ]
    settings = {"images": images, "detections_per_image": dets, "categories": NUM_CATEGORIES, "repeats": repeats,
                "gt_bytes": gt.stat().st_size, "results_bytes": dt.stat().st_size}
    details = {"generate_s": gen_s, "mismatches": mismatches, "stats": stats}
    return Result(rows, settings, details)


FASTER_TOLERANCE = 1e-12  # faster-coco-eval sums precisions in another order: a segm figure can differ in its last bit


def _identical_row(label: str, mismatches: list[dict], reference: dict, tolerance: float = 0.0) -> Row:
    """Whether the numbers equal the reference's: bit for bit, or within ``tolerance`` (its largest difference)."""
    worst = max((abs(a - b) for diff in mismatches for a, b in diff.values()), default=0.0)
    met = worst <= tolerance
    if not mismatches:
        note = f"bit for bit; AP={reference['AP']:.6f} AR100={reference['AR100']:.6f}"
    elif met:
        note = f"equal within {tolerance:g}: largest difference {worst:.1e} ({', '.join(mismatches[0])})"
    else:
        note = f"differ: {mismatches[0]}"
    return Row(label, worst, "", met=met, note=note)


def pycocotools_main(gt: str, dt: str, metrics: Sequence[str] = ("bbox",)) -> int:
    """The baseline: pycocotools as its README shows it, a ``loadRes`` and a ``COCOeval`` per IoU type, the
    segm results without their boxes (so their areas are the masks', as MMDetection's and detectron2's
    COCO evaluators do); prints ``{metric: {the 12 stats}}`` as JSON."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with open(dt) as f:
        results = json.load(f)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        out = {}
        for metric in metrics:
            dets = [{k: v for k, v in r.items() if k != "bbox"} for r in results] if metric == "segm" else results
            out[metric] = cocoeval_stats(coco_gt, coco_gt.loadRes(dets), metric)
    print(json.dumps(out))
    return 0


def cocoeval_stats(coco_gt, coco_dt, metric: str) -> dict[str, float]:
    """pycocotools' ``COCOeval`` of ``metric``: evaluate, accumulate, summarize; the 12 stats by name."""
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(coco_gt, coco_dt, metric)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {k: float(v) for k, v in zip(METRIC_KEYS, ev.stats)}


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "pycocotools" or not set(sys.argv[4:]) <= {"bbox", "segm"}:
        print("usage: python -m benchmarks.evaluation pycocotools GT.json DT.json [bbox] [segm]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(pycocotools_main(sys.argv[2], sys.argv[3], sys.argv[4:] or ["bbox"]))
