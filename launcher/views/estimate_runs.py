"""The estimate of a new run's wall time from the experiment store (reads; the policy is :mod:`launcher.views.estimate`).

Finished runs are the store's succeeded training rows at the same world size that ran in one
launch without a restart, newest first; at most :data:`SCAN_LIMIT` of them are opened (each one's
resolved ``config.yaml`` and ``metrics.jsonl`` in its work dir), so a dry run stays quick on a big
store. A run whose work dir is gone is skipped.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from launcher.views.estimate import Estimate, PastRun, estimate, measure, run_shape, scaled_config
from launcher.views.metrics import read_history, trained_config
from launcher.spec import JobSpec, Mode, worker_from_dict
from launcher.store import Experiment, ExperimentStore

logger = logging.getLogger(__name__)
SCAN_LIMIT = 50


def past_runs(store: ExperimentStore, world_size: int) -> list[PastRun]:
    """The measured finished runs at ``world_size`` workers, newest first (none, and nothing created, without
    a store: a dry run leaves no ``$LAUNCHER_HOME`` behind)."""
    if not store.path.exists():
        return []
    rows = store.conn.execute(
        "SELECT id, work_dir, started, ended, resources, spec FROM experiments WHERE state = 'succeeded' "
        "AND mode = 'train' AND world_size = ? AND restarts = 0 AND history = '[]' AND started IS NOT NULL "
        "AND ended IS NOT NULL ORDER BY ended DESC LIMIT ?", (int(world_size), SCAN_LIMIT)).fetchall()
    runs = []
    for row in rows:
        cfg = trained_config(row["work_dir"])
        if cfg is None:
            continue
        resources, spec = json.loads(row["resources"] or "{}"), json.loads(row["spec"] or "{}")
        worker = worker_from_dict(spec)
        shape = run_shape(cfg, world_size, int(resources.get("gpus") or 0), worker.amp, worker.validate)
        measured = shape and measure(row["id"], shape, row["ended"] - row["started"], read_history(row["work_dir"]))
        if measured:
            runs.append(measured)
    return runs


def estimate_for_spec(store: ExperimentStore, spec: JobSpec, cfg: Mapping[str, Any],
                      measured: dict[int, list[PastRun]] | None = None) -> Estimate:
    """The wall time of ``spec``'s run (``cfg``: its loaded config, before the schedule scaling the spec
    predicts) from the finished runs in ``store`` that resemble it. ``measured``: the runs read so far, by
    world size, kept there for the next call (a sweep reads the store once)."""
    if spec.mode is not Mode.TRAIN:
        return Estimate(None, (), "estimates are made for training runs")
    changes = [{"key": c.key, "new": c.new} for c in spec.scaling.changes] if spec.scaling else []
    shape = run_shape(scaled_config(cfg, changes), spec.world_size, spec.resources.gpus, spec.worker.amp,
                      spec.worker.validate)
    if shape is None:
        return Estimate(None, (), "the config's runner gives no max_iters or max_epochs")
    measured = {} if measured is None else measured
    if spec.world_size not in measured:
        measured[spec.world_size] = past_runs(store, spec.world_size)
    past = measured[spec.world_size]
    return estimate(shape, past, checked=len(past))


def estimate_started(store: ExperimentStore, exp: Experiment) -> Estimate | None:
    """The whole wall time of ``exp``, a started run that has not measured its own speed yet, from the finished
    runs that resemble it: its resolved ``config.yaml`` once its trainer has written it, else its config and
    overrides with the scaling the submit predicted. None when neither can be read."""
    if exp.mode != Mode.TRAIN.value:
        return None
    spec = exp.spec_dict
    cfg = trained_config(exp.work_dir)
    if cfg is None:
        from detcore.config import load_config
        from detcore.errors import DetcoreError

        try:
            cfg = load_config(spec.get("config", exp.config), spec.get("overrides") or (), import_custom=False)
        except (DetcoreError, OSError):
            return None
        cfg = scaled_config(cfg, (json.loads(exp.scaling) if exp.scaling else {}).get("changes") or [])
    worker = worker_from_dict(spec)
    shape = run_shape(cfg, exp.world_size, int(json.loads(exp.resources or "{}").get("gpus") or 0), worker.amp,
                      worker.validate)
    if shape is None:
        return None
    return estimate(shape, [p for p in past_runs(store, exp.world_size) if p.id != exp.id])
