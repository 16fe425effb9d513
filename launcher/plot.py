"""``launcher plot``: one metric of several experiments as curves on one figure, x = iteration.

The points come from each work dir's ``metrics.jsonl`` (train records every logging interval,
val records at each evaluation; see :mod:`launcher.metrics`). matplotlib draws with its Agg
backend (no display needed), and the PNG is written to a temporary file and renamed into place.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from launcher.errors import LauncherError
from launcher.metrics import read_history

_NOT_METRICS = ("iter", "epoch", "mode")


def curve(records: Sequence[dict[str, Any]], metric: str) -> tuple[list[int], list[float]]:
    """``(iterations, values)`` of ``metric`` in the records that have both (pure). A resumed run that
    logged an iteration twice keeps the newer value."""
    points: dict[int, float] = {}
    for rec in records:
        value, it = rec.get(metric), rec.get("iter")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(it, int):
            points[it] = float(value)
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def available_metrics(histories: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """Every numeric key any record has (except iter/epoch), sorted."""
    return sorted({k for records in histories for rec in records for k, v in rec.items()
                   if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)})


def plot_curves(labels: Sequence[str], work_dirs: Sequence[str], metric: str, out: str | os.PathLike,
                title: str | None = None) -> list[int]:
    """Draw ``metric`` of each work dir as a labelled curve into the PNG ``out``; the number of points per curve.
    An unknown metric (no experiment has it) raises, listing the metrics the experiments have."""
    histories = [read_history(d) for d in work_dirs]
    curves = [curve(h, metric) for h in histories]
    if not any(xs for xs, _ in curves):
        names = available_metrics(histories)
        raise LauncherError(f"--metric {metric!r}: none of these experiments logged it; "
                            + (f"choose one of {', '.join(names)}" if names else
                               "they have no metrics.jsonl records yet"))
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise LauncherError(f"--out {str(out)!r}: expected a file name ending in .png")
    if not out.parent.is_dir():
        raise LauncherError(f"--out {str(out)!r}: folder {out.parent} does not exist; create it first")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        for label, (xs, ys) in zip(labels, curves):
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration")
        ax.set_ylabel(metric)
        ax.set_title(title or metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, format="png")
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            os.unlink(tmp)
            raise
    finally:
        plt.close(fig)
    return [len(xs) for xs, _ in curves]
