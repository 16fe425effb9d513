"""The benchmark harness: rows, goals, medians and spreads, the machine description, JSON, the table.

A benchmark module exposes ``TITLE`` (one line), ``run(ctx: Context) -> Result`` and nothing
else the harness relies on. It reports figures as :class:`Row` values; a figure measured
several times is summarised by :func:`summarize` (median, min, max, quartiles). Comparisons
carry the ratio measured in the same run and, where the issue sets one, a :class:`Goal`.
A benchmark that cannot run on this machine (a backend not written yet, a cluster that is
not up) raises :class:`NotAvailable`; the harness turns that into a row, never a crash.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent


class NotAvailable(Exception):
    """This benchmark (or one of its figures) cannot run here; the message says why."""


@dataclass(frozen=True)
class Goal:
    """A target from issue 8: ``on`` is ``ratio`` or ``value``, compared with ``op`` to ``target``."""

    on: str
    op: str
    target: float
    unit: str = ""

    _OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
            ">": lambda a, b: a > b}

    def __post_init__(self) -> None:
        if self.on not in ("ratio", "value") or self.op not in self._OPS:
            raise ValueError(f"bad goal {self.on} {self.op} {self.target}")

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.on == "ratio" else value
        if x is None:
            return None
        return bool(self._OPS[self.op](x, self.target))

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{'ratio ' if self.on == 'ratio' else ''}{self.op} {self.target:g}{unit}"


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements of one figure."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    n: int
    samples: tuple[float, ...]


def summarize(samples: Sequence[float]) -> Summary:
    """Median, min/max and quartiles (``statistics.quantiles``, inclusive) of ``samples``."""
    xs = sorted(float(s) for s in samples)
    if not xs:
        raise ValueError("summarize() needs at least one sample")
    q1, q3 = (statistics.quantiles(xs, n=4, method="inclusive")[i] for i in (0, 2)) if len(xs) > 1 else (xs[0], xs[0])
    return Summary(statistics.median(xs), xs[0], xs[-1], q1, q3, len(xs), tuple(float(s) for s in samples))


@dataclass
class Row:
    """One line of the table. ``value`` is the median where ``summary`` is given."""

    name: str
    value: float | None
    unit: str = ""
    summary: Summary | None = None
    goal: Goal | None = None
    ratio: float | None = None
    ratio_summary: Summary | None = None
    note: str = ""
    met: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.goal is not None and self.met is None:
            self.met = self.goal.met(self.value, self.ratio)

    def to_json(self) -> dict:
        spread = None
        if self.summary is not None:
            s = self.summary
            spread = {"min": s.min, "max": s.max, "q1": s.q1, "q3": s.q3, "n": s.n, "samples": list(s.samples)}
        ratio_spread = None
        if self.ratio_summary is not None:
            r = self.ratio_summary
            ratio_spread = {"min": r.min, "max": r.max, "n": r.n, "samples": list(r.samples)}
        return {"name": self.name, "value": self.value, "unit": self.unit, "spread": spread,
                "goal": str(self.goal) if self.goal else None, "ratio": self.ratio, "ratio_spread": ratio_spread,
                "met": self.met, "note": self.note}


def measured(name: str, samples: Sequence[float], unit: str, **kw: Any) -> Row:
    """A row whose value is the median of ``samples``."""
    s = summarize(samples)
    return Row(name, s.median, unit, summary=s, **kw)


def compared(name: str, samples: Sequence[float], baseline: Sequence[float], unit: str, goal: Goal | None = None,
             pairwise: bool = True, **kw: Any) -> Row:
    """A row for ``samples`` with ``ratio = median(samples) / median(baseline)``.

    With ``pairwise`` (the runs were interleaved, sample i next to baseline i) the ratio's
    spread is that of the per-pair ratios.
    """
    s, b = summarize(samples), summarize(baseline)
    ratio = s.median / b.median if b.median else None
    pairs = None
    if pairwise and len(samples) == len(baseline) and len(samples) > 1 and all(baseline):
        pairs = summarize([x / y for x, y in zip(samples, baseline)])
    return Row(name, s.median, unit, summary=s, goal=goal, ratio=ratio, ratio_summary=pairs, **kw)


def not_available(name: str, reason: str) -> Row:
    return Row(name, None, note=f"not available: {reason}")


@dataclass
class Result:
    """What a benchmark returns: its rows, the settings it ran with, and any details worth keeping."""

    rows: list[Row]
    settings: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


@dataclass
class Context:
    """Shared by the benchmarks of one invocation."""

    quick: bool
    out_dir: Path
    tmp: Path
    start_clusters: bool = False  # startup may start the local Slurm/Ray test clusters (never stops them)
    shared: dict = field(default_factory=dict)  # figures one benchmark leaves for a later one

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    def workdir(self, name: str) -> Path:
        """A fresh directory under this run's temporary root."""
        path = self.tmp / name
        n = 1
        while path.exists():
            n += 1
            path = self.tmp / f"{name}.{n}"
        path.mkdir(parents=True)
        return path


def interleave(fns: Mapping[str, Callable[[], float | None]], repeats: int, warmup: int = 0) -> dict[str, list[float]]:
    """Call each function ``warmup`` then ``repeats`` times, alternating which goes first.

    A function returns its own measurement (seconds, images/s...) or None to be timed here
    (wall seconds of the call). Alternating spreads slow drifts of a shared machine evenly.
    """
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + repeats):
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            t0 = time.perf_counter()
            got = fns[n]()
            value = time.perf_counter() - t0 if got is None else float(got)
            if i >= warmup:
                out[n].append(value)
    return out


# ---- machine description -------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpus() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None


def machine_description() -> dict:
    """CPU model and cores, memory, OS, Python/torch/torchvision versions, GPUs, load at start."""
    import psutil
    import torch
    import torchvision

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    cuda = []
    if torch.cuda.is_available():
        cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": affinity,
        "memory_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": cuda,
        "nvidia_smi": _gpus(),
        "gpu": ", ".join(cuda) if cuda else "none",
        "load_average_at_start": list(os.getloadavg()),
        "git_commit": _git_commit(),
    }


# ---- output ----------------------------------------------------------------------------------

def write_result(path: Path, name: str, title: str, result: Result | None, machine: dict, elapsed_s: float,
                 quick: bool, error: str | None = None, note: str = "") -> None:
    """``path`` gets one JSON document for benchmark ``name`` (written to a temp file, then renamed)."""
    doc = {
        "benchmark": name,
        "title": title,
        "mode": "quick" if quick else "full",
        "command": "python -m benchmarks" + (" --quick" if quick else "") + f" --only {name}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(elapsed_s, 2),
        "note": note,
        "machine": machine,
        "load_average_at_end": list(os.getloadavg()),
        "settings": result.settings if result else {},
        "rows": [r.to_json() for r in result.rows] if result else [],
        "details": result.details if result else {},
        "error": error,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return repr(obj)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 1000:
        return f"{x:,.0f}"
    if mag >= 100:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


def format_table(results: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], markdown: bool = False) -> str:
    """One table over all benchmarks from rows as :meth:`Row.to_json` gives them."""
    header = ["benchmark", "figure", "value", "spread (min..max)", "ratio", "goal", "met", "note"]
    lines = []
    for bench, rows in results:
        for r in rows:
            value = f"{_fmt(r['value'])} {r['unit']}".strip() if r["value"] is not None else "-"
            sp = r.get("spread")
            spread = "" if sp is None else ("n=1" if sp["n"] < 2 else f"{_fmt(sp['min'])}..{_fmt(sp['max'])} (n={sp['n']})")
            ratio = ""
            if r.get("ratio") is not None:
                ratio = _fmt(r["ratio"])
                rs = r.get("ratio_spread")
                if rs:
                    ratio += f" ({_fmt(rs['min'])}..{_fmt(rs['max'])})"
            met = {True: "yes", False: "NO", None: ""}[r.get("met")]
            lines.append([bench, r["name"], value, spread, ratio, r.get("goal") or "", met, r.get("note") or ""])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the note runs on freely
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def log(msg: str) -> None:
    """Progress for the person watching (stderr, so the table on stdout stays clean)."""
    print(f"[benchmarks {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
