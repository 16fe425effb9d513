"""Which ``DistributedDataParallel`` options help the 2-worker CPU job (``benchmarks/scaling.py``'s setting).

Each round runs, in an order that alternates between rounds, the 1-worker job and the 2-worker
job once per variant of ``dist_params`` (torch's defaults; ``gradient_as_bucket_view``;
``static_graph``; a small and a large ``bucket_cap_mb``) and the machine's ceiling (two
independent 1-worker jobs at once, as in ``scaling``); each figure is the median over rounds of
its images/s divided by the same round's 1-worker images/s:

    python -m benchmarks.ddp_options [--rounds 3] [--out benchmarks/results/ddp_options.json]

Prints a Markdown table; the figures go to the JSON file with the machine's load average.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import Context, log
from benchmarks.scaling import independent_pair, one_run

VARIANTS: dict[str, list[str]] = {
    "defaults (bucket 25 MB, no bucket view, dynamic graph)": [],
    "gradient_as_bucket_view": ["+dist_params.gradient_as_bucket_view=true"],
    "static_graph": ["+dist_params.static_graph=true"],
    "bucket_cap_mb=1": ["+dist_params.bucket_cap_mb=1"],
    "bucket_cap_mb=100": ["+dist_params.bucket_cap_mb=100"],
}


def _rounds(ctx: Context, args: argparse.Namespace, batch: int, names: list[str],
            ceiling: str) -> dict[str, list[float]]:
    """Images/s of every name in every round, the order alternating between rounds."""
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            log(f"ddp_options: {name}, round {r + 1}/{args.rounds}")
            if name == ceiling:
                samples[name].append(independent_pair(ctx, batch, args.warmup, args.iters, 10, 600))
                continue
            nproc, extra = (1, []) if name == "1 worker" else (2, VARIANTS[name])
            samples[name].append(one_run(ctx, nproc, batch, args.warmup, args.iters, 10, 600, extra))
    return samples


def main(argv: list[str] | None = None) -> int:
    from detcore.config import load_config

    ap = argparse.ArgumentParser(prog="python -m benchmarks.ddp_options", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ddp_options.json"))
    args = ap.parse_args(argv)
    batch = int(load_config(jobs.SHAPES_CONFIG)["data"]["samples_per_gpu"])
    ctx = Context(quick=False, out_dir=Path(args.out).parent, tmp=Path(tempfile.mkdtemp(prefix="ddp-options-")))
    ceiling = "ceiling: 2 independent 1-worker jobs"
    names = ["1 worker", *VARIANTS, ceiling]
    load_start = os.getloadavg()
    try:
        samples = _rounds(ctx, args, batch, names, ceiling)
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    ratios = {n: [s / one for s, one in zip(samples[n], samples["1 worker"])] for n in names[1:]}
    lines = ["| 2 workers x 1 thread, dist_params | img/s (median) | x 1 worker (median of per-round ratios) | "
             "per-round ratios |", "|---|---|---|---|",
             f"| 1 worker (baseline) | {statistics.median(samples['1 worker']):.2f} | 1 | |"]
    for n in names[1:]:
        lines.append(f"| {n} | {statistics.median(samples[n]):.2f} | {statistics.median(ratios[n]):.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in ratios[n])} |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).write_text(json.dumps({
        "command": "python -m benchmarks.ddp_options", "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup, "per_worker_batch": batch,
        "load_average_at_start": load_start, "load_average_at_end": os.getloadavg(),
        "images_per_s": samples, "ratio_vs_1_worker": ratios, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
