"""The newest loss and AP of a run, read from the tail of its ``metrics.jsonl``.

detcore's trainer appends one JSON object per line: ``{"mode": "train", "iter", "loss", "lr", ...}``
and ``{"mode": "val", "iter", "bbox_AP", ...}``. Only the last 64 KiB are read, so this is
cheap on long runs; a half-written last line is skipped.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from detcore.contract import WorkDir, read_jsonl
from launcher.views.tail import tail_lines

TAIL_BYTES = 64 * 1024
AP_KEYS = ("bbox_AP", "segm_AP", "mAP", "AP")
TIMING_KEYS = frozenset({"eval_time"})  # how long an evaluation took: read by :mod:`launcher.views.estimate`, not a metric


@dataclass(frozen=True)
class LastMetrics:
    iter: int | None = None
    epoch: int | None = None
    loss: float | None = None
    ap: float | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.iter is None and self.ap is None


def read_last_metrics(work_dir: str | os.PathLike) -> LastMetrics:
    """Newest training iteration/loss and newest evaluation AP in ``work_dir/metrics.jsonl``."""
    train: dict[str, Any] | None = None
    val: dict[str, Any] | None = None
    for line in reversed(tail_lines(WorkDir(work_dir).metrics, TAIL_BYTES)):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if train is None and record.get("mode") == "train":
            train = record
        elif val is None and record.get("mode") == "val":
            val = record
        if train is not None and val is not None:
            break
    if train is None and val is None:
        return LastMetrics()
    ap = ap_of(val) if val else None
    values: dict[str, Any] = {}
    if train:
        values.update({k: v for k, v in train.items() if k in ("loss", "lr", "iter", "epoch", "eta_s")})
    if val:
        values.update({k: v for k, v in val.items()
                       if isinstance(v, (int, float)) and k not in ("iter", "epoch") and k not in TIMING_KEYS})
    return LastMetrics(iter=(train or val or {}).get("iter"), epoch=(train or val or {}).get("epoch"),
                       loss=train.get("loss") if train else None, ap=ap, values=values)


def ap_of(record: dict[str, Any]) -> float | None:
    """The headline AP of an evaluation record (the first of ``AP_KEYS`` it has), or None."""
    return next((float(record[k]) for k in AP_KEYS if isinstance(record.get(k), (int, float))), None)


def read_history(work_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of ``work_dir/metrics.jsonl`` in order (none when the file is missing); bad lines skipped."""
    return read_jsonl(WorkDir(work_dir).metrics)


def best_evaluation(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation record with the highest AP (its numeric values, with ``iter``), or None without one."""
    evals = [r for r in records if r.get("mode") == "val" and ap_of(r) is not None]
    if not evals:
        return None
    best = max(evals, key=lambda r: ap_of(r))  # the first of equal APs: the earliest checkpoint reaching it
    return {k: v for k, v in best.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in TIMING_KEYS}


def read_test_metrics(work_dir: str | os.PathLike) -> dict[str, float] | None:
    """A test job's ``work_dir/test_metrics.json`` (written by ``detcore test --work-dir``), or None."""
    try:
        data = json.loads(WorkDir(work_dir).test_metrics.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def trained_config(work_dir: str | os.PathLike) -> dict | None:
    """The config the run trained with: ``work_dir/config.yaml``, which rank 0 writes at start (after any
    LR/schedule scaling); None before it exists or when it is not a readable YAML mapping."""
    import yaml

    try:
        cfg = yaml.load(WorkDir(work_dir).config.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None


def schedule_length(work_dir: str | os.PathLike) -> tuple[int | None, int | None]:
    """``(max_iters, max_epochs)`` from the :func:`trained_config`, one of them None; ``(None, None)``
    before it exists."""
    cfg = trained_config(work_dir)
    runner = cfg.get("runner") if cfg else None
    if not isinstance(runner, dict):
        return None, None
    if runner.get("type", "EpochBasedRunner") == "EpochBasedRunner":  # detcore's default runner
        value = runner.get("max_epochs")
        return None, value if isinstance(value, int) and not isinstance(value, bool) else None
    value = runner.get("max_iters")
    return (value if isinstance(value, int) and not isinstance(value, bool) else None), None
