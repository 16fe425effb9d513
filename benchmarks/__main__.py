"""``python -m benchmarks [--quick] [--only NAME ...] [--out-dir DIR]``: run, print the table, write JSON.

``python -m benchmarks --gpu [--cpu-smoke | --dry-run]`` runs the GPU check instead
(:mod:`benchmarks.gpu_check`); it exits 1 when one of its checks fails.

Each benchmark writes ``DIR/<name>.json`` (machine, settings, rows with median and spread,
ratios and goals); ``DIR/summary.md`` is then rewritten from all the JSON files in DIR (the
latest result of each benchmark, as one Markdown table). A benchmark that fails is reported as an error row and the
others still run; the exit status is 1 when any failed, else 0 (goals missed are not errors).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.harness import (REPO_ROOT, Context, NotAvailable, Result, Row, format_table, log,
                                machine_description, write_result)
from benchmarks.train_throughput import CASE_KEYS

# name -> module, in the order they run (train_throughput first: data_pipeline reuses its step rate)
BENCHMARKS = {
    "train_throughput": "benchmarks.train_throughput",
    "data_pipeline": "benchmarks.data_pipeline",
    "real_data": "benchmarks.real_data",
    "startup": "benchmarks.startup",
    "scaling": "benchmarks.scaling",
    "concurrent_jobs": "benchmarks.concurrent_jobs",
    "evaluation": "benchmarks.evaluation",
    "inference": "benchmarks.inference",
    "bookkeeping": "benchmarks.bookkeeping",
    "memory": "benchmarks.memory",
    "mask_eval_memory": "benchmarks.mask_eval_memory",
    "mask_eval": "benchmarks.mask_eval",
    "cli_startup": "benchmarks.cli_startup",
    "short_job": "benchmarks.short_job",
}
GPU_BENCHMARKS = {"gpu_check": "benchmarks.gpu_check"}  # only with --gpu


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="Run the benchmarks, print the table, write results/<name>.json.")
    p.add_argument("--quick", action="store_true", help="small settings (under 5 minutes on 2 cores)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these: {', '.join(BENCHMARKS)}")
    p.add_argument("--out-dir", default=str(REPO_ROOT / "benchmarks" / "results"),  # --cpu-smoke: a temp dir
                   help="where <name>.json and summary.md go (default benchmarks/results)")
    p.add_argument("--start-clusters", action="store_true",
                   help="startup: start the local Slurm and Ray test clusters when they are down (cluster/*/start.sh); "
                        "a cluster started this way is stopped after its runs")
    p.add_argument("--note", default="", help="a remark kept with the results, e.g. 'noisy: shared machine'")
    p.add_argument("--pairs", type=int, metavar="N",
                   help="interleaved pairs (repeats) for train_throughput and scaling (default: 5, --quick: 1)")
    p.add_argument("--case", nargs="+", metavar="KEY", choices=CASE_KEYS,
                   help=f"train_throughput: only these cases ({', '.join(CASE_KEYS)}; the ablations after "
                        f"cascade, detcore with one switch turned, only when named)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary work dirs (logs of every run)")
    p.add_argument("--gpu", action="store_true", help="run the GPU check (benchmarks/gpu_check.py, docs/gpu_check.md) "
                                                      "instead, on a GPU node: 5-8 minutes on one")
    p.add_argument("--cpu-smoke", action="store_true", help="with --gpu: every step on the CPU, tiny settings (gloo, "
                                                            "2 fake GPUs, AMP skipped); what CI runs")
    p.add_argument("--dry-run", action="store_true", help="with --gpu: print the steps and where the packages they "
                                                          "need come from; run nothing")
    args = p.parse_args(argv)
    if (args.cpu_smoke or args.dry_run) and not args.gpu:
        p.error("--cpu-smoke and --dry-run go with --gpu")
    for name in args.only or []:
        if name not in BENCHMARKS:
            close = difflib.get_close_matches(name, list(BENCHMARKS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            p.error(f"unknown benchmark {name!r}{hint}; choose from {', '.join(BENCHMARKS)}")
    if args.pairs is not None and args.pairs < 1:
        p.error(f"--pairs must be at least 1, got {args.pairs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalogue = GPU_BENCHMARKS if args.gpu else BENCHMARKS
    names = [n for n in catalogue if args.gpu or not args.only or n in args.only]
    if args.dry_run:
        import torch

        from benchmarks.gpu_check import describe

        print("\n".join(describe(torch.cuda.device_count() if torch.cuda.is_available() else 0, args.cpu_smoke)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="detlaunch-bench-"))
    default_out = str(REPO_ROOT / "benchmarks" / "results")
    out_dir = Path(args.out_dir)
    if args.cpu_smoke and args.out_dir == default_out:  # smoke figures never replace a GPU node's results
        out_dir = Path(tempfile.mkdtemp(prefix="detlaunch-gpu-smoke-"))
    ctx = Context(quick=args.quick, out_dir=out_dir, tmp=tmp, start_clusters=args.start_clusters)
    ctx.shared["cpu_smoke"] = args.cpu_smoke
    ctx.shared["pairs"] = args.pairs
    ctx.shared["cases"] = args.case
    log(f"{'quick' if args.quick else 'full'} run of {', '.join(names)}; work dirs under {tmp}")
    machine = machine_description()
    results: list[tuple[str, list[Row]]] = []
    failed = False
    t_all = time.perf_counter()
    try:
        for name in names:
            module = importlib.import_module(catalogue[name])
            log(f"{name}: {module.TITLE}")
            t0 = time.perf_counter()
            load_at_start = list(os.getloadavg())
            result: Result | None = None
            error = None
            try:
                result = module.run(ctx)
                rows = result.rows
            except NotAvailable as exc:
                rows = [Row(name, None, note=f"not available: {exc}")]
                result = Result(rows)
            except Exception as exc:  # one broken benchmark must not hide the others' figures
                failed = True
                error = "".join(traceback.format_exception(exc))
                print(error, file=sys.stderr)
                rows = [Row(name, None, note=f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")]
            failed |= args.gpu and any(r.met is False for r in rows)
            elapsed = time.perf_counter() - t0
            write_result(out_dir / f"{name}.json", name, module.TITLE, result,
                         {**machine, "load_average_at_start": load_at_start}, elapsed, args.quick, error, args.note)
            log(f"{name}: done in {elapsed:.1f} s")
            results.append((name, rows))
    finally:
        if args.keep_tmp:
            log(f"kept work dirs under {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_all
    print(format_table([(name, [r.to_json() for r in rows]) for name, rows in results]))
    summary = write_summary(out_dir)
    print(f"\n{'quick' if args.quick else 'full'} run, {total:.0f} s; JSON in {out_dir}, table of the latest "
          f"results in {summary}")
    return 1 if failed else 0


def write_summary(out_dir: Path) -> Path:
    """``out_dir/summary.md``: the latest result of every benchmark found there, as one Markdown table."""
    docs = []
    for name in [*BENCHMARKS, *GPU_BENCHMARKS]:
        path = out_dir / f"{name}.json"
        if path.is_file():
            docs.append(json.loads(path.read_text()))
    lines = ["# Benchmark results", "",
             "Written by `python -m benchmarks` from the JSON files beside this one (the latest run of each "
             "benchmark). Values are medians over repeated runs; the spread is min..max (n runs, or n processes "
             "for memory); the ratio is measured in the same run, in brackets the min..max of the per-pair "
             "ratios of interleaved runs.", ""]
    machines = {json.dumps({k: v for k, v in d["machine"].items() if k not in ("load_average_at_start", "git_commit")},
                           sort_keys=True) for d in docs}
    for m in sorted(machines):
        m = json.loads(m)
        gpu = m["gpu"] if m["gpu"] != "none" else "no GPU"
        lines.append(f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores, {m['memory_gb']} GB, {gpu}; "
                     f"{m['os']}; Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}.")
    lines += ["", "| benchmark | command | finished | took | load average (1 min) at start -> end | commit | note |",
              "|---|---|---|---|---|---|---|"]
    for d in docs:
        load = f"{d['machine']['load_average_at_start'][0]:.2f} -> {d.get('load_average_at_end', [float('nan')])[0]:.2f}"
        lines.append(f"| {d['benchmark']} | `{d['command']}` | {d['finished']} | {d['elapsed_s']:.0f} s | {load} | "
                     f"{d['machine'].get('git_commit')} | {d.get('note') or ''} |")
    lines += ["", format_table([(d["benchmark"], d["rows"]) for d in docs], markdown=True), ""]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    sys.exit(main())
