"""The ``launcher list`` table: SQLite filters, sorts and limits; :func:`format_table` lays the rows out (pure).

Only the columns the table shows are read (JSON columns are picked apart by SQLite's
``json_extract``), so 10,000 rows print in well under 0.3 s. A sweep's rows show their grid
values as columns of their own (one per grid key) next to the sweep's base name; the LR column
shows the configured (grid) value, and the scaled one next to it when the scaling rule changed it.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterable, Mapping, Sequence

from launcher.errors import LauncherError
from launcher.state import JobState
from launcher.store import ExperimentStore
from launcher.sweep import combination_name

# --sort KEY -> an SQL expression over the table's own columns (never user text)
SORT_KEYS = {
    "created": "created", "id": "id", "name": "name", "state": "state", "backend": "backend",
    "ap": "COALESCE(best_ap, last_ap)", "loss": "last_loss", "iter": "last_iter", "lr": "lr",
    "duration": "(COALESCE(ended, {now}) - started)", "restarts": "restarts",
}
_SELECT = ("id, name, state, backend, mode, world_size, lr, "
           "CASE WHEN scaling = '' THEN NULL ELSE json_extract(scaling, '$.base_lr') END AS base_lr, "
           "last_iter, max_iter, max_epoch, "
           "CASE WHEN max_epoch IS NULL THEN NULL ELSE json_extract(last_metrics, '$.epoch') END AS epoch, "
           "started, ended, created, "
           "last_loss, COALESCE(best_ap, last_ap) AS ap, restarts, tags, note, grid")


def order_sql(key: str, reverse: bool = False, now: float | None = None) -> str:
    """``ORDER BY`` text for ``--sort KEY`` (``-KEY`` or ``reverse``: descending); rows without a value last."""
    desc = reverse
    if key.startswith("-"):
        key, desc = key[1:], not desc
    if key not in SORT_KEYS:
        raise LauncherError(f"--sort {key!r}: unknown key; choose one of {', '.join(SORT_KEYS)} "
                            f"(prefix - or add --reverse for descending)")
    expr = SORT_KEYS[key].format(now=repr(float(time.time() if now is None else now)))
    return f"({expr}) IS NULL, {expr}{' DESC' if desc else ''}, created, id"


def fetch_rows(store: ExperimentStore, state: JobState | None = None, backend: str | None = None,
               sweep: str | None = None, ids: Iterable[str] | None = None, tags: Iterable[str] = (),
               sort: str = "created", reverse: bool = False, limit: int | None = None) -> list[Mapping[str, Any]]:
    """The rows ``launcher list`` shows, filtered, sorted and limited by SQLite."""
    if limit is not None and limit < 1:
        raise LauncherError(f"--limit {limit}: expected a positive number of rows")
    sql, args = store.select_sql(_SELECT, state, backend, sweep, ids, tags=tags, order=order_sql(sort, reverse),
                                 limit=limit)
    return store.conn.execute(sql, args).fetchall()


def duration_text(seconds: float | None) -> str:
    """``1:02:03`` (hours grow past 24), ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def lr_text(base_lr: float | None, lr: float | None) -> str:
    """The configured LR, and the scaled one next to it when they differ: ``0.02 (x2 0.04)``."""
    if lr is None:
        return "-" if base_lr is None else f"{base_lr:g}"
    if base_lr is None or base_lr == lr or not base_lr:
        return f"{lr:g}"
    return f"{base_lr:g} (x{lr / base_lr:.3g} {lr:g})"


def progress_text(row: Mapping[str, Any]) -> str:
    """``iter/max`` for iteration-based runs, ``epoch/max ep`` for epoch-based ones, ``test`` for a test job."""
    if row["mode"] == "test":
        return "test"
    if row["max_epoch"] is not None:
        return f"{row['epoch'] or 0}/{row['max_epoch']} ep"
    if row["max_iter"] is not None:
        return f"{row['last_iter'] or 0}/{row['max_iter']}"
    return "-" if row["last_iter"] is None else str(row["last_iter"])


def grid_headers(keys: Sequence[str]) -> list[str]:
    """Column headers for grid keys: the last part of each dotted key, the whole key where two would clash."""
    short = [k.split(".")[-1] for k in keys]
    return [s if short.count(s) == 1 else k for s, k in zip(short, keys)]


def _loads(text: str | None, empty: Any) -> Any:
    return json.loads(text) if text and text not in ("[]", "{}") else empty


def format_table(rows: Sequence[Mapping[str, Any]], wide: bool = False, now: float | None = None) -> list[str]:
    """Header plus one aligned line per row (rows as :func:`fetch_rows` returns them: mappings by column)."""
    now = time.time() if now is None else now
    grids = [_loads(r["grid"], {}) for r in rows]
    keys = list(dict.fromkeys(k for g in grids for k in g))
    head = ["ID", "NAME", *grid_headers(keys), "STATE", "BACKEND", "PROGRESS", "DURATION", "LOSS", "BEST AP",
            "LR", "TAGS"]
    if wide:
        head += ["WORLD", "RESTARTS", "CREATED", "NOTE"]
    table = [head]
    for row, grid in zip(rows, grids):
        name = row["name"]
        if grid and not wide:  # the sweep's base name; the values have their own columns
            suffix = combination_name("", tuple(f"{k}={v}" for k, v in grid.items()))
            name = name[:-len(suffix)] if suffix and name.endswith(suffix) else name
        started, ended = row["started"], row["ended"]
        cells = [row["id"], name, *(str(grid.get(k, "-")) for k in keys), row["state"], row["backend"],
                 progress_text(row), duration_text(None if started is None else (ended or now) - started),
                 "-" if row["last_loss"] is None else f"{row['last_loss']:.4f}",
                 "-" if row["ap"] is None else f"{row['ap']:.3f}", lr_text(row["base_lr"], row["lr"]),
                 ",".join(_loads(row["tags"], [])) or "-"]
        if wide:
            cells += [str(row["world_size"]), str(row["restarts"]),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created"])), row["note"] or "-"]
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]


def table_lines(store: ExperimentStore, state: JobState | None = None, backend: str | None = None,
                sweep: str | None = None, ids: Iterable[str] | None = None, tags: Iterable[str] = (),
                sort: str = "created", reverse: bool = False, limit: int | None = None,
                wide: bool = False) -> list[str]:
    """Header plus one aligned line per experiment (oldest first unless ``sort`` says otherwise)."""
    return format_table(fetch_rows(store, state, backend, sweep, ids, tags, sort, reverse, limit), wide)
