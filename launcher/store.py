"""The experiment store: one SQLite row per experiment under ``$LAUNCHER_HOME``.

WAL mode, a 30 s busy timeout and one statement per write (each its own short transaction),
so many CLIs can write at once without losing an update. Two kinds of writes, by two kinds of
callers: what the user asked for (``insert``, ``set_backend_job``, ``start_run`` for a resume,
``delete``, ``update_tags``, ``set_note``) comes from the commands; what is observed (``record_status``, ``record_metrics``)
comes only from :func:`launcher.reconcile.refresh`, which derives it from the backends'
reports. Terminal states are sticky: a status write never moves a succeeded/failed/cancelled
row back; only ``start_run`` begins a new launch (the old one goes into ``history``). A status
write names the launch (``run_id``) it observed, so a stale reader never writes into a newer
launch.

Reading never imports anything heavy; ``launcher list`` over 10,000 rows stays well under
0.3 s. Reconciling rows with their backend happens in :mod:`launcher.reconcile`.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from launcher.errors import LauncherError
from launcher.locking import blocking_flock
from launcher.state import JobState

if TYPE_CHECKING:
    from launcher.spec import JobSpec, JobStatus

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 3
INIT_LOCK_TIMEOUT_S = 60.0
_TERMINAL = tuple(s.value for s in JobState if s.is_terminal())

_SCHEMA = """
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

_LIST_COLUMNS = ("id", "name", "config", "config_hash", "mode", "backend", "backend_job_id", "backend_extra", "state",
                 "exit_code", "reason", "restarts", "resources", "world_size", "total_batch", "lr", "ports",
                 "work_dir", "sweep", "created", "started", "ended", "updated", "last_iter", "last_loss", "last_ap",
                 "run_id", "tags", "note", "grid", "max_iter", "max_epoch", "best_ap", "best_metrics")
# Statements that bring a store of version N to N + 1; a store is migrated step by step, in one transaction.
_MIGRATIONS = {1: ("ALTER TABLE experiments ADD COLUMN run_id TEXT NOT NULL DEFAULT ''",
                   "ALTER TABLE experiments ADD COLUMN history TEXT NOT NULL DEFAULT '[]'"),
               2: ("ALTER TABLE experiments ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",
                   "ALTER TABLE experiments ADD COLUMN note TEXT NOT NULL DEFAULT ''",
                   "ALTER TABLE experiments ADD COLUMN grid TEXT NOT NULL DEFAULT '{}'",
                   "ALTER TABLE experiments ADD COLUMN max_iter INTEGER",
                   "ALTER TABLE experiments ADD COLUMN max_epoch INTEGER",
                   "ALTER TABLE experiments ADD COLUMN best_ap REAL",
                   "ALTER TABLE experiments ADD COLUMN best_metrics TEXT NOT NULL DEFAULT '{}'")}
_ALL_COLUMNS = _LIST_COLUMNS + ("scaling", "last_metrics", "spec", "history")


def launcher_home() -> Path:
    """``$LAUNCHER_HOME``, else ``$XDG_DATA_HOME/detlaunch``, else ``~/.local/share/detlaunch``."""
    if os.environ.get("LAUNCHER_HOME"):
        return Path(os.environ["LAUNCHER_HOME"]).expanduser().resolve()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser().resolve() / "detlaunch"


@dataclass(frozen=True)
class Experiment:
    """One stored row. JSON columns stay text until asked for (``list`` stays cheap)."""

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
        out = {k: getattr(self, k) for k in _LIST_COLUMNS}
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
        return out


def experiment_from_spec(spec: JobSpec, state: JobState, now: float | None = None, sweep: str | None = None,
                         grid: Mapping[str, str] | None = None) -> dict:
    """The column values of a new row for ``spec`` (pure); ``grid``: a sweep row's values of the grid keys."""
    from launcher.spec import spec_to_dict

    now = time.time() if now is None else now
    d = spec_to_dict(spec)
    scaling = spec.scaling
    return {
        "id": spec.id, "name": spec.name, "config": spec.config, "config_hash": spec.config_hash,
        "mode": spec.mode.value, "backend": spec.backend, "state": state.value,
        "resources": json.dumps(d["resources"], sort_keys=True), "world_size": spec.world_size,
        "total_batch": scaling.total_batch if scaling else None, "lr": scaling.lr if scaling else None,
        "scaling": json.dumps(scaling.to_dict()) if scaling else "", "work_dir": spec.work_dir,
        "sweep": sweep, "grid": json.dumps(dict(grid or {})), "created": now, "updated": now, "spec": json.dumps(d, sort_keys=True), "run_id": spec.run_id,
    }


class ExperimentStore:
    """The SQLite store. One connection per instance; open one per process (or thread)."""

    def __init__(self, home: str | os.PathLike | None = None) -> None:
        self.home = Path(home) if home is not None else launcher_home()
        self.path = self.home / "experiments.db"
        self._conn: sqlite3.Connection | None = None

    # ---- connection -------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = self._open()
            except sqlite3.OperationalError:
                if not (self.path.exists() and _nearly_full(self.home)):
                    raise
                # A full disk: SQLite cannot create the WAL index a new connection needs. Read the database
                # file as it is (complete when no other connection is open, which is the rule: no long-lived
                # process holds the store); every write then fails, and readers show what the jobs report.
                wal = self.path.with_name(self.path.name + "-wal")
                pending = wal.exists() and wal.stat().st_size > 0
                logger.warning("%s is full: reading the experiment store read-only%s", self.home,
                               " (another launcher holds it open: its newest changes may not show)" if pending else "")
                self._conn = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, isolation_level=None)
                self._conn.row_factory = sqlite3.Row
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        # Switching a new file to WAL answers "database is locked" at once, without waiting out the
        # busy timeout, while another process reads it: the check and the creation hold a lock.
        with blocking_flock(self.home / "experiments.db.init-lock", INIT_LOCK_TIMEOUT_S):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version in _MIGRATIONS:  # a store written by an older launcher: add the new columns, all or none
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for step in range(version, SCHEMA_VERSION):
                        for statement in _MIGRATIONS[step]:
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            elif version != SCHEMA_VERSION:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- rows -------------------------------------------------------------------------------
    def insert(self, values: Mapping[str, Any]) -> None:
        cols = list(values)
        unknown = set(cols) - set(_ALL_COLUMNS)
        if unknown:
            raise ValueError(f"unknown experiment columns {sorted(unknown)}")
        try:
            self.conn.execute(f"INSERT INTO experiments ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                              [values[c] for c in cols])
        except sqlite3.IntegrityError:
            raise LauncherError(f"experiment id {values.get('id')!r} already exists; submit again") from None

    def delete(self, exp_id: str) -> None:
        self.conn.execute("DELETE FROM experiments WHERE id = ?", (exp_id,))

    def get(self, exp_id: str) -> Experiment:
        """The row whose id is ``exp_id`` or starts with it (a unique prefix of at least 3 digits)."""
        rows = self.conn.execute(f"SELECT {', '.join(_ALL_COLUMNS)} FROM experiments WHERE id = ?",
                                 (exp_id,)).fetchall()
        if not rows and len(exp_id) >= 3 and all(c in "0123456789abcdef" for c in exp_id):
            rows = self.conn.execute(f"SELECT {', '.join(_ALL_COLUMNS)} FROM experiments WHERE id LIKE ? LIMIT 3",
                                     (exp_id + "%",)).fetchall()
        if not rows:
            raise LauncherError(f"no experiment {exp_id!r} in {self.path}; `launcher list` shows the ids")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows)
            raise LauncherError(f"experiment id prefix {exp_id!r} is ambiguous ({ids}, ...); type more digits")
        return _row(rows[0])

    def list(self, state: JobState | None = None, backend: str | None = None, sweep: str | None = None,
             ids: Iterable[str] | None = None, active: bool = False, tags: Iterable[str] = (),
             order: str = "created, id", limit: int | None = None) -> list[Experiment]:
        """Rows (without the spec) filtered by state, backend, sweep, ids, tags, or only non-terminal (``active``)."""
        sql, args = self.select_sql(", ".join(_LIST_COLUMNS), state, backend, sweep, ids, active, tags, order, limit)
        return [_row(r) for r in self.conn.execute(sql, args)]

    @staticmethod
    def select_sql(columns: str, state: JobState | None = None, backend: str | None = None, sweep: str | None = None,
                   ids: Iterable[str] | None = None, active: bool = False, tags: Iterable[str] = (),
                   order: str = "created, id", limit: int | None = None) -> tuple[str, list]:
        """``SELECT columns FROM experiments WHERE <filters> ORDER BY order [LIMIT n]`` and its parameters.
        ``tags``: only rows carrying every one of them. ``order`` is SQL the caller built, never user text."""
        where, args = [], []
        if active:
            where.append(f"state NOT IN ({', '.join('?' * len(_TERMINAL))})")
            args.extend(_TERMINAL)
        if state is not None:
            where.append("state = ?")
            args.append(state.value)
        if backend is not None:
            where.append("backend = ?")
            args.append(backend)
        if sweep is not None:
            where.append("sweep = ?")
            args.append(sweep)
        if ids is not None:
            ids = list(ids)
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            args.extend(ids)
        for tag in tags:
            where.append("EXISTS (SELECT 1 FROM json_each(experiments.tags) WHERE json_each.value = ?)")
            args.append(tag)
        sql = f"SELECT {columns} FROM experiments"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return sql, args

    # ---- updates ----------------------------------------------------------------------------
    def set_backend_job(self, exp_id: str, job_id: str, extra: Mapping[str, str] | None = None) -> None:
        self.conn.execute("UPDATE experiments SET backend_job_id = ?, backend_extra = ?, updated = ? WHERE id = ?",
                          (job_id, json.dumps(dict(extra or {}), sort_keys=True), time.time(), exp_id))

    def record_status(self, exp_id: str, status: JobStatus, run_id: str | None = None) -> bool:
        """Write a backend's status unless the row is already terminal (or, with ``run_id``, has moved on to
        another launch); True when a row changed. Only :mod:`launcher.reconcile` calls this."""
        now = time.time()
        started = status.started or (now if status.state is JobState.RUNNING else None)
        ended = (status.ended or now) if status.state.is_terminal() else None
        cur = self.conn.execute(
            "UPDATE experiments SET state = ?, exit_code = COALESCE(?, exit_code), "
            "reason = CASE WHEN ? = '' AND state = ? THEN reason ELSE ? END, restarts = MAX(restarts, ?), "
            "ports = CASE WHEN ? = '[]' THEN ports ELSE ? END, started = COALESCE(started, ?), "
            "ended = COALESCE(?, ended), updated = ? "
            f"WHERE id = ? AND state NOT IN ({', '.join('?' * len(_TERMINAL))}) AND (? IS NULL OR run_id = ?)",
            (status.state.value, status.exit_code, status.reason, status.state.value, status.reason, status.restarts,
             json.dumps(list(status.ports)), json.dumps(list(status.ports)), started, ended, now, exp_id, *_TERMINAL,
             run_id, run_id))
        return cur.rowcount > 0

    def record_metrics(self, exp_id: str, last_iter: int | None, loss: float | None, ap: float | None,
                       metrics: Mapping[str, Any], best: Mapping[str, Any] | None = None,
                       best_ap: float | None = None, max_iter: int | None = None,
                       max_epoch: int | None = None) -> None:
        """The newest metrics (and, when given, the best evaluation and the run's length); only
        :mod:`launcher.reconcile` calls this."""
        self.conn.execute("UPDATE experiments SET last_iter = ?, last_loss = ?, last_ap = ?, last_metrics = ?, "
                          "best_ap = COALESCE(?, best_ap), best_metrics = COALESCE(?, best_metrics), "
                          "max_iter = COALESCE(?, max_iter), max_epoch = COALESCE(?, max_epoch), "
                          "updated = ? WHERE id = ?",
                          (last_iter, loss, ap, json.dumps(dict(metrics), sort_keys=True), best_ap,
                           json.dumps(dict(best), sort_keys=True) if best is not None else None, max_iter, max_epoch,
                           time.time(), exp_id))

    # ---- what the user says about a row (the commands write these) -----------------------------
    def update_tags(self, exp_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        """Add and remove tags in one transaction (two ``launcher tag`` at once both count); the new tags."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT tags FROM experiments WHERE id = ?", (exp_id,)).fetchone()
            if row is None:
                raise LauncherError(f"no experiment {exp_id!r} in {self.path}; `launcher list` shows the ids")
            gone = set(remove)
            tags = [t for t in json.loads(row[0] or "[]") if t not in gone]
            tags += [t for t in dict.fromkeys(add) if t not in tags]
            conn.execute("UPDATE experiments SET tags = ? WHERE id = ?", (json.dumps(tags), exp_id))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return tags

    def set_note(self, exp_id: str, note: str) -> None:
        self.conn.execute("UPDATE experiments SET note = ? WHERE id = ?", (note, exp_id))

    def record_scaling(self, exp_id: str, scaling: Mapping[str, Any]) -> None:
        """The scaling the worker applied (its ``scaling`` fact): ``total_batch``, ``lr`` and ``scaling``.
        Only :mod:`launcher.reconcile` calls this."""
        self.conn.execute("UPDATE experiments SET total_batch = ?, lr = ?, scaling = ?, updated = ? WHERE id = ?",
                          (scaling.get("total_batch"), scaling.get("lr"), json.dumps(dict(scaling)), time.time(),
                           exp_id))

    def start_run(self, exp_id: str, spec: JobSpec, job_id: str, extra: Mapping[str, str]) -> None:
        """Begin a new launch of a finished experiment (``launcher resume``), on ``spec``'s backend with the
        backend's handle: the previous launch goes into ``history``; metrics stay; restarts count anew; the
        schedule length is read again (a new world size may scale it)."""
        old = self.get(exp_id)
        history = json.loads(old.history or "[]")
        history.append({"run_id": old.run_id, "backend": old.backend, "backend_job_id": old.backend_job_id,
                        "state": old.state.value, "reason": old.reason, "exit_code": old.exit_code,
                        "restarts": old.restarts, "world_size": old.world_size, "started": old.started,
                        "ended": old.ended})
        values = experiment_from_spec(spec, JobState.PENDING)
        self.conn.execute(
            "UPDATE experiments SET state = ?, exit_code = NULL, reason = '', ended = NULL, started = NULL, "
            "restarts = 0, ports = '[]', max_iter = NULL, max_epoch = NULL, backend = ?, backend_job_id = ?, backend_extra = ?, run_id = ?, history = ?, "
            "world_size = ?, total_batch = ?, lr = ?, scaling = ?, resources = ?, spec = ?, config_hash = ?, "
            "updated = ? WHERE id = ?",
            (JobState.PENDING.value, spec.backend, job_id, json.dumps(dict(extra), sort_keys=True), spec.run_id,
             json.dumps(history), values["world_size"], values["total_batch"], values["lr"], values["scaling"],
             values["resources"], values["spec"], values["config_hash"], time.time(), exp_id))


def _nearly_full(folder: Path) -> bool:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize < 1 << 20


def _row(row: sqlite3.Row) -> Experiment:
    d = dict(row)
    d["state"] = JobState(d["state"])
    return Experiment(**d)
