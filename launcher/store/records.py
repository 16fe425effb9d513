"""Experiment records: each store row's copy as a file, what ``launcher store repair`` rebuilds a store from.

``$LAUNCHER_HOME/records/<id>.json`` holds the row as the commands last wrote it: the spec, name,
backend and its job id, work dir, sweep and grid values, tags, note, earlier launches, and the
ending once the row became terminal. The store writes it inside the same SQLite transaction as
the row (:class:`launcher.store.ExperimentStore`), so two commands never leave an older copy on
top of a newer one. Metrics are not kept here: they are read again from the work dir.

``records/.complete`` says every row of the store has a record (written once the first time a
store is opened by a launcher that keeps records); before that, a rebuild also reads the job
folders. Writes skip ``fsync``: on a local disk the store itself commits without one (WAL,
``synchronous=NORMAL``), and a record lost to a crash is written again with its row's next change.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from detcore.atomic import write_text_atomic

RECORDS_DIR = "records"
COMPLETE_MARK = ".complete"
_ID = re.compile(r"^[0-9a-f]{8}$")


def records_dir(home: Path) -> Path:
    return Path(home) / RECORDS_DIR


def record_path(home: Path, exp_id: str) -> Path:
    return records_dir(home) / f"{exp_id}.json"


def write_record(home: Path, row: Mapping[str, Any]) -> None:
    """Write ``row`` (a store row as a column -> value mapping) to its record, replacing it atomically.
    Raises OSError (a full or read-only disk) with the old record unchanged."""
    folder = records_dir(home)
    folder.mkdir(mode=0o700, exist_ok=True)
    write_text_atomic(folder / f"{row['id']}.json", json.dumps({"row": dict(row)}, sort_keys=True))


def remove_record(home: Path, exp_id: str) -> None:
    record_path(home, exp_id).unlink(missing_ok=True)


def read_records(home: Path) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """``(id, row)`` for every record file; ``row`` is None when the file cannot be read back."""
    folder = records_dir(home)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return
    for name in names:
        exp_id = name[:-5]
        if not name.endswith(".json") or not _ID.match(exp_id):
            continue
        try:
            row = json.loads((folder / name).read_text()).get("row")
        except (OSError, ValueError, AttributeError):
            row = None
        yield exp_id, row if isinstance(row, dict) and row.get("id") == exp_id else None


def records_complete(home: Path) -> bool:
    return (records_dir(home) / COMPLETE_MARK).exists()


def mark_complete(home: Path) -> None:
    folder = records_dir(home)
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / COMPLETE_MARK).touch()


def any_records(home: Path) -> bool:
    """Whether any record file exists (cheap: stops at the first)."""
    try:
        with os.scandir(records_dir(home)) as entries:
            return any(e.name.endswith(".json") and not e.name.startswith(".") for e in entries)
    except OSError:
        return False
