"""The newest loss and AP of a run, read from the tail of its ``metrics.jsonl``.

detcore's trainer appends one JSON object per line: ``{"mode": "train", "iter", "loss", "lr", ...}``
and ``{"mode": "val", "iter", "bbox_AP", ...}``. Only the last 64 KiB are read, so this is
cheap on long runs; a half-written last line is skipped.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.tail import tail_lines

TAIL_BYTES = 64 * 1024
AP_KEYS = ("bbox_AP", "segm_AP", "mAP", "AP")


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
    for line in reversed(tail_lines(Path(work_dir) / "metrics.jsonl", TAIL_BYTES)):
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
    ap = next((val[k] for k in AP_KEYS if val and isinstance(val.get(k), (int, float))), None)
    values: dict[str, Any] = {}
    if train:
        values.update({k: v for k, v in train.items() if k in ("loss", "lr", "iter", "epoch")})
    if val:
        values.update({k: v for k, v in val.items() if isinstance(v, (int, float)) and k not in ("iter", "epoch")})
    return LastMetrics(iter=(train or val or {}).get("iter"), epoch=(train or val or {}).get("epoch"),
                       loss=train.get("loss") if train else None, ap=ap, values=values)
