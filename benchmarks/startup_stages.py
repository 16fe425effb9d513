"""Where a cluster job's start-up goes: the time of each stage, read back from what the run left behind.

Every mark is an epoch time. The benchmark takes ``spawn`` (just before the command) and ``exit``
itself; the rest come from files, so nothing is added to the timed path:

* launcher (any backend): ``planned``, the mtime of the job folder's ``plan.json`` (``submit`` has
  loaded the config and written its plan; the driver or ``sbatch`` comes next); ``worker_loop``, the
  first rank's ``start`` fact; Ray only: ``connected`` (the driver's ``connected to Ray`` log line,
  after its imports and ``ray.init``), ``placing`` and ``workers_started`` (the ``stage`` facts Ray
  Train's controller appends before placing the worker group and after its workers started);
* plain Ray (:mod:`benchmarks.plain_ray`): its stamps file (``driver_start``, ``connected``, the
  first ``worker_loop``);
* plain Slurm (:mod:`benchmarks.plain_slurm`): ``submitted`` (``sbatch`` returned);
* both: ``detcore_log`` (the first line of detcore's ``train.log``: its imports, the config and
  the process group are done) and ``iter1`` (the ``iter 1`` line, written after that step).

:func:`offsets` and :func:`durations` are pure and turn marks into seconds since ``spawn`` and
seconds per stage; :func:`median_marks` summarises several runs.
"""
from __future__ import annotations

import json
import re
import statistics
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from benchmarks import jobs

ORDER = ("spawn", "submitted", "planned", "driver_start", "connected", "placing", "workers_started", "worker_loop",
         "detcore_log", "iter1", "exit")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_time(line: str) -> float | None:
    """The epoch time of a ``logging`` line that starts with ``%(asctime)s`` (local time, ms), else None."""
    m = _STAMP.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def first_log_time(path: Path, containing: str = "") -> float | None:
    """The time of the first timestamped line of ``path`` that contains ``containing``."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((t for t in (log_time(ln) for ln in lines if containing in ln) if t is not None), None)


def offsets(marks: Mapping[str, float | None]) -> dict[str, float]:
    """Seconds from ``spawn`` to each mark that is known, in :data:`ORDER` (pure)."""
    t0 = marks["spawn"]
    return {k: marks[k] - t0 for k in ORDER if marks.get(k) is not None}


def durations(marks: Mapping[str, float | None]) -> dict[str, float]:
    """Seconds between consecutive known marks, as ``{"a -> b": s}`` in :data:`ORDER` (pure)."""
    known = [(k, marks[k]) for k in ORDER if marks.get(k) is not None]
    return {f"{a} -> {b}": tb - ta for (a, ta), (b, tb) in zip(known, known[1:])}


def median_marks(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each offset over ``runs`` (offsets as :func:`offsets` gives them; a mark missing in a run
    is left out of its median)."""
    keys = [k for k in ORDER if any(k in r for r in runs)]
    return {k: round(statistics.median([r[k] for r in runs if k in r]), 3) for k in keys}


def detcore_marks(work_dir: Path) -> dict[str, float | None]:
    times = jobs.log_times(work_dir)
    return {"detcore_log": first_log_time(work_dir / "train.log"), "iter1": times.get(1)}


def launcher_marks(home: Path, work_dir: Path) -> dict[str, float | None]:
    """The launcher's marks (see the module docstring) of the newest job in ``home``, run in ``work_dir``."""
    from detcore.facts import Stage, Start, read_facts

    plans = sorted(home.glob("*/*/plan.json"), key=lambda p: p.stat().st_mtime)
    marks: dict[str, float | None] = {"planned": plans[-1].stat().st_mtime if plans else None}
    if plans:
        marks["connected"] = first_log_time(plans[-1].parent / "driver.log", "connected to Ray")
    facts = [f for run in sorted(work_dir.glob("runs/*")) for f in read_facts(run)]
    starts = [f.time for f in facts if isinstance(f, Start) and f.time is not None]
    marks["worker_loop"] = min(starts) if starts else None
    for name, stage in (("placing", "placing"), ("workers_started", "starting")):
        marks[name] = next((f.time for f in facts if isinstance(f, Stage) and f.stage == stage), None)
    return {**marks, **detcore_marks(work_dir)}


def plain_ray_marks(stamps: Path, work_dir: Path) -> dict[str, float | None]:
    """The plain TorchTrainer's marks from its stamps file (:mod:`benchmarks.plain_ray`) and detcore's log."""
    found: dict[str, float] = {}
    try:
        lines = stamps.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = rec.get("stage")
        if name in ORDER and isinstance(rec.get("time"), (int, float)):
            found[name] = min(found.get(name, rec["time"]), rec["time"])  # the first rank into the loop
    return {**found, **detcore_marks(work_dir)}


def stage_table(sides: Mapping[str, Iterable[Mapping[str, float]]]) -> dict[str, dict]:
    """Per side: the median seconds from spawn to each mark and the median stage durations."""
    out = {}
    for side, runs in sides.items():
        runs = list(runs)
        if runs:
            med = median_marks(runs)
            out[side] = {"since_spawn_s": med, "stage_s": {k: round(v, 3) for k, v in durations(med).items()}}
    return out


def gap_note(table: Mapping[str, Mapping], marks: Sequence[str] = ("connected", "worker_loop", "detcore_log",
                                                                    "iter1", "exit")) -> str:
    """``"launcher/plain s since the command: connected 9.0/7.1, ..."`` for the marks both sides have (pure)."""
    mine = table.get("launcher", {}).get("since_spawn_s", {})
    plain = table.get("plain", {}).get("since_spawn_s", {})
    both = [f"{m} {mine[m]:.1f}/{plain[m]:.1f}" for m in marks if m in mine and m in plain]
    return f"launcher/plain median s since the command: {', '.join(both)}" if both else ""
