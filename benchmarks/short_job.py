"""11. Short jobs: the fixed cost of one 4-iteration shapes job, end to end, against ``import torch, torchvision``.

A sweep of many short jobs spends most of each job starting up. Three commands run as fresh
processes, interleaved (3 rounds quick, 5 full, after one unmeasured round that warms the page
cache and generates the shapes data):

* ``python -c "import torch, torchvision"``: the floor under any torchvision job;
* ``detcore train`` of the shapes config, 4 iterations, one process with one thread (no launcher);
* ``launcher submit --backend local --nproc 1`` of the same job, followed to its end (the default:
  the command returns when the job has ended and its row is written).

Both jobs run ``runner.max_iters=4``, log every iteration and checkpoint only at the end; the
variant ``validate`` also evaluates at the end (the config's validation set), the variant
``--no-validate`` does not. The job's *training time* is the sum of the trainer's own
``iter_time`` (data + step) of its 4 iterations from ``metrics.jsonl``; the *fixed cost* is the
wall time from spawning the command to its exit minus that training time. Goal: a 4-iteration job
within 2x ``import torch, torchvision`` plus its training time, i.e. fixed cost / import <= 2.

For the launcher run the fixed cost is split into stages, from the job's own records: submit
(spawn to the supervisor's start, ``status.json``), agent (to the rank's start fact: the torchrun
agent's imports and rendezvous), worker start (to detcore's first log line: imports, config),
build (to the first iteration's log line, minus its iter_time: dataset, model), train, after
training (last iteration to the rank's end fact: final evaluation and checkpoint) and the end
(the end fact to the command's exit: the agent's and supervisor's exit and the row written).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import Context, Goal, Result, Row, compared, log, measured

TITLE = "short jobs: a 4-iteration shapes job end to end vs python -c 'import torch, torchvision'"
GOAL = Goal("ratio", "<=", 2.0)
ITERS = 4
OVERRIDES = [f"runner.max_iters={ITERS}", "log_config.interval=1", f"checkpoint_config.interval={ITERS}"]
IMPORT = [sys.executable, "-c", "import torch, torchvision"]


def train_time(work_dir: Path) -> float:
    """Seconds of training: the trainer's ``iter_time`` (data + step) summed over the logged iterations."""
    recs = {r["iter"]: r for r in jobs.read_metrics(work_dir)}
    if sorted(recs) != list(range(1, ITERS + 1)):
        raise jobs.JobFailed(f"{work_dir}/metrics.jsonl holds iterations {sorted(recs)}, expected 1..{ITERS}")
    return sum(r["iter_time"] for r in recs.values())


def _first_log_time(work_dir: Path) -> float | None:
    """Epoch seconds of detcore's first log line in ``train.log``."""
    try:
        with open(work_dir / "train.log", errors="replace") as f:
            first = f.readline()
    except FileNotFoundError:
        return None
    try:
        return datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def _rank0_fact(work_dir: Path, kind: type) -> float | None:
    """Epoch seconds of rank 0's first fact of ``kind`` (``Start``/``End``) in the run's records."""
    from detcore.facts import read_facts

    for run in sorted((work_dir / "runs").iterdir()):
        for fact in read_facts(run):
            if isinstance(fact, kind) and fact.rank == 0:
                return fact.time
    return None


def stages(work_dir: Path, home: Path, spawned: float, exited: float) -> dict[str, float]:
    """The launcher run's fixed cost split into stages (seconds); see the module docstring."""
    from detcore.facts import End, Start

    status = json.loads(next((home / "jobs").glob("*/status.json")).read_text())
    logged = jobs.log_times(work_dir)
    first_iter = logged[1] - next(r["iter_time"] for r in jobs.read_metrics(work_dir) if r["iter"] == 1)
    marks = [("submit", status["started"]), ("agent", _rank0_fact(work_dir, Start)),
             ("worker start", _first_log_time(work_dir)), ("build", first_iter), ("train", logged[ITERS]),
             ("after training", _rank0_fact(work_dir, End)), ("end", exited)]
    out, prev = {}, spawned
    for name, t in marks:
        if t is None:
            continue
        out[name] = t - prev
        prev = t
    return out


def run(ctx: Context) -> Result:
    from detcore.config import load_config
    from detcore.data.shapes import ensure_shapes

    cfg = load_config(jobs.SHAPES_CONFIG)
    for split in ("train", "val"):
        d = cfg["data"][split]
        ensure_shapes(num_train=d["num_train"], num_val=d["num_val"], size=d["size"], seed=d["seed"])
    repeats, warmup = ctx.pick(3, 5), 1
    env = jobs.bench_env()
    one_core = jobs.bench_env(threads=1)  # the threads the launcher gives a one-process job on its core lease
    samples: dict[str, list[float]] = {}
    breakdown: list[dict[str, float]] = []

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for r in range(warmup + repeats):
        measuring = r >= warmup
        log(f"short_job: round {r + 1}/{warmup + repeats}{'' if measuring else ' (warm-up)'}")
        t = jobs.run(IMPORT, ctx.workdir("short_import") / "out.log", env, 120, "import torch, torchvision")
        if measuring:
            add("import", t)
        for validate in (True, False):
            tag = "validate" if validate else "no-validate"
            work = ctx.workdir(f"short_detcore_{tag}")
            cmd = [sys.executable, *jobs.detcore_train_args(jobs.SHAPES_CONFIG, work / "run", OVERRIDES, validate)]
            t = jobs.run(cmd, work / "out.log", one_core, 600, f"detcore train ({tag})")
            if measuring:
                add(f"detcore {tag}", t)
                add(f"detcore {tag} train", train_time(work / "run"))
            work = ctx.workdir(f"short_launcher_{tag}")
            home = work / "home"
            cmd = [sys.executable, "-m", "launcher", "submit", str(jobs.SHAPES_CONFIG), "--nproc", "1", "--work-dir",
                   str(work / "run"), "--name", f"short-{tag}"]
            if not validate:
                cmd.append("--no-validate")
            cmd += ["--cfg-options", *OVERRIDES]
            spawned = datetime.now().timestamp()
            t = jobs.run(cmd, work / "out.log", {**env, "LAUNCHER_HOME": str(home)}, 600, f"launcher submit ({tag})")
            if measuring:
                add(f"launcher {tag}", t)
                add(f"launcher {tag} train", train_time(work / "run"))
                if validate:
                    breakdown.append(stages(work / "run", home, spawned, spawned + t))
    imports = samples["import"]
    rows: list[Row] = [measured("python -c 'import torch, torchvision'", imports, "s", note="fresh process")]
    for side in ("launcher", "detcore"):
        for tag in ("validate", "no-validate"):
            key = f"{side} {tag}"
            fixed = [total - train for total, train in zip(samples[key], samples[f"{key} train"])]
            label = "launcher submit --nproc 1" if side == "launcher" else "detcore train"
            rows.append(compared(f"{label} ({tag}): fixed cost", fixed, imports, "s", GOAL,
                                 note=f"end to end {statistics.median(samples[key]):.2f} s minus training "
                                      f"{statistics.median(samples[f'{key} train']):.2f} s; ratio vs import"))
    stage_names = list(breakdown[0]) if breakdown else []
    for name in stage_names:
        rows.append(measured(f"  launcher stage: {name}", [b.get(name, 0.0) for b in breakdown], "s"))
    settings = {"config": str(jobs.SHAPES_CONFIG), "overrides": OVERRIDES, "repeats": repeats, "warmup": warmup,
                "threads": os.environ.get("OMP_NUM_THREADS", "default")}
    return Result(rows, settings, {"samples": samples, "launcher_stages": breakdown})
