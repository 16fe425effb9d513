"""The experiment store: one SQLite row per experiment under ``$LAUNCHER_HOME``.

WAL mode, a 30 s busy timeout and one short transaction per write, so many CLIs can write at
once without losing an update. On a network filesystem (NFS, Lustre, GPFS, ...; :mod:`launcher.store.fs`)
WAL is unsafe across hosts, so the store keeps a rollback journal there and every write transaction also
holds a cross-host lock (see :func:`launcher.store.fs.write_lock`). Two kinds of writes, by two kinds of
callers: what the user asked for (``insert``, ``set_backend_job``, ``start_run`` for a resume,
``delete``, ``update_tags``, ``set_note``) comes from the commands; what is observed (``record_status``, ``record_metrics``)
comes only from :func:`launcher.store.reconcile.refresh`, which derives it from the backends'
reports. Terminal states are sticky: a status write never moves a succeeded/failed/cancelled
row back; only ``start_run`` begins a new launch (the old one goes into ``history``). A status
write names the launch (``run_id``) it observed, so a stale reader never writes into a newer
launch.

Every write of what the user asked for is also kept as a file, the experiment's record
(:mod:`launcher.store.records`), in the same transaction. Each open checks the database (its header and
SQLite's ``PRAGMA quick_check``, about 12 ms per 10,000 rows); a damaged store, or an empty or
missing one while records exist, is kept aside and rebuilt from the records, the job folders and
the work dirs (:mod:`launcher.store.repair`), said in one line. A home that cannot be written
(read-only, or full) is read as it is: every read works, every write raises :class:`StoreReadOnly`.

Reading never imports anything heavy; ``launcher list`` over 10,000 rows stays well under
0.3 s. Reconciling rows with their backend happens in :mod:`launcher.store.reconcile`.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from launcher.store import fs as store_fs, records
from launcher.errors import LauncherError
from launcher.resources.locking import blocking_flock
from launcher.state import JobState
from launcher.store.schema import (ALL_COLUMNS, LIST_COLUMNS, MIGRATIONS, SCHEMA_VERSION, TERMINAL, Experiment,
                                   create_schema, experiment_from_spec, launcher_home, migrate, row_experiment)

__all__ = ["Experiment", "ExperimentStore", "StoreReadOnly", "experiment_from_spec", "launcher_home"]

if TYPE_CHECKING:
    from launcher.spec import JobSpec, JobStatus
    from launcher.store.repair import Restored

logger = logging.getLogger(__name__)
INIT_LOCK_TIMEOUT_S = 60.0
# why a home cannot be written: the store is then read as it is
_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


class StoreReadOnly(LauncherError):
    """The store can be read but not written (a read-only or full ``$LAUNCHER_HOME``)."""


class ExperimentStore:
    """The SQLite store. One connection per instance; open one per process (or thread)."""

    def __init__(self, home: str | os.PathLike | None = None) -> None:
        self.home = Path(home) if home is not None else launcher_home()
        self.path = self.home / "experiments.db"
        self.read_only = ""   # why the store cannot be written ("" while it can)
        self.repaired = ""    # the line saying how opening this store rebuilt it ("" when it did not)
        self._conn: sqlite3.Connection | None = None
        self.on_network: bool | None = None  # the home is on a network filesystem (known once opened)
        self.filesystem = ""  # why it is, or is not, taken for one ("/home/me/... is on nfs4"; once opened)
        self._record_warned = False
        self._read_only_noted = False

    # ---- connection -------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        with contextlib.ExitStack() as held:
            try:
                self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
                # The check, a repair and the creation of the schema each happen once, under this lock.
                held.enter_context(blocking_flock(self.home / "experiments.db.init-lock", INIT_LOCK_TIMEOUT_S))
            except OSError as exc:
                if exc.errno in store_fs.NO_LOCKS:
                    raise store_fs.no_locks_error(self.home, exc) from None
                if exc.errno not in _CANNOT_WRITE:  # LAUNCHER_HOME is a file, the lock a folder, ...
                    raise LauncherError(f"cannot open the experiment store in {self.home}: {exc.strerror} "
                                        f"({exc.filename}); LAUNCHER_HOME must be a folder of yours") from None
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                return self._open_read_only(f"{'full' if full else 'read-only'} ({exc.strerror})")
            if self.path.exists() and not os.access(self.path, os.W_OK):
                return self._open_read_only(f"read-only ({self.path.name} is not writable)")
            try:
                return self._connect()
            except sqlite3.OperationalError:
                if not (self.path.exists() and _nearly_full(self.home)):
                    raise
                # A full disk: SQLite cannot create the WAL index a new connection needs.
                return self._open_read_only("full")

    def _connect(self) -> sqlite3.Connection:
        """The store, read-write (the caller holds the init lock): checked, rebuilt when damaged or lost while
        records exist, and migrated to this launcher's schema."""
        from launcher.store import repair as store_repair

        found = store_repair.diagnose(self.path, self.home)
        if found:
            self.repaired = store_repair.repair(self.home, self.path, found)
            logger.warning("%s", self.repaired)
        fs = store_fs.store_filesystem(self.home)
        self.on_network, self.filesystem = fs.network, fs.why
        if fs.local_locks:
            logger.warning("%s is mounted with %s: file locks do not reach other hosts, so launchers on two hosts "
                           "writing this store at once can corrupt it; use it from one host only (and set "
                           "LAUNCHER_STORE_FS=local to say so), or remount it with working locks", self.home,
                           fs.local_locks)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        with self._write_lock():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version in MIGRATIONS:  # a store written by an older launcher: add the new columns, all or none
                conn.execute("BEGIN IMMEDIATE")
                try:
                    migrate(conn, version)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            elif version != SCHEMA_VERSION:
                create_schema(conn, "DELETE" if self.on_network else "WAL")
            if self.on_network:
                store_fs.leave_wal(conn, self.path, fs.why)
        # A rollback journal commits safely only with a sync at each commit (FULL); WAL is safe with NORMAL.
        conn.execute(f"PRAGMA synchronous={'FULL' if self.on_network else 'NORMAL'}")
        if not records.records_complete(self.home):
            self._write_all_records(conn)
        return conn

    def _open_read_only(self, why: str) -> sqlite3.Connection:
        """Read the store without writing anything: in place when SQLite can, else a copy in memory (an older
        schema migrated there; a damaged or lost store rebuilt there from the records and job folders)."""
        from launcher.store import repair as store_repair

        self.read_only = why
        conn = store_repair.read_only_connection(self.path) if self.path.is_file() else None
        found = store_repair.diagnose(self.path, self.home, conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0] if conn is not None and not found else 0
        if conn is None or found or version != SCHEMA_VERSION:
            memory = sqlite3.connect(":memory:", isolation_level=None)
            if conn is not None and not found and version in MIGRATIONS:
                conn.backup(memory)
                migrate(memory, version)
            else:
                create_schema(memory)
                if found:
                    restored = store_repair.fill_from_disk(memory, self.home)
                    self.repaired = (f"the experiment store is {found.words} and cannot be rebuilt in place; "
                                     f"showing {restored.describe()}")
            if conn is not None:
                conn.close()
            conn = memory
        conn.row_factory = sqlite3.Row
        wal = self.path.with_name(self.path.name + "-wal")
        if self.repaired or (wal.exists() and wal.stat().st_size > 0):
            # said now only when what is shown may be incomplete; a write says it cannot (StoreReadOnly), and
            # reconcile says once when a job's new state could not be saved
            self.note_read_only(f" ({self.repaired})" if self.repaired
                                else " (another launcher holds it open: its newest changes may not show)")
        return conn

    def note_read_only(self, detail: str = "") -> None:
        """Say once that this store is read as it is and nothing is saved."""
        if not self._read_only_noted:
            logger.warning("%s is %s: reading the experiment store without saving anything%s", self.home,
                           self.read_only, detail)
            self._read_only_noted = True

    def refuse_if_read_only(self) -> None:
        """StoreReadOnly (one line) when the home exists and cannot be written, or cannot be created;
        creates nothing, so a command refused later (a bad config) leaves no home behind."""
        if self._conn is not None:
            self.writable()
            return
        existing = next(p for p in (self.home, *self.home.parents) if p.exists())
        if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
            raise StoreReadOnly(f"{self.home} is read-only: this command must write the experiment store there; "
                                f"make it writable, or set LAUNCHER_HOME to another folder")

    def writable(self) -> sqlite3.Connection:
        """The connection, for a write; StoreReadOnly (one line) when the home cannot be written."""
        conn = self.conn
        if self.read_only:
            raise StoreReadOnly(f"{self.home} is {self.read_only}: this command must write the experiment store "
                                f"there; make it writable (or free space), or set LAUNCHER_HOME to another folder")
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- write transactions ---------------------------------------------------------------------
    def _write_lock(self) -> contextlib.AbstractContextManager:
        """The cross-host write lock on a network filesystem (:func:`launcher.store.fs.write_lock`); nothing
        on a local one."""
        if not self.on_network:
            return contextlib.nullcontext()
        return store_fs.write_lock(self.home)

    @contextlib.contextmanager
    def transaction(self):
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on an error), holding the
        cross-host write lock on a network filesystem; joins the caller's transaction when one is open."""
        conn = self.writable()
        if conn.in_transaction:
            yield conn
            return
        with self._write_lock():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ---- records (the copies a repair rebuilds the store from) ----------------------------------
    @contextlib.contextmanager
    def _recorded(self, exp_id: str):
        """One write transaction; the row is copied to its record before the commit, so records are written
        in commit order. Joins the caller's transaction when one is open."""
        with self.transaction() as conn:
            yield conn
            self._save_record(conn, exp_id)

    def _save_record(self, conn: sqlite3.Connection, exp_id: str) -> None:
        row = conn.execute("SELECT * FROM experiments WHERE id = ?", (exp_id,)).fetchone()
        try:
            if row is None:
                records.remove_record(self.home, exp_id)
            else:
                records.write_record(self.home, dict(row))
        except OSError as exc:  # the row is saved; only its copy is missing (a repair would not see this change)
            if not self._record_warned:
                logger.warning("cannot write the experiment record %s (%s); the store is updated, but a repair "
                               "could not restore this change", records.record_path(self.home, exp_id),
                               exc.strerror or exc)
                self._record_warned = True

    def _write_all_records(self, conn: sqlite3.Connection) -> None:
        """Once per home: a record of every row (a store from before records were kept, or one just rebuilt)."""
        try:
            for row in conn.execute("SELECT * FROM experiments"):
                records.write_record(self.home, dict(row))
            records.mark_complete(self.home)
        except OSError as exc:
            logger.warning("cannot write the experiment records in %s (%s)", records.records_dir(self.home),
                           exc.strerror or exc)

    def rebuild(self, problem: str) -> str:
        """Keep the store aside and rebuild it, whatever a check says (an error SQLite raised mid-command that
        ``quick_check`` does not see); the line that says so."""
        from launcher.store import repair as store_repair

        self.close()
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        with blocking_flock(self.home / "experiments.db.init-lock", INIT_LOCK_TIMEOUT_S):
            self.repaired = store_repair.repair(self.home, self.path, store_repair.Diagnosis(problem=problem))
        return self.repaired

    def restore_missing(self) -> Restored:
        """Add the rows that records (or job folders) hold and the store lacks, in one transaction (so a
        record being written by another command now is either committed or not yet there); what was added."""
        from launcher.store import repair as store_repair

        with self.transaction() as conn:
            have = {r[0] for r in conn.execute("SELECT id FROM experiments")}
            restored = store_repair.fill_from_disk(conn, self.home, skip=have)
            for exp_id in restored.ids:
                self._save_record(conn, exp_id)
        return restored

    # ---- rows -------------------------------------------------------------------------------
    def insert(self, values: Mapping[str, Any]) -> None:
        cols = list(values)
        unknown = set(cols) - set(ALL_COLUMNS)
        if unknown:
            raise ValueError(f"unknown experiment columns {sorted(unknown)}")
        try:
            with self._recorded(values["id"]) as conn:
                conn.execute(f"INSERT INTO experiments ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             [values[c] for c in cols])
        except sqlite3.IntegrityError:
            raise LauncherError(f"experiment id {values.get('id')!r} already exists; submit again") from None

    def delete(self, exp_id: str) -> None:
        """Remove the row and its record (inside the caller's transaction when one is open)."""
        with self._recorded(exp_id) as conn:
            conn.execute("DELETE FROM experiments WHERE id = ?", (exp_id,))

    def get(self, exp_id: str) -> Experiment:
        """The row whose id is ``exp_id`` or starts with it (a unique prefix of at least 3 digits)."""
        rows = self.conn.execute(f"SELECT {', '.join(ALL_COLUMNS)} FROM experiments WHERE id = ?",
                                 (exp_id,)).fetchall()
        if not rows and len(exp_id) >= 3 and all(c in "0123456789abcdef" for c in exp_id):
            rows = self.conn.execute(f"SELECT {', '.join(ALL_COLUMNS)} FROM experiments WHERE id LIKE ? LIMIT 3",
                                     (exp_id + "%",)).fetchall()
        if not rows:
            raise LauncherError(f"no experiment {exp_id!r} in {self.path}; `launcher list` shows the ids")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows)
            raise LauncherError(f"experiment id prefix {exp_id!r} is ambiguous ({ids}, ...); type more digits")
        return row_experiment(rows[0])

    def list(self, state: JobState | None = None, backend: str | None = None, sweep: str | None = None,
             ids: Iterable[str] | None = None, active: bool = False, tags: Iterable[str] = (),
             order: str = "created, id", limit: int | None = None) -> list[Experiment]:
        """Rows (without the spec) filtered by state, backend, sweep, ids, tags, or only non-terminal (``active``)."""
        sql, args = self.select_sql(", ".join(LIST_COLUMNS), state, backend, sweep, ids, active, tags, order, limit)
        return [row_experiment(r) for r in self.conn.execute(sql, args)]

    @staticmethod
    def select_sql(columns: str, state: JobState | None = None, backend: str | None = None, sweep: str | None = None,
                   ids: Iterable[str] | None = None, active: bool = False, tags: Iterable[str] = (),
                   order: str = "created, id", limit: int | None = None) -> tuple[str, list]:
        """``SELECT columns FROM experiments WHERE <filters> ORDER BY order [LIMIT n]`` and its parameters.
        ``tags``: only rows carrying every one of them. ``order`` is SQL the caller built, never user text."""
        where, args = [], []
        if active:
            where.append(f"state NOT IN ({', '.join('?' * len(TERMINAL))})")
            args.extend(TERMINAL)
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
        with self._recorded(exp_id) as conn:
            conn.execute("UPDATE experiments SET backend_job_id = ?, backend_extra = ?, updated = ? WHERE id = ?",
                         (job_id, json.dumps(dict(extra or {}), sort_keys=True), time.time(), exp_id))

    def record_status(self, exp_id: str, status: JobStatus, run_id: str | None = None) -> bool:
        """Write a backend's status unless the row is already terminal (or, with ``run_id``, has moved on to
        another launch); True when a row changed. Only :mod:`launcher.store.reconcile` calls this. An ending is also
        written to the row's record."""
        if status.state.is_terminal():
            with self._recorded(exp_id) as conn:
                return self._write_status(conn, exp_id, status, run_id)
        with self.transaction() as conn:
            return self._write_status(conn, exp_id, status, run_id)

    @staticmethod
    def _write_status(conn: sqlite3.Connection, exp_id: str, status: JobStatus, run_id: str | None) -> bool:
        now = time.time()
        started = status.started or (now if status.state is JobState.RUNNING else None)
        ended = (status.ended or now) if status.state.is_terminal() else None
        cur = conn.execute(
            "UPDATE experiments SET state = ?, exit_code = COALESCE(?, exit_code), "
            "reason = CASE WHEN ? = '' AND state = ? THEN reason ELSE ? END, restarts = MAX(restarts, ?), "
            "ports = CASE WHEN ? = '[]' THEN ports ELSE ? END, started = COALESCE(started, ?), "
            "ended = COALESCE(?, ended), updated = ? "
            f"WHERE id = ? AND state NOT IN ({', '.join('?' * len(TERMINAL))}) AND (? IS NULL OR run_id = ?)",
            (status.state.value, status.exit_code, status.reason, status.state.value, status.reason, status.restarts,
             json.dumps(list(status.ports)), json.dumps(list(status.ports)), started, ended, now, exp_id, *TERMINAL,
             run_id, run_id))
        return cur.rowcount > 0

    def record_metrics(self, exp_id: str, last_iter: int | None, loss: float | None, ap: float | None,
                       metrics: Mapping[str, Any], best: Mapping[str, Any] | None = None,
                       best_ap: float | None = None, max_iter: int | None = None,
                       max_epoch: int | None = None) -> None:
        """The newest metrics (and, when given, the best evaluation and the run's length); only
        :mod:`launcher.store.reconcile` calls this."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE experiments SET last_iter = ?, last_loss = ?, last_ap = ?, last_metrics = ?, "
                "best_ap = COALESCE(?, best_ap), best_metrics = COALESCE(?, best_metrics), "
                "max_iter = COALESCE(?, max_iter), max_epoch = COALESCE(?, max_epoch), updated = ? WHERE id = ?",
                (last_iter, loss, ap, json.dumps(dict(metrics), sort_keys=True), best_ap,
                 json.dumps(dict(best), sort_keys=True) if best is not None else None, max_iter, max_epoch, time.time(),
                 exp_id))

    # ---- what the user says about a row (the commands write these) -----------------------------
    def update_tags(self, exp_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        """Add and remove tags in one transaction (two ``launcher tag`` at once both count); the new tags."""
        with self._recorded(exp_id) as conn:
            row = conn.execute("SELECT tags FROM experiments WHERE id = ?", (exp_id,)).fetchone()
            if row is None:
                raise LauncherError(f"no experiment {exp_id!r} in {self.path}; `launcher list` shows the ids")
            gone = set(remove)
            tags = [t for t in json.loads(row[0] or "[]") if t not in gone]
            tags += [t for t in dict.fromkeys(add) if t not in tags]
            conn.execute("UPDATE experiments SET tags = ? WHERE id = ?", (json.dumps(tags), exp_id))
        return tags

    def set_note(self, exp_id: str, note: str) -> None:
        with self._recorded(exp_id) as conn:
            conn.execute("UPDATE experiments SET note = ? WHERE id = ?", (note, exp_id))

    def record_scaling(self, exp_id: str, scaling: Mapping[str, Any]) -> None:
        """The scaling the worker applied (its ``scaling`` fact): ``total_batch``, ``lr`` and ``scaling``.
        Only :mod:`launcher.store.reconcile` calls this."""
        with self.transaction() as conn:
            conn.execute("UPDATE experiments SET total_batch = ?, lr = ?, scaling = ?, updated = ? WHERE id = ?",
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
        with self._recorded(exp_id) as conn:
            conn.execute(
                "UPDATE experiments SET state = ?, exit_code = NULL, reason = '', ended = NULL, started = NULL, "
                "restarts = 0, ports = '[]', max_iter = NULL, max_epoch = NULL, backend = ?, backend_job_id = ?, "
                "backend_extra = ?, run_id = ?, history = ?, world_size = ?, total_batch = ?, lr = ?, scaling = ?, "
                "resources = ?, spec = ?, config_hash = ?, updated = ? WHERE id = ?",
                (JobState.PENDING.value, spec.backend, job_id, json.dumps(dict(extra), sort_keys=True), spec.run_id,
                 json.dumps(history), values["world_size"], values["total_batch"], values["lr"], values["scaling"],
                 values["resources"], values["spec"], values["config_hash"], time.time(), exp_id))


def _nearly_full(folder: Path) -> bool:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize < 1 << 20
