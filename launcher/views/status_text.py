"""``launcher status ID`` as plain text: one ``key: value`` line each, no Python reprs, control characters
escaped (pure)."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from launcher.views.listing import duration_text, lr_text
from launcher.views.printable import printable
from launcher.store import Experiment

if TYPE_CHECKING:
    from launcher.views.estimate import Estimate


def plain(value: Any) -> str:
    """A value as a person reads it: ``-`` for nothing, ``k=v, k=v`` for a mapping, ``a, b`` for a list,
    numbers in their shortest form."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value)
    return str(value)


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def eta_text(exp: Experiment, estimate: Estimate | None = None, now: float | None = None) -> str | None:
    """A running job's time left, from its newest progress line (``eta_s`` in ``metrics.jsonl``, the ETA the
    line shows): ``0:04:37 (at iteration 120)``; before it is measured, ``estimating``, with what is left of
    ``estimate`` (its whole wall time from finished runs) when there is one. None when not running."""
    if exp.state.value not in ("running", "restarting") or exp.mode == "test":
        return None
    metrics = json.loads(exp.last_metrics or "{}")
    eta = metrics.get("eta_s")
    if isinstance(eta, (int, float)) and not isinstance(eta, bool):
        return f"{duration_text(eta)} (at iteration {metrics.get('iter', exp.last_iter)})"
    if estimate is None or estimate.seconds is None:
        return "estimating"
    ran = (time.time() if now is None else now) - (exp.started or exp.created)
    return (f"estimating; about {duration_text(max(0.0, estimate.seconds - ran))} by the estimate from finished "
            f"run{'s' * (len(estimate.runs) != 1)} {', '.join(estimate.runs)}")


def status_lines(exp: Experiment, now: float | None = None, weights: list[dict] | None = None,
                 estimate: Estimate | None = None) -> list[str]:
    """The lines ``launcher status`` prints for ``exp``; ``weights``: what its run started from (the
    worker's ``weights`` fact: one ``weights:`` line each); ``estimate``: its wall time from finished runs,
    shown until the run has measured its own ETA."""
    now = time.time() if now is None else now
    scaling = json.loads(exp.scaling) if exp.scaling else None
    base_lr = scaling.get("base_lr") if scaling else None
    if exp.mode == "test":
        progress = "test job"
    elif exp.max_epoch is not None:
        progress = f"epoch {json.loads(exp.last_metrics or '{}').get('epoch') or 0} of {exp.max_epoch}"
    else:
        progress = f"iteration {exp.last_iter or 0}" + (f" of {exp.max_iter}" if exp.max_iter is not None else "")
    best = json.loads(exp.best_metrics or "{}")
    backend = exp.backend + (f" (job {exp.backend_job_id})" if exp.backend_job_id else "")
    duration = None if exp.started is None else (exp.ended or now) - exp.started
    fields: list[tuple[str, Any]] = [
        ("id", exp.id), ("name", exp.name),
        ("state", f"{exp.state.value}? (the last known state: {exp.stale})" if exp.stale else exp.state.value),
        ("reason", exp.reason),
        ("exit code", exp.exit_code), ("restarts", exp.restarts), ("backend", backend), ("mode", exp.mode),
        ("config", exp.config), ("overrides", exp.spec_dict.get("overrides")), ("grid", exp.grid_values),
        ("config hash", exp.config_hash), ("work dir", exp.work_dir), ("world size", exp.world_size),
        ("total batch", exp.total_batch), ("lr", lr_text(base_lr, exp.lr)), ("progress", progress),
        ("eta", eta_text(exp, estimate, now)),
        ("duration", duration_text(duration)), ("loss", exp.last_loss), ("AP (newest)", exp.last_ap),
        ("best AP", None if exp.best_ap is None else f"{exp.best_ap:.6g}"
                    + (f" at iteration {best['iter']}" if best.get("iter") is not None else "")),
        ("metrics", json.loads(exp.last_metrics or "{}")), ("tags", exp.tag_list), ("note", exp.note),
        ("ports", exp.port_list), ("resources", json.loads(exp.resources or "{}")),
        ("sweep", exp.sweep), ("earlier launches", len(json.loads(exp.history or "[]")) or None),
    ]
    lines = [f"{key}: {printable(plain(value))}" for key, value in fields]
    if scaling:
        from launcher.scaling import ScaledSchedule

        lines.append(f"scaling: {ScaledSchedule.from_dict(scaling).describe()}")
    for record in weights or []:
        lines.append(f"weights: {record.get('key')}: {record.get('weights') or record.get('given')} "
                     f"({record.get('file')}, sha256 {str(record.get('sha256'))[:16]})")
    lines += [f"{key}: {_when(getattr(exp, key))}" for key in ("created", "started", "ended")]
    return lines


def ended_line(exp: Experiment) -> str:
    """The line a sweep prints as one of its jobs ends: ``1a2b3c4d  lr=0.01 seed=1  succeeded  best AP 0.432
    0:01:47`` (a failed job adds its reason)."""
    from launcher.views.listing import grid_headers

    grid = exp.grid_values
    params = " ".join(f"{h}={v}" for h, v in zip(grid_headers(list(grid)), grid.values())) if grid else exp.name
    ap = exp.best_ap if exp.best_ap is not None else exp.last_ap
    parts = [exp.id, params, exp.state.value, "best AP " + ("-" if ap is None else f"{ap:.3f}")]
    if exp.started is not None and exp.ended is not None:
        parts.append(duration_text(exp.ended - exp.started))
    if exp.reason and exp.state.value != "succeeded":
        parts.append(exp.reason)
    return printable("  ".join(parts))
