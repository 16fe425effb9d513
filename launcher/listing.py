"""The ``launcher list`` table, formatted inside SQLite (``printf``) so 10,000 rows print in milliseconds."""
from __future__ import annotations

import time
from typing import Iterable

from launcher.state import JobState
from launcher.store import ExperimentStore

NAME_MAX = 40
# header, width (None: NAME, sized to the longest name), SQL expression
_COLUMNS = (
    ("ID", 8, "id"),
    ("NAME", None, f"substr(name, 1, {NAME_MAX})"),
    ("STATE", 10, "state"),
    ("BACKEND", 7, "backend"),
    ("WORLD", 5, "world_size"),
    ("LR", 8, "CASE WHEN lr IS NULL THEN '-' ELSE printf('%g', lr) END"),
    ("ITER", 6, "COALESCE(last_iter, '-')"),
    ("LOSS", 8, "CASE WHEN last_loss IS NULL THEN '-' ELSE printf('%.4f', last_loss) END"),
    ("AP", 6, "CASE WHEN last_ap IS NULL THEN '-' ELSE printf('%.3f', last_ap) END"),
    ("RESTARTS", 8, "restarts"),
    ("AGE", 0, "CASE WHEN age < 120 THEN age || 's' WHEN age < 7200 THEN (age / 60) || 'm' "
               "WHEN age < 172800 THEN (age / 3600) || 'h' ELSE (age / 86400) || 'd' END"),
)


def table_lines(store: ExperimentStore, state: JobState | None = None, backend: str | None = None,
                sweep: str | None = None, ids: Iterable[str] | None = None) -> list[str]:
    """Header plus one aligned line per experiment, oldest first."""
    inner, args = store.select_sql("*, MAX(0, CAST(? - created AS INTEGER)) AS age", state, backend, sweep, ids)
    args = [time.time(), *args]
    names = store.conn.execute(f"SELECT MAX(LENGTH(name)) FROM ({inner})", args).fetchone()[0] or 0
    widths = [w if w is not None else max(4, min(NAME_MAX, names)) for _, w, _ in _COLUMNS]
    fmt = "  ".join("%s" if w == 0 else f"%-{w}s" for w in widths)
    sql = f"SELECT printf('{fmt}', {', '.join(expr for _, _, expr in _COLUMNS)}) FROM ({inner})"
    cur = store.conn.cursor()
    cur.row_factory = None
    head = fmt % tuple(h for h, _, _ in _COLUMNS)
    return [head] + [row[0] for row in cur.execute(sql, args)]
