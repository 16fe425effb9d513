"""The experiment store's table: its columns, schema and migrations, and :class:`Experiment`, one row.

Pure data and SQL text, no connection: :mod:`launcher.store` opens and writes the database,
:mod:`launcher.store.repair` rebuilds one; both build rows and tables from here.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from launcher.state import JobState

if TYPE_CHECKING:
    from launcher.spec import JobSpec

SCHEMA_VERSION = 3
TERMINAL = tuple(s.value for s in JobState if s.is_terminal())

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL,
    backend TEXT NOT NULL,
    backend_job_id TEXT NOT NULL DEFAULT '',
    backend_extra TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    restarts INTEGER NOT NULL DEFAULT 0,
    resources TEXT NOT NULL DEFAULT '{}',
    world_size INTEGER NOT NULL,
    total_batch INTEGER,
    lr REAL,
    scaling TEXT NOT NULL DEFAULT '',
    ports TEXT NOT NULL DEFAULT '[]',
    work_dir TEXT NOT NULL,
    sweep TEXT,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    updated REAL NOT NULL,
    last_iter INTEGER,
    last_loss REAL,
    last_ap REAL,
    last_metrics TEXT NOT NULL DEFAULT '{}',
    spec TEXT NOT NULL DEFAULT '{}',
    run_id TEXT NOT NULL DEFAULT '',
    history TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    note TEXT NOT NULL DEFAULT '',
    grid TEXT NOT NULL DEFAULT '{}',
    max_iter INTEGER,
    max_epoch INTEGER,
    best_ap REAL,
    best_metrics TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS experiments_state ON experiments(state);
CREATE INDEX IF NOT EXISTS experiments_created ON experiments(created);
"""

LIST_COLUMNS = ("id", "name", "config", "config_hash", "mode", "backend", "backend_job_id", "backend_extra", "state",
                 "exit_code", "reason", "restarts", "resources", "world_size", "total_batch", "lr", "ports",
                 "work_dir", "sweep", "created", "started", "ended", "updated", "last_iter", "last_loss", "last_ap",
                 "run_id", "tags", "note", "grid", "max_iter", "max_epoch", "best_ap", "best_metrics")
# Statements that bring a store of version N to N + 1; a store is migrated step by step, in one transaction.
MIGRATIONS = {1: ("ALTER TABLE experiments ADD COLUMN run_id TEXT NOT NULL DEFAULT ''",
                   "ALTER TABLE experiments ADD COLUMN history TEXT NOT NULL DEFAULT '[]'"),
               2: ("ALTER TABLE experiments ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",
                   "ALTER TABLE experiments ADD COLUMN note TEXT NOT NULL DEFAULT ''",
                   "ALTER TABLE experiments ADD COLUMN grid TEXT NOT NULL DEFAULT '{}'",
                   "ALTER TABLE experiments ADD COLUMN max_iter INTEGER",
                   "ALTER TABLE experiments ADD COLUMN max_epoch INTEGER",
                   "ALTER TABLE experiments ADD COLUMN best_ap REAL",
                   "ALTER TABLE experiments ADD COLUMN best_metrics TEXT NOT NULL DEFAULT '{}'")}
ALL_COLUMNS = LIST_COLUMNS + ("scaling", "last_metrics", "spec", "history")


def launcher_home() -> Path:
    """``$LAUNCHER_HOME``, else ``$XDG_DATA_HOME/detlaunch``, else ``~/.local/share/detlaunch``."""
    if os.environ.get("LAUNCHER_HOME"):
        return Path(os.environ["LAUNCHER_HOME"]).expanduser().resolve()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser().resolve() / "detlaunch"


@dataclass(frozen=True)
class Experiment:
    """One stored row. JSON columns stay text until asked for (``list`` stays cheap). ``stale``: set by
    :func:`launcher.store.reconcile.refresh` when the state is the last known one."""

    id: str
    name: str
    config: str
    config_hash: str
    mode: str
    backend: str
    backend_job_id: str
    backend_extra: str
    state: JobState
    exit_code: int | None
    reason: str
    restarts: int
    resources: str
    world_size: int
    total_batch: int | None
    lr: float | None
    ports: str
    work_dir: str
    sweep: str | None
    created: float
    started: float | None
    ended: float | None
    updated: float
    last_iter: int | None
    last_loss: float | None
    last_ap: float | None
    run_id: str = ""
    scaling: str = ""
    last_metrics: str = "{}"
    spec: str = field(default="{}", repr=False)
    history: str = "[]"
    tags: str = "[]"
    note: str = ""
    grid: str = "{}"
    max_iter: int | None = None
    max_epoch: int | None = None
    best_ap: float | None = None
    best_metrics: str = "{}"
    stale: str = ""  # not a column: why the state is the last known one (its backend could not be asked now)

    @property
    def tag_list(self) -> list[str]:
        return json.loads(self.tags or "[]")

    @property
    def grid_values(self) -> dict[str, str]:
        """A sweep row's grid values (``{"optimizer.lr": "0.02"}``); empty for a single submit."""
        return json.loads(self.grid or "{}")

    @property
    def extra(self) -> dict[str, str]:
        return json.loads(self.backend_extra or "{}")

    @property
    def port_list(self) -> list[int]:
        return json.loads(self.ports or "[]")

    @property
    def spec_dict(self) -> dict:
        return json.loads(self.spec or "{}")

    def to_json(self) -> dict:
        """The record as ``--json`` prints it."""
        out = {k: getattr(self, k) for k in LIST_COLUMNS}
        out["state"] = self.state.value
        out["backend_extra"] = self.extra
        out["resources"] = json.loads(self.resources or "{}")
        out["ports"] = self.port_list
        out["scaling"] = json.loads(self.scaling) if self.scaling else None
        out["last_metrics"] = json.loads(self.last_metrics or "{}")
        out["history"] = json.loads(self.history or "[]")
        out["tags"] = self.tag_list
        out["grid"] = self.grid_values
        out["best_metrics"] = json.loads(self.best_metrics or "{}")
        if self.stale:
            out["stale"] = self.stale
        return out


def experiment_from_spec(spec: JobSpec, state: JobState, now: float | None = None, sweep: str | None = None,
                         grid: Mapping[str, str] | None = None) -> dict:
    """The column values of a new row for ``spec`` (pure); ``grid``: a sweep row's values of the grid keys."""
    from launcher.spec import spec_to_dict

    return row_from_spec_dict(spec_to_dict(spec), state, now, sweep, grid)


def row_from_spec_dict(d: Mapping[str, Any], state: JobState, now: float | None = None, sweep: str | None = None,
                       grid: Mapping[str, str] | None = None) -> dict:
    """:func:`experiment_from_spec` of a spec as ``spec_to_dict`` wrote it (a job folder's ``spec.json``)."""
    now = time.time() if now is None else now
    resources = dict(d.get("resources") or {})
    scaling = d.get("scaling") or None
    return {
        "id": d["id"], "name": d["name"], "config": d["config"], "config_hash": d.get("config_hash") or "",
        "mode": d.get("mode") or "train", "backend": d.get("backend") or "local", "state": state.value,
        "resources": json.dumps(resources, sort_keys=True),
        "world_size": int(resources.get("nodes") or 1) * int(resources.get("nproc") or 1),
        "total_batch": scaling.get("total_batch") if scaling else None, "lr": scaling.get("lr") if scaling else None,
        "scaling": json.dumps(scaling) if scaling else "", "work_dir": d["work_dir"],
        "sweep": sweep, "grid": json.dumps(dict(grid or {})), "created": now, "updated": now,
        "spec": json.dumps(dict(d), sort_keys=True), "run_id": d.get("run_id") or "",
    }


def migrate(conn: sqlite3.Connection, version: int) -> None:
    for step in range(version, SCHEMA_VERSION):
        for statement in MIGRATIONS[step]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def create_schema(conn: sqlite3.Connection, journal_mode: str = "WAL") -> None:
    """This launcher's tables and indexes in an empty database, in ``journal_mode`` (WAL on a local
    filesystem, DELETE, a rollback journal, on a network one)."""
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def row_experiment(row: sqlite3.Row | Mapping[str, Any]) -> Experiment:
    """The :class:`Experiment` of a row read with every column."""
    d = dict(row)
    d["state"] = JobState(d["state"])
    return Experiment(**d)
