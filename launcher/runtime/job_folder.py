"""``$LAUNCHER_HOME/<backend>/<id>/``: the files of one job on the submitting side (paths only).

A detached job (local, Ray) keeps its ``spec.json`` (what was submitted), ``plan.json`` (what its
monitor executes: the dry run computed once at submit), its monitor's
``status.json``, the ``cancel`` request and the monitor's own log here; a Slurm submission keeps
its ``manifest.json`` (the experiments of one sbatch, the Slurm job id). The work dir's files are
:class:`detcore.contract.WorkDir`'s.
"""
from __future__ import annotations

import os
from pathlib import Path


class JobFolder:
    SPEC, PLAN, STATUS, CANCEL = "spec.json", "plan.json", "status.json", "cancel"
    MONITOR_FILES = (SPEC, PLAN, STATUS, CANCEL)  # one launch's state: cleared before a resume (logs are kept)

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __fspath__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"JobFolder({str(self.root)!r})"

    @property
    def spec(self) -> Path:
        return self.root / self.SPEC

    @property
    def plan(self) -> Path:
        """What this launch executes: the dry run (``dry_run``) and the backend's own plan (``plan``),
        computed once by ``submit``."""
        return self.root / self.PLAN

    @property
    def status(self) -> Path:
        """The monitor's status (the monitor is its one writer)."""
        return self.root / self.STATUS

    @property
    def cancel(self) -> Path:
        """Exists once ``launcher cancel`` was asked: the monitor records the end as cancelled."""
        return self.root / self.CANCEL

    @property
    def supervisor_log(self) -> Path:
        """The local backend's supervisor output."""
        return self.root / "supervisor.log"

    @property
    def driver_log(self) -> Path:
        """The Ray driver's output when it runs on the submitting machine."""
        return self.root / "driver.log"

    @property
    def manifest(self) -> Path:
        """A Slurm submission: its experiments and its Slurm job id."""
        return self.root / "manifest.json"
