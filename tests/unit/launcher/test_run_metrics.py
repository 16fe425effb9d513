"""The newest loss/AP from a metrics.jsonl tail, robust to a half-written last line."""
from __future__ import annotations

import json

from launcher.views.metrics import TAIL_BYTES, read_last_metrics


def test_last_train_and_val_records(tmp_path):
    lines = [{"mode": "train", "iter": i, "epoch": 0, "loss": 1.0 / i, "lr": 0.02} for i in range(1, 2000)]
    lines.insert(500, {"mode": "val", "iter": 500, "bbox_AP": 0.3})
    lines.append({"mode": "val", "iter": 1999, "bbox_AP": 0.61, "bbox_AP50": 0.9, "bbox_AP_rectangle": 0.5})
    text = "\n".join(json.dumps(r) for r in lines) + "\n" + '{"mode": "train", "iter": 20'  # torn line
    (tmp_path / "metrics.jsonl").write_text(text)
    assert len(text) > TAIL_BYTES
    m = read_last_metrics(tmp_path)
    assert (m.iter, m.ap) == (1999, 0.61)
    assert abs(m.loss - 1 / 1999) < 1e-12
    assert m.values["bbox_AP_rectangle"] == 0.5 and m.values["lr"] == 0.02


def test_missing_or_empty(tmp_path):
    assert read_last_metrics(tmp_path).empty
    (tmp_path / "metrics.jsonl").write_text("")
    assert read_last_metrics(tmp_path).empty
