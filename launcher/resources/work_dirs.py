"""A launched experiment's claim on its work dir (:mod:`detcore.ownership`), from submit to its end.

``launcher submit`` (and ``sweep``, ``resume``) claims every work dir before anything is
written: a work dir another run holds is one line naming it (exit 2), and so is one that an
active experiment of this store still uses (a Slurm job waiting in the queue has no process
that could keep a claim fresh). Once the backend has the job, the claim is handed on as a
placeholder for the experiment; its monitor (the local supervisor, the Ray driver) takes it
over within a second and refreshes it until the experiment ends, and a Slurm job's rank 0
takes it when the job starts. A restart, requeue or ``launcher resume`` is the same
experiment and continues the claim.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

from detcore.errors import WorkDirError
from detcore.ownership import Claim, Holder, claim, new_holder, placeholder
from launcher.errors import LauncherError
from launcher.spec import JobSpec
from launcher.store import ExperimentStore


def experiment_holder(spec: JobSpec, process: str) -> Holder:
    """This process holding ``spec``'s work dir in the name of its experiment."""
    return new_holder(spec.id, f"launcher experiment {spec.id} ({spec.name}, {spec.backend} backend)", process,
                      launcher=True)


def check_store(store: ExperimentStore, spec: JobSpec) -> None:
    """A LauncherError when another experiment of ``store`` that has not ended uses ``spec.work_dir``."""
    from launcher.store.reconcile import refresh

    same = [e for e in store.list(active=True)
            if e.id != spec.id and os.path.normpath(e.work_dir) == os.path.normpath(spec.work_dir)]
    for exp in refresh(store, same) if same else ():
        if not exp.state.is_terminal():
            raise LauncherError(f"work dir {spec.work_dir} is in use by experiment {exp.id} ({exp.name}, "
                                f"{exp.state.value} on the {exp.backend} backend); wait for it to end, "
                                f"`launcher cancel {exp.id}`, or pass another --work-dir")


@contextlib.contextmanager
def claimed(store: ExperimentStore, specs: Sequence[JobSpec]) -> Iterator[list[Claim]]:
    """Claim each spec's work dir for the ``with`` block, which hands the specs to a backend.

    On an error everything is undone (claims released, work dirs this created removed while
    empty); on success each claim becomes a placeholder for its experiment, which the job's own
    processes take over.
    """
    claims: list[Claim] = []
    created: list[Path] = []
    try:
        for spec in specs:
            work_dir = Path(spec.work_dir)
            if not work_dir.exists():
                created.append(work_dir)
            try:
                claims.append(claim(work_dir, experiment_holder(spec, "launcher submit"), join=False))
            except WorkDirError as exc:
                raise LauncherError(str(exc)) from None
            check_store(store, spec)
        yield claims
    except BaseException:
        for held in claims:
            held.release()
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty: a backend that failed may have left its logs
        raise
    for held, spec in zip(claims, specs):
        held.hand_over(placeholder(held.holder, f"handed to the {spec.backend} backend"))


def adopt(spec: JobSpec, process: str) -> Claim:
    """The monitor's claim on ``spec``'s work dir (from the placeholder ``launcher submit`` left), refreshed
    until :meth:`~detcore.ownership.Claim.release`; WorkDirError when another run holds it."""
    return claim(spec.work_dir, experiment_holder(spec, process), join=False).start_heartbeat()
