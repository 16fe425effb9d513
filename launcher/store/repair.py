"""Finding a damaged or lost experiment store and rebuilding it from what the disk still holds.

:func:`diagnose` looks at ``experiments.db`` the way SQLite sees it: its 16-byte header, then
``PRAGMA quick_check`` (every b-tree page walked, about 12 ms per 10,000 rows), and any
``SQLITE_CORRUPT``/``SQLITE_NOTADB`` error on the way. A store that is missing, 0 bytes long or
without its table counts as lost only while experiment records or job folders exist (else it
is simply new).

:func:`repair` keeps the damaged file aside (``experiments.db.corrupt-<time>``, with its
``-wal``), builds a new store beside it and moves that into place, all under the store's init
lock. The rows come from (:func:`disk_rows`):

- the experiment records (``records/<id>.json``, :mod:`launcher.store.records`): every column the
  commands wrote, tags, note, sweep and earlier launches included, and the ending of a row that
  had ended;
- the job folders, for experiments without a record (submitted before records were kept):
  ``jobs/<id>/`` and ``ray/<id>/`` (``spec.json``, and ``status.json`` for the monitor's pid),
  ``slurm/<id>/`` and ``slurm/array-<id>/`` (``manifest.json``: job id and specs);
- the work dirs: newest and best metrics, the schedule length and the applied scaling
  (:mod:`launcher.store.reconcile`'s readers).

A row whose ending was not recorded comes back as it was last known and is derived again
from its backend by the next ``list``/``status``, as every non-terminal row is.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from launcher.store import records
from launcher.runtime.files import read_json
from launcher.runtime.job_folder import JobFolder
from launcher.state import JobState

SQLITE_HEADER = b"SQLite format 3\x00"
_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_ID = re.compile(r"^[0-9a-f]{8}$")
# (backend, folder under $LAUNCHER_HOME, the handle's key for the monitor's start tick)
MONITORED_FOLDERS = (("local", "jobs", "supervisor_start"), ("ray", "ray", "driver_start"))
_REQUIRED = ("id", "name", "config", "mode", "backend", "state", "world_size", "work_dir", "created", "updated")


def is_damage(exc: BaseException) -> bool:
    """Whether an sqlite3 error says the database file is damaged (not locked, full or read-only)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


@dataclass(frozen=True)
class Diagnosis:
    problem: str = ""   # damaged: what is wrong
    lost: str = ""      # not damaged, but its rows are gone: missing, empty

    def __bool__(self) -> bool:
        return bool(self.problem or self.lost)

    @property
    def words(self) -> str:
        return self.problem or self.lost


def diagnose(path: Path, home: Path, conn: sqlite3.Connection | None = None, thorough: bool = False) -> Diagnosis:
    """What is wrong with the store at ``path`` (a falsy Diagnosis when nothing is). ``conn``: an open
    connection to check through; else a read-only one is opened and closed here. ``thorough``: SQLite's
    ``integrity_check`` (indexes against their tables too) instead of ``quick_check``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Diagnosis(lost="missing") if _has_sources(home) else Diagnosis()
    if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO (reading it would wait forever), a device
        return Diagnosis(problem=f"not a regular file (mode {stat.filemode(st.st_mode)})")
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if not header:
        return Diagnosis(lost="empty (0 bytes)") if _has_sources(home) else Diagnosis()
    if header != SQLITE_HEADER:
        return Diagnosis(problem=f"not an SQLite database: its first bytes are {header[:8]!r}")
    own = conn is None
    pragma = "integrity_check" if thorough else "quick_check"
    try:
        if own:
            conn = read_only_connection(path)
        found = [r[0] for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
        if found != ["ok"]:  # one line per problem, some of them several lines long
            lines = [line.strip() for text in found for line in str(text).splitlines()
                     if line.strip() and not line.startswith("***")] or ["not ok"]
            more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
            return Diagnosis(problem=f"SQLite's {pragma}: {lines[0]}{more}")
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'experiments'").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return Diagnosis(problem=f"SQLite: {exc}")
    finally:
        if own and conn is not None:
            conn.close()
    if not tables and _has_sources(home):
        return Diagnosis(lost="empty (no experiments table)")
    return Diagnosis()


def read_only_connection(path: Path) -> sqlite3.Connection:
    """A connection that never writes the store. ``mode=ro`` reads the WAL too but needs its index (-shm) to
    exist or be creatable; where neither is possible (a read-only folder, where no writer can have left a
    -wal either) ``immutable=1`` reads the file alone."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
    try:
        conn.execute("PRAGMA user_version").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
    except sqlite3.DatabaseError:
        return conn  # damaged: the caller's check says how
    return sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None)


def integrity_problem(path: Path, home: Path) -> str:
    """What SQLite's ``integrity_check`` (or the header, or a lost file) says is wrong; "" when nothing."""
    return diagnose(path, home, thorough=True).words


def _has_sources(home: Path) -> bool:
    """Whether any record or job folder exists (a store missing beside them lost its rows)."""
    if records.any_records(home):
        return True
    for sub in ("jobs", "ray", "slurm"):
        try:
            with os.scandir(home / sub) as entries:
                if any(True for _ in entries):
                    return True
        except OSError:
            continue
    return False


@dataclass
class Restored:
    """What a rebuild put back."""

    ids: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{len(self.ids)} experiment(s) from the records, job folders and work dirs"
        if self.unreadable:
            shown = ", ".join(self.unreadable[:3]) + (", ..." if len(self.unreadable) > 3 else "")
            text += f"; {len(self.unreadable)} could not be read back ({shown})"
        return text


def repair(home: Path, path: Path, found: Diagnosis) -> str:
    """Keep a damaged store aside and put a rebuilt one in its place (the caller holds the init lock);
    the one line that says so."""
    from launcher.store.schema import create_schema

    fresh = path.with_name(f".{path.name}.rebuild-{os.getpid()}")
    for leftover in (fresh, _wal(fresh), _shm(fresh)):
        leftover.unlink(missing_ok=True)
    conn = sqlite3.connect(fresh, isolation_level=None)
    try:
        create_schema(conn)
        restored = fill_from_disk(conn, home)
    finally:
        conn.close()
    aside = set_aside(path) if path.exists() else None
    os.replace(fresh, path)
    what = f"damaged ({found.problem})" if found.problem else found.lost
    kept = f"kept it as {aside.name} and " if aside is not None else ""
    return f"launcher: the experiment store {path} was {what}; {kept}rebuilt {restored.describe()}"


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _shm(path: Path) -> Path:
    return path.with_name(path.name + "-shm")


def set_aside(path: Path) -> Path:
    """Move the store (and its ``-wal``) to ``<name>.corrupt-<time>``; its ``-shm`` index is dropped."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, aside)
    if _wal(path).exists():
        os.replace(_wal(path), _wal(aside))
    _shm(path).unlink(missing_ok=True)
    return aside


def fill_from_disk(conn: sqlite3.Connection, home: Path, skip: Iterable[str] = ()) -> Restored:
    """Insert every row :func:`disk_rows` finds (except the ids in ``skip``) into ``conn``'s empty or
    healthy store, with their metrics read again from the work dirs."""
    from launcher.store.schema import ALL_COLUMNS

    skip = set(skip)
    rows, unreadable = disk_rows(home)
    restored = Restored(unreadable=unreadable)
    for row in rows:
        if row["id"] in skip:
            continue
        values = {k: v for k, v in row.items() if k in ALL_COLUMNS}
        try:
            conn.execute(f"INSERT INTO experiments ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                         list(values.values()))
        except sqlite3.Error as exc:  # a record with a missing or wrong column
            restored.unreadable.append(f"{row['id']} ({exc})")
            continue
        restored.ids.append(row["id"])
        _refresh_metrics(conn, row["id"])
    return restored


def _refresh_metrics(conn: sqlite3.Connection, exp_id: str) -> None:
    """The work dir's metrics, schedule length and applied scaling for the row (what reconcile reads)."""
    from launcher.store.reconcile import observed_metrics, scaling_fact
    from launcher.store.schema import ALL_COLUMNS, row_experiment

    cur = conn.execute(f"SELECT {', '.join(ALL_COLUMNS)} FROM experiments WHERE id = ?", (exp_id,))
    cur.row_factory = sqlite3.Row
    exp = row_experiment(cur.fetchone())
    scaling = scaling_fact(exp)
    metrics = observed_metrics(exp, schedule_written=scaling is not None)
    if metrics is not None:
        conn.execute("UPDATE experiments SET last_iter = ?, last_loss = ?, last_ap = ?, last_metrics = ?, "
                     "best_ap = COALESCE(?, best_ap), best_metrics = COALESCE(?, best_metrics), "
                     "max_iter = COALESCE(?, max_iter), max_epoch = COALESCE(?, max_epoch) WHERE id = ?",
                     (metrics["last_iter"], metrics["loss"], metrics["ap"], json.dumps(metrics["metrics"],
                                                                                       sort_keys=True),
                      metrics.get("best_ap"), json.dumps(metrics["best"], sort_keys=True) if metrics.get("best")
                      else None, metrics.get("max_iter"), metrics.get("max_epoch"), exp_id))
    if scaling is not None:
        conn.execute("UPDATE experiments SET total_batch = ?, lr = ?, scaling = ? WHERE id = ?",
                     (scaling.get("total_batch"), scaling.get("lr"), json.dumps(scaling), exp_id))


# ---- what the disk holds ------------------------------------------------------------------------

def disk_rows(home: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every experiment the records and job folders describe, oldest first, and what could not be read.

    A record wins over a job folder; a record without its backend's job id (the copy of that write
    failed) takes it from the job folder of the same launch. Job folders count alone only for
    experiments from before records were kept (``records/.complete`` absent)."""
    folders, unreadable_folders = job_folder_rows(home)
    found: dict[str, dict[str, Any]] = {}
    unreadable: list[str] = []
    for exp_id, row in records.read_records(home):
        if row is None or any(row.get(k) is None for k in _REQUIRED) or not _valid_state(row["state"]):
            unreadable.append(f"records/{exp_id}.json")
            continue
        folder = folders.get(exp_id)
        if not row.get("backend_job_id") and folder and folder.get("run_id") == row.get("run_id"):
            row = {**row, "backend_job_id": folder["backend_job_id"], "backend_extra": folder["backend_extra"]}
        found[exp_id] = row
    complete = records.records_complete(home)
    for exp_id, row in folders.items():
        if exp_id not in found and (not complete or f"records/{exp_id}.json" in unreadable):
            found[exp_id] = row
            if f"records/{exp_id}.json" in unreadable:
                unreadable.remove(f"records/{exp_id}.json")
    if not complete:
        unreadable += [name for exp_id, name in unreadable_folders if exp_id not in found]
    return sorted(found.values(), key=lambda r: (r["created"], r["id"])), unreadable


def _valid_state(value: Any) -> bool:
    try:
        JobState(value)
    except ValueError:
        return False
    return True


def job_folder_rows(home: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """A pending row (spec and backend handle) per experiment with a job folder, the newest launch when it has
    several (a resume on another backend); and ``(id, folder)`` for folders that cannot be read back."""
    from detcore.contract import run_dir
    from launcher.store.schema import row_from_spec_dict

    rows: dict[str, dict[str, Any]] = {}
    unreadable: list[tuple[str, str]] = []

    def add(row: dict[str, Any]) -> None:
        if row["id"] not in rows or rows[row["id"]]["created"] < row["created"]:
            rows[row["id"]] = row

    for backend, sub, start_key in MONITORED_FOLDERS:
        for folder in _folders(home / sub):
            if not _ID.match(folder.name):
                continue
            spec, mtime = read_json(JobFolder(folder).spec), _mtime(JobFolder(folder).spec)
            try:
                row = row_from_spec_dict(spec, JobState.PENDING, now=mtime)  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError, AttributeError):
                unreadable.append((folder.name, f"{sub}/{folder.name}"))
                continue
            status = read_json(JobFolder(folder).status) or {}
            run = status.get("run_dir") or str(run_dir(row["work_dir"], row["run_id"] or "default"))
            has_monitor = status.get("monitor_pid") and status.get("monitor_start")
            row.update(backend=backend, backend_job_id=str(status["monitor_pid"]) if has_monitor else "",
                       backend_extra=json.dumps({start_key: str(status.get("monitor_start") or ""),
                                                 "job_dir": str(folder), "run_dir": run}, sort_keys=True))
            add(row)
    for folder in _folders(home / "slurm"):
        if "." in folder.name:  # <id>.<job id>: an earlier launch kept for its logs
            continue
        manifest = read_json(JobFolder(folder).manifest) or {}
        ids, specs, job_id = manifest.get("experiments") or [], manifest.get("specs"), manifest.get("job_id")
        if not job_id:
            continue
        if not isinstance(specs, list) or len(specs) != len(ids):
            unreadable += [(i, f"slurm/{folder.name} (no specs: submitted by an older launcher)") for i in ids]
            continue
        for i, spec in enumerate(specs):
            try:
                row = row_from_spec_dict(spec, JobState.PENDING, now=_mtime(JobFolder(folder).manifest))
            except (KeyError, TypeError, ValueError, AttributeError):
                unreadable.append((str(ids[i]), f"slurm/{folder.name}"))
                continue
            run = str(run_dir(row["work_dir"], row["run_id"] or "default"))
            row.update(backend="slurm", backend_job_id=f"{job_id}_{i}" if manifest.get("array") else str(job_id),
                       backend_extra=json.dumps({"folder": str(folder), "work_dir": row["work_dir"], "run_dir": run},
                                                sort_keys=True))
            add(row)
    return rows, unreadable


def _folders(parent: Path) -> list[Path]:
    try:
        return sorted(p for p in parent.iterdir() if p.is_dir())
    except OSError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
