"""`launcher compare` text: a row per differing key under each experiment's id, numbers to 4 significant digits,
lines cut to the terminal; `launcher export` times as ISO 8601 dates."""
from __future__ import annotations

import json
from datetime import datetime

from launcher.views.compare import comparison, comparison_lines, export_rows, flatten
from launcher.spec import JobSpec, JobState, Resources
from launcher.store import Experiment, experiment_from_spec

NOW = 1_800_000_000.0
LONG = "faster_rcnn_r50_fpn_1x_coco_with_a_very_long_name-lr={}-samples_per_gpu=2"


def row(i: int, lr: float) -> Experiment:
    spec = JobSpec(id=f"{i:08x}", name=LONG.format(lr), config="/c.yaml", work_dir=f"/w/{i}", cwd="/",
                   resources=Resources(nproc=1))
    return Experiment(**{**experiment_from_spec(spec, JobState.SUCCEEDED, now=NOW),
                         "state": JobState.SUCCEEDED, "backend_job_id": "", "backend_extra": "{}", "exit_code": 0,
                         "reason": "", "restarts": 0, "ports": "[]", "started": NOW, "ended": NOW + 107.25,
                         "last_iter": 4, "last_loss": 1.0, "last_ap": 0.1,
                         "last_metrics": json.dumps({"bbox_AP": 0.123456789 * i, "loss": 2.0791708}),
                         "best_metrics": json.dumps({"bbox_AP": 0.2345678 * i, "iter": 2})})


def four_points():
    lrs = [0.01, 0.02, 0.04, 0.08]
    exps = [row(i, lr) for i, lr in enumerate(lrs, start=1)]
    configs = [flatten({"optimizer": {"lr": lr, "momentum": 0.9}, "seed": i, "model": {"anchor_scales": [8]}})
               for i, lr in enumerate(lrs)]
    return exps, configs


def test_compare_is_a_row_per_differing_key_under_short_ids_with_4_significant_digits():
    exps, configs = four_points()
    lines = comparison_lines(comparison(exps, configs))
    assert lines[0] == f"00000001  succeeded  {LONG.format(0.01)}"  # who each id is, once, above the table
    table = lines[lines.index("") + 1:]
    assert table[0].split() == ["KEY", "00000001", "00000002", "00000003", "00000004"]
    keys = [line.split()[0] for line in table if line and not line.startswith("[")]
    assert keys.count("optimizer.lr") == 1 and "optimizer.momentum" not in keys and "seed" in keys
    ap = next(line for line in table if line.startswith("bbox_AP")).split()
    assert ap[1:] == ["0.1235", "0.2469", "0.3704", "0.4938"]
    assert max(map(len, table)) < 80


def test_compare_fits_a_narrow_terminal():
    exps, configs = four_points()
    configs = [{**c, "data.train.pipeline": [{"type": "Resize", "img_scale": [1333, 800 + i]}]}
               for i, c in enumerate(configs)]
    data = comparison(exps, configs)
    assert max(map(len, comparison_lines(data))) > 80
    narrow = comparison_lines(data, width=80)
    assert max(map(len, narrow)) <= 80 and "…" in "".join(narrow)


def test_export_times_are_iso_dates():
    exps, configs = four_points()
    rows = export_rows(exps, configs)
    created = datetime.fromisoformat(rows[0]["created"])
    assert created.timestamp() == NOW and created.tzinfo is not None
    assert datetime.fromisoformat(rows[0]["ended"]).timestamp() == int(NOW + 107.25) and rows[0]["duration_s"] == 107.25
