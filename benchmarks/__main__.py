"""``python -m benchmarks [--quick] [--only NAME ...] [--out-dir DIR]``: run, print the table, write JSON.

Each benchmark writes ``DIR/<name>.json`` (machine, settings, rows with median and spread,
ratios and goals); the whole run also writes ``DIR/summary.md`` (the table in Markdown with
the command and machine). A benchmark that fails is reported as an error row and the
others still run; the exit status is 1 when any failed, else 0 (goals missed are not errors).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.harness import (REPO_ROOT, Context, NotAvailable, Result, Row, format_table, log,
                                machine_description, write_result)

# name -> module, in the order they run (train_throughput first: data_pipeline reuses its step rate)
BENCHMARKS = {
    "train_throughput": "benchmarks.train_throughput",
    "data_pipeline": "benchmarks.data_pipeline",
    "startup": "benchmarks.startup",
    "scaling": "benchmarks.scaling",
    "evaluation": "benchmarks.evaluation",
    "inference": "benchmarks.inference",
    "bookkeeping": "benchmarks.bookkeeping",
    "memory": "benchmarks.memory",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings (under 5 minutes on 2 cores)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these: {', '.join(BENCHMARKS)}")
    p.add_argument("--out-dir", default=str(REPO_ROOT / "benchmarks" / "results"),
                   help="where <name>.json and summary.md go (default benchmarks/results)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary work dirs (logs of every run)")
    args = p.parse_args(argv)
    for name in args.only or []:
        if name not in BENCHMARKS:
            close = difflib.get_close_matches(name, list(BENCHMARKS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            p.error(f"unknown benchmark {name!r}{hint}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    out_dir = Path(args.out_dir)
    tmp = Path(tempfile.mkdtemp(prefix="detlaunch-bench-"))
    ctx = Context(quick=args.quick, out_dir=out_dir, tmp=tmp)
    log(f"{'quick' if args.quick else 'full'} run of {', '.join(names)}; work dirs under {tmp}")
    machine = machine_description()
    results: list[tuple[str, list[Row]]] = []
    failed = False
    t_all = time.perf_counter()
    try:
        for name in names:
            module = importlib.import_module(BENCHMARKS[name])
            log(f"{name}: {module.TITLE}")
            t0 = time.perf_counter()
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
            elapsed = time.perf_counter() - t0
            write_result(out_dir / f"{name}.json", name, module.TITLE, result, machine, elapsed, args.quick, error)
            log(f"{name}: done in {elapsed:.1f} s")
            results.append((name, rows))
    finally:
        if args.keep_tmp:
            log(f"kept work dirs under {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_all
    table = format_table(results)
    print(table)
    print(f"\n{'quick' if args.quick else 'full'} run, {total:.0f} s; JSON in {out_dir}")
    write_summary(out_dir / "summary.md", results, machine, args, total)
    return 1 if failed else 0


def write_summary(path: Path, results: list[tuple[str, list[Row]]], machine: dict, args: argparse.Namespace,
                  total_s: float) -> None:
    cmd = "python -m benchmarks" + (" --quick" if args.quick else "") + (f" --only {' '.join(args.only)}"
                                                                         if args.only else "")
    gpu = machine["gpu"] if machine["gpu"] != "none" else "no GPU"
    text = (f"# Benchmark results\n\n`{cmd}` ({'quick' if args.quick else 'full'} settings), "
            f"{time.strftime('%Y-%m-%d %H:%M')}, {total_s:.0f} s.\n\n"
            f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, {machine['memory_gb']} GB, "
            f"{gpu}; Python {machine['python']}, torch {machine['torch']}, torchvision {machine['torchvision']}; "
            f"load average at start {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}; "
            f"commit {machine['git_commit']}.\n\n"
            "Values are medians over repeated runs; the spread is min..max; the ratio is measured in the same "
            "run (in brackets: min..max of the per-pair ratios of interleaved runs).\n\n"
            + format_table(results, markdown=True) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
