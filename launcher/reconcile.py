"""Keep store rows honest: ask each non-terminal experiment's backend how it is doing.

Called whenever rows are read (``list``, ``status``, following a job). Terminal rows are
never touched, so reading 10,000 finished experiments costs nothing here. A backend that is
not importable leaves its rows as they are.
"""
from __future__ import annotations

import time
from typing import Iterable

from launcher.errors import LauncherError
from launcher.spec import JobHandle, JobState, JobStatus
from launcher.store import Experiment, ExperimentStore

SUBMIT_TIMEOUT_S = 120.0


def handle_of(exp: Experiment) -> JobHandle:
    return JobHandle(exp.id, exp.backend, exp.backend_job_id, tuple(sorted(exp.extra.items())))


def _differs(exp: Experiment, st: JobStatus) -> bool:
    return (st.state is not exp.state or st.restarts != exp.restarts or (st.reason and st.reason != exp.reason)
            or (st.ports and list(st.ports) != exp.port_list) or (st.exit_code is not None
                                                                    and st.exit_code != exp.exit_code))


def refresh(store: ExperimentStore, experiments: Iterable[Experiment], backends: dict | None = None) -> list[Experiment]:
    """The given rows, with each non-terminal one reconciled against its backend (and re-read if it changed)."""
    from launcher.backends import get_backend

    backends = {} if backends is None else backends
    out = []
    for exp in experiments:
        if exp.state.is_terminal():
            out.append(exp)
            continue
        if not exp.backend_job_id:
            if time.time() - exp.created > SUBMIT_TIMEOUT_S:
                store.record_status(exp.id, JobStatus(JobState.FAILED, reason="submission never completed (the "
                                                      "submitting process died before the backend took the job)"))
                exp = store.get(exp.id)
            out.append(exp)
            continue
        try:
            if exp.backend not in backends:
                backends[exp.backend] = get_backend(exp.backend, store.home)
            st = backends[exp.backend].status(handle_of(exp))
        except LauncherError:
            out.append(exp)
            continue
        if _differs(exp, st):
            store.record_status(exp.id, st)
            if st.state.is_terminal():
                store.record_work_dir_metrics(exp.id, exp.work_dir)
            exp = store.get(exp.id)
        out.append(exp)
    return out
