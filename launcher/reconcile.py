"""The one writer of observed state: derive each non-terminal row from its backend's report.

Called whenever rows are read (``list``, ``status``, following a job, ``resume``, ``cancel``).
For each non-terminal experiment it asks the backend (``status``: the monitor's files and
liveness for local and Ray, squeue/sacct for Slurm) and reads the newest metrics from the work
dir and the scaling the worker applied (its ``scaling`` fact), and writes what changed. Terminal rows are never touched, so reading 10,000 finished
experiments costs nothing here. A backend that is not importable leaves its rows as they are.
When the store cannot be written (a full disk, a lock held too long), the derived rows are
still returned, so a reader always sees the truth even when it cannot save it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from typing import Iterable

from detcore.contract import read_events, run_dir
from launcher.errors import LauncherError
from launcher.metrics import read_last_metrics
from launcher.spec import JobHandle, JobState, JobStatus
from launcher.store import Experiment, ExperimentStore

logger = logging.getLogger(__name__)
SUBMIT_TIMEOUT_S = 300.0  # longer than any backend command may take (sbatch: 120 s)


def handle_of(exp: Experiment) -> JobHandle:
    return JobHandle(exp.id, exp.backend, exp.backend_job_id, tuple(sorted(exp.extra.items())))


def _differs(exp: Experiment, st: JobStatus) -> bool:
    return (st.state is not exp.state or st.restarts != exp.restarts or (st.reason and st.reason != exp.reason)
            or (st.ports and list(st.ports) != exp.port_list) or (st.exit_code is not None
                                                                    and st.exit_code != exp.exit_code))


def scaling_fact(exp: Experiment) -> dict | None:
    """The newest ``scaling`` fact of the row's current launch (written by rank 0 of the worker), or None."""
    for rec in reversed(read_events(run_dir(exp.work_dir, exp.run_id or "default"))):
        if rec.get("event") == "scaling" and isinstance(rec.get("scaling"), dict):
            return rec["scaling"]
    return None


def _derived(exp: Experiment, st: JobStatus | None, metrics, scaling: dict | None = None) -> Experiment:
    """The row as it would read after the writes (for a store that cannot be written)."""
    changes = {}
    if st is not None:
        changes.update(state=st.state, restarts=st.restarts, reason=st.reason or exp.reason,
                       exit_code=st.exit_code if st.exit_code is not None else exp.exit_code,
                       ports=json.dumps(list(st.ports)) if st.ports else exp.ports,
                       started=exp.started or st.started, ended=st.ended if st.state.is_terminal() else None)
    if scaling is not None:
        changes.update(total_batch=scaling.get("total_batch"), lr=scaling.get("lr"),
                       scaling=json.dumps(scaling))
    if metrics is not None and not metrics.empty:
        changes.update(last_iter=metrics.iter, last_loss=metrics.loss, last_ap=metrics.ap,
                       last_metrics=json.dumps(metrics.values, sort_keys=True))
    return dataclasses.replace(exp, **changes)


def _observe(store: ExperimentStore, exp: Experiment, backends: dict) -> Experiment:
    from launcher.backends import get_backend

    if not exp.backend_job_id:
        if time.time() - exp.created <= SUBMIT_TIMEOUT_S:
            return exp
        st = JobStatus(JobState.FAILED, reason="submission never completed (the submitting process died before "
                                               "the backend took the job)")
    else:
        try:
            if exp.backend not in backends:
                backends[exp.backend] = get_backend(exp.backend, store.home)
            st = backends[exp.backend].status(handle_of(exp))
        except LauncherError:
            return exp
    metrics = read_last_metrics(exp.work_dir) if st.state is not JobState.PENDING else None
    scaling = scaling_fact(exp) if st.state is not JobState.PENDING else None
    try:
        if _differs(exp, st):
            store.record_status(exp.id, st, run_id=exp.run_id)
        if metrics is not None and not metrics.empty and (metrics.iter, metrics.loss, metrics.ap) != (
                exp.last_iter, exp.last_loss, exp.last_ap):
            store.record_metrics(exp.id, metrics.iter, metrics.loss, metrics.ap, metrics.values)
        if scaling is not None and (json.loads(exp.scaling) if exp.scaling else None) != scaling:
            store.record_scaling(exp.id, scaling)
        return store.get(exp.id)
    except sqlite3.Error as exc:
        logger.warning("cannot update the experiment store (%s); showing what the job reports", exc)
        return _derived(exp, st, metrics, scaling)


def refresh(store: ExperimentStore, experiments: Iterable[Experiment], backends: dict | None = None) -> list[Experiment]:
    """The given rows, with each non-terminal one derived from its backend's report."""
    backends = {} if backends is None else backends
    return [exp if exp.state.is_terminal() else _observe(store, exp, backends) for exp in experiments]
