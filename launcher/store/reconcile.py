"""The one writer of observed state: derive each non-terminal row from its backend's report.

Called whenever rows are read (``list``, ``status``, following a job, ``resume``, ``cancel``).
For each non-terminal experiment it asks the backend (``status``: the monitor's files and
liveness for local and Ray, squeue/sacct for Slurm) and reads the newest metrics from the work
dir and the scaling the worker applied (its ``scaling`` fact), and writes what changed. Terminal rows are never touched, so reading 10,000 finished
experiments costs nothing here. A backend that is not importable leaves its rows as they are.
When the store cannot be written (a full disk, a read-only home, a lock held too long), the derived
rows are still returned, so a reader always sees the truth even when it cannot save it. When the
backend cannot be asked (slurmctld down, Ray not importable), the row keeps its last known state
and says why in ``Experiment.stale``; the commands mark it (``running?``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from typing import Iterable

from detcore.contract import run_dir
from detcore.facts import Scaling, Weights, read_facts
from launcher.errors import LauncherError
from launcher.views.metrics import LastMetrics, ap_of, best_evaluation, read_history, read_last_metrics, read_test_metrics, \
    schedule_length
from launcher.spec import JobHandle, JobState, JobStatus
from launcher.store import Experiment, ExperimentStore, StoreReadOnly

logger = logging.getLogger(__name__)
SUBMIT_TIMEOUT_S = 300.0  # longer than any backend command may take (sbatch: 120 s)


def handle_of(exp: Experiment) -> JobHandle:
    return JobHandle(exp.id, exp.backend, exp.backend_job_id, tuple(sorted(exp.extra.items())))


def _differs(exp: Experiment, st: JobStatus) -> bool:
    return (st.state is not exp.state or st.restarts != exp.restarts or (st.reason and st.reason != exp.reason)
            or (st.ports and list(st.ports) != exp.port_list) or (st.exit_code is not None
                                                                    and st.exit_code != exp.exit_code))


def observed_metrics(exp: Experiment, schedule_written: bool = True) -> dict | None:
    """What the work dir says now, as :meth:`ExperimentStore.record_metrics` arguments; None when nothing
    changed. A training run: the newest loss/AP (the tail of ``metrics.jsonl``), the best evaluation (the
    whole file, read only when a new evaluation appeared) and the schedule length (``config.yaml``, once,
    and only when ``schedule_written``: after a resume the work dir's ``config.yaml`` is the previous
    launch's, scaled for its world size, until this launch's trainer writes its own).
    A test job: its ``test_metrics.json``."""
    if exp.mode == "test":
        values = read_test_metrics(exp.work_dir)
        if values is None or ap_of(values) == exp.last_ap and exp.best_ap is not None:
            return None
        ap = ap_of(values)
        return dict(last_iter=None, loss=None, ap=ap, metrics=values, best=values, best_ap=ap)
    last: LastMetrics = read_last_metrics(exp.work_dir)
    max_iter = max_epoch = None
    if exp.max_iter is None and exp.max_epoch is None and schedule_written:
        max_iter, max_epoch = schedule_length(exp.work_dir)
    if last.empty and max_iter is None and max_epoch is None:
        return None
    if (last.iter, last.loss, last.ap) == (exp.last_iter, exp.last_loss, exp.last_ap) and max_iter is None \
            and max_epoch is None:
        return None
    best = None
    if last.ap is not None and (last.ap != exp.last_ap or exp.best_ap is None):
        best = best_evaluation(read_history(exp.work_dir))
    return dict(last_iter=last.iter, loss=last.loss, ap=last.ap, metrics=last.values, best=best,
                best_ap=ap_of(best) if best else None, max_iter=max_iter, max_epoch=max_epoch)


def weights_fact(exp: Experiment) -> list[dict] | None:
    """The weights the worker started from (its ``weights`` fact: name, file, sha256 each), or None."""
    for rec in reversed(read_facts(run_dir(exp.work_dir, exp.run_id or "default"))):
        if isinstance(rec, Weights) and rec.weights is not None:
            return [dict(w) for w in rec.weights]
    return None


def scaling_fact(exp: Experiment) -> dict | None:
    """The newest ``scaling`` fact of the row's current launch (written by rank 0 of the worker), or None."""
    for rec in reversed(read_facts(run_dir(exp.work_dir, exp.run_id or "default"))):
        if isinstance(rec, Scaling) and rec.scaling is not None:
            return dict(rec.scaling)
    return None


def _derived(exp: Experiment, st: JobStatus | None, metrics: dict | None, scaling: dict | None = None) -> Experiment:
    """The row as it would read after the writes (for a store that cannot be written)."""
    changes = {}
    if st is not None:
        changes.update(state=st.state, restarts=st.restarts, reason=st.reason or exp.reason,
                       exit_code=st.exit_code if st.exit_code is not None else exp.exit_code,
                       ports=json.dumps(list(st.ports)) if st.ports else exp.ports,
                       started=exp.started or st.started, ended=st.ended if st.state.is_terminal() else None)
    if metrics is not None:
        changes.update(last_iter=metrics["last_iter"], last_loss=metrics["loss"], last_ap=metrics["ap"],
                       last_metrics=json.dumps(metrics["metrics"], sort_keys=True))
        if metrics.get("best") is not None:
            changes.update(best_ap=metrics["best_ap"], best_metrics=json.dumps(metrics["best"], sort_keys=True))
        changes.update({k: metrics[k] for k in ("max_iter", "max_epoch") if metrics.get(k) is not None})
    if scaling is not None:
        changes.update(total_batch=scaling.get("total_batch"), lr=scaling.get("lr"),
                       scaling=json.dumps(scaling))
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
        except LauncherError as exc:
            return dataclasses.replace(exp, stale=str(exc))
    scaling = scaling_fact(exp) if st.state is not JobState.PENDING else None
    metrics = observed_metrics(exp, schedule_written=scaling is not None) if st.state is not JobState.PENDING \
        else None
    try:
        if _differs(exp, st):
            store.record_status(exp.id, st, run_id=exp.run_id)
        if metrics is not None:
            store.record_metrics(exp.id, **metrics)
        if scaling is not None and (json.loads(exp.scaling) if exp.scaling else None) != scaling:
            store.record_scaling(exp.id, scaling)
        return store.get(exp.id)
    except StoreReadOnly:
        store.note_read_only("; showing what the jobs report")
        return _derived(exp, st, metrics, scaling)
    except sqlite3.Error as exc:
        logger.warning("cannot update the experiment store (%s); showing what the job reports", exc)
        return _derived(exp, st, metrics, scaling)


def refresh(store: ExperimentStore, experiments: Iterable[Experiment], backends: dict | None = None) -> list[Experiment]:
    """The given rows, with each non-terminal one derived from its backend's report."""
    backends = {} if backends is None else backends
    return [exp if exp.state.is_terminal() else _observe(store, exp, backends) for exp in experiments]
