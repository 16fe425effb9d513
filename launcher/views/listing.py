"""The ``launcher list`` table: SQLite filters, sorts, limits and formats each cell; :func:`layout` aligns them.

Every cell is an SQL expression (``printf``, ``json_extract``, ``json_each``), so Python touches
no row field by field and 10,000 rows print in well under 0.3 s. A sweep's rows show their grid
values as columns of their own (one per grid key) next to the sweep's base name; the LR column
shows the configured (grid) value, and the scaled one next to it when the scaling rule changed it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from launcher.errors import LauncherError
from launcher.views.printable import printable_cells
from launcher.state import JobState
from launcher.store import Experiment, ExperimentStore
from launcher.views.table_fit import Cap, Drop, cut_table, fit

# the configured LR: the number after ``"base_lr":`` in ``scaling``, read by CAST (which stops at the comma;
# null reads as 0: none)
_BASE_LR = ("CASE WHEN instr(scaling, '\"base_lr\":') = 0 THEN NULL "
            "ELSE NULLIF(CAST(substr(scaling, instr(scaling, '\"base_lr\":') + 10) AS REAL), 0.0) END")
# --sort KEY -> an SQL expression over the table's own columns (never user text)
SORT_KEYS = {
    "created": "created", "id": "id", "name": "name", "state": "state", "backend": "backend",
    "ap": "COALESCE(best_ap, last_ap)", "loss": "last_loss", "iter": "last_iter",
    # the configured LR (a grid's value, before any scaling rule), else the one used
    "lr": "COALESCE(" + _BASE_LR + ", lr)",
    "duration": "(COALESCE(ended, {now}) - started)", "restarts": "restarts",
}
_NOT_NULL = ("created", "id")
# the columns the cells below read (never ``spec``: sorting whole rows would carry every spec along)
_READ = ("id, name, state, backend, mode, world_size, restarts, lr, scaling, last_iter, max_iter, max_epoch, "
         "last_metrics, started, ended, created, last_loss, last_ap, best_ap, tags, note, grid")


def order_sql(key: str, reverse: bool = False, now: float | None = None) -> str:
    """``ORDER BY`` text for ``--sort KEY`` (``-KEY`` or ``reverse``: descending); rows without a value last."""
    desc = reverse
    if key.startswith("-"):
        key, desc = key[1:], not desc
    if key not in SORT_KEYS:
        raise LauncherError(f"--sort {key!r}: unknown key; choose one of {', '.join(SORT_KEYS)} "
                            f"(prefix - or add --reverse for descending)")
    if key in _NOT_NULL:  # plain, so SQLite can walk an index instead of sorting
        return f"{key} DESC, id DESC" if desc else f"{key}, id"
    expr = SORT_KEYS[key].format(now=repr(float(time.time() if now is None else now)))
    return f"({expr}) IS NULL, {expr}{' DESC' if desc else ''}, created, id"


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


def grid_headers(keys: Sequence[str]) -> list[str]:
    """Column headers for grid keys: the last part of each dotted key, the whole key where two would clash."""
    short = [k.split(".")[-1] for k in keys]
    return [s if short.count(s) == 1 else k for s, k in zip(short, keys)]


# One SQL expression per column, evaluated over ``experiments`` rows plus ``ap`` (best, else newest AP), ``dur``
# (whole seconds run so far), ``base_lr`` (the configured LR, from the scaling record) and ``gk`` (the last part
# of a sweep row's first grid key: its name is cut before ``-gk=``, see sweep.combination_name). JSON columns
# are read with string functions where their form is fixed (a JSON parse per row is most of the cost): ``tags``
# is ``["a", "b"]`` of tags without quotes or commas (manage.TAG_RE), ``grid`` is ``{"key": ...}``, and the
# number after ``"base_lr":`` in ``scaling`` is read by CAST (which stops at the comma; null reads as 0: none).
# LR and DURATION mirror lr_text and duration_text, which status uses.
_CELLS = {
    "ID": "id",
    "NAME": "CASE WHEN gk IS NOT NULL AND instr(name, '-' || gk || '=') > 1 "
            "THEN substr(name, 1, instr(name, '-' || gk || '=') - 1) ELSE name END",
    "STATE": "state",
    "BACKEND": "backend",
    # a running job's progress ends with its time left: the ETA of its newest progress line (metrics.jsonl's
    # eta_s, which status_text.eta_text also shows), ``eta ?`` while that line still says "estimating"
    "PROGRESS": "CASE WHEN mode = 'test' THEN 'test' "
                "WHEN max_epoch IS NOT NULL THEN COALESCE(json_extract(last_metrics, '$.epoch'), 0) || '/' || "
                "max_epoch || ' ep' WHEN max_iter IS NOT NULL THEN COALESCE(last_iter, 0) || '/' || max_iter "
                "ELSE COALESCE(CAST(last_iter AS TEXT), '-') END || "
                "CASE WHEN mode = 'test' OR state NOT IN ('running', 'restarting') THEN '' "
                "WHEN COALESCE(json_type(last_metrics, '$.eta_s'), '') NOT IN ('integer', 'real') THEN ' eta ?' "
                "ELSE printf(' eta %d:%02d:%02d', CAST(json_extract(last_metrics, '$.eta_s') AS INTEGER) / 3600, "
                "CAST(json_extract(last_metrics, '$.eta_s') AS INTEGER) / 60 % 60, "
                "CAST(json_extract(last_metrics, '$.eta_s') AS INTEGER) % 60) END",
    "DURATION": "CASE WHEN dur IS NULL OR dur < 0 THEN '-' ELSE printf('%d:%02d:%02d', dur / 3600, dur / 60 % 60, "
                "dur % 60) END",
    "LOSS": "CASE WHEN last_loss IS NULL THEN '-' ELSE printf('%.4f', last_loss) END",
    "BEST AP": "CASE WHEN ap IS NULL THEN '-' ELSE printf('%.3f', ap) END",
    "LR": "CASE WHEN lr IS NULL THEN (CASE WHEN base_lr IS NULL THEN '-' ELSE printf('%g', base_lr) END) "
          "WHEN base_lr IS NULL OR base_lr = lr OR base_lr = 0 THEN printf('%g', lr) "
          "ELSE printf('%g (x%.3g %g)', base_lr, lr / base_lr, lr) END",
    "TAGS": "CASE WHEN tags = '[]' THEN '-' ELSE replace(substr(tags, 3, length(tags) - 4), '\", \"', ',') END",
}
_WIDE = {
    "NAME": "name",
    "WORLD": "CAST(world_size AS TEXT)",
    "RESTARTS": "CAST(restarts AS TEXT)",
    "CREATED": "strftime('%Y-%m-%d %H:%M', created, 'unixepoch', 'localtime')",
    "NOTE": "CASE WHEN note = '' THEN '-' ELSE note END",
}
_DERIVED = ("COALESCE(best_ap, last_ap) AS ap, "
            "CAST(COALESCE(ended, ?) - started AS INTEGER) AS dur, "
            f"{_BASE_LR} AS base_lr, "
            "CASE WHEN grid = '{}' THEN NULL ELSE replace(substr(grid, 3, instr(substr(grid, 3), '\"') - 1), "
            "rtrim(substr(grid, 3, instr(substr(grid, 3), '\"') - 1), "
            "replace(substr(grid, 3, instr(substr(grid, 3), '\"') - 1), '.', '')), '') END AS gk")


def layout(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Header plus one line per row of string cells, each column padded to its widest cell, two spaces
    apart (pure). Control characters in a cell (a note, a name, a grid value) are shown escaped."""
    return layout_cells(printable_cells([tuple(head), *rows]))


def layout_cells(table: Sequence[Sequence[str]]) -> list[str]:
    """Rows of printable cells aligned: each column padded to its widest cell, two spaces apart (pure)."""
    if not table or not table[0]:
        return [""] * len(table)
    widths = [max(map(len, column)) for column in zip(*table)]
    fmt = "  ".join(f"%-{w}s" for w in widths[:-1]) + ("  %s" if len(widths) > 1 else "%s")
    return [fmt % tuple(line) for line in table]


def is_lr_key(key: str) -> bool:
    """A grid key that sets the optimizer's LR (``optimizer.lr``, ``optim_wrapper.optimizer.lr``): shown in the
    LR column, which holds the configured value, instead of a column of its own."""
    parts = key.lstrip("+").split(".")
    return len(parts) >= 2 and parts[-1] == "lr" and parts[-2] == "optimizer"


# ``--columns`` names -> headers; ``grid`` stands for every grid column, a grid key's header for its own
COLUMNS = {"id": "ID", "name": "NAME", "state": "STATE", "backend": "BACKEND", "progress": "PROGRESS",
           "duration": "DURATION", "loss": "LOSS", "ap": "BEST AP", "lr": "LR", "tags": "TAGS", "world": "WORLD",
           "restarts": "RESTARTS", "created": "CREATED", "note": "NOTE"}
# what goes first when a table must narrow: these columns, in this order (ID, NAME, STATE, PROGRESS and
# BEST AP always stay); then NAME and the grid columns are cut, then the grid columns dropped, last first
DROPPED_FIRST = ("NOTE", "CREATED", "RESTARTS", "WORLD", "BACKEND", "TAGS", "LOSS", "DURATION", "LR")


def table_lines(store: ExperimentStore, state: JobState | None = None, backend: str | None = None,
                sweep: str | None = None, ids: Iterable[str] | None = None, tags: Iterable[str] = (),
                sort: str = "created", reverse: bool = False, limit: int | None = None, wide: bool = False,
                now: float | None = None, states: Mapping[str, str] | None = None, width: int | None = None,
                columns: Sequence[str] | None = None) -> list[str]:
    """:func:`list_table`'s lines."""
    return list_table(store, state, backend, sweep, ids, tags, sort, reverse, limit, wide, now, states, width,
                      columns)[0]


def list_table(store: ExperimentStore, state: JobState | None = None, backend: str | None = None,
               sweep: str | None = None, ids: Iterable[str] | None = None, tags: Iterable[str] = (),
               sort: str = "created", reverse: bool = False, limit: int | None = None, wide: bool = False,
               now: float | None = None, states: Mapping[str, str] | None = None, width: int | None = None,
               columns: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Header plus one aligned line per experiment (oldest first unless ``sort`` says otherwise), and the headers
    of the columns left out to fit ``width``. A column per grid key of the rows shown (in the order the grid was
    typed) holds a sweep row's value; NAME is then the sweep's base name (``wide``: full); an LR grid key is the
    LR column. ``width``: at most this many characters a line (None: no limit), columns dropped or cut in the
    order of DROPPED_FIRST; ``wide`` shows every column, ``columns`` (names of COLUMNS or grid headers) exactly
    those, neither cut to a width. ``states``: id -> the STATE cell to show instead of the stored state (a
    derived state the store could not save, or a last known one marked ``running?``)."""
    if limit is not None and limit < 1:
        raise LauncherError(f"--limit {limit}: expected a positive number of rows")
    now = time.time() if now is None else now
    order = order_sql(sort, reverse, now)
    shown, shown_args = store.select_sql("created, grid", state, backend, sweep, ids, tags=tags, order=order,
                                         limit=limit)
    keys = [k for k, in store.conn.execute(f"SELECT j.key FROM ({shown}) AS e, json_each(e.grid) AS j "
                                           f"WHERE e.grid != '{{}}' GROUP BY j.key ORDER BY MIN(e.created), MIN(j.id)",
                                           shown_args)]
    inner, args = store.select_sql(f"{_READ}, {_DERIVED}", state, backend, sweep, ids, tags=tags, order=order, limit=limit)
    args = [now, *args]
    cells = dict(_CELLS)
    if states:  # ids are hex digits, so '$."<id>"' is a plain JSON path
        cells["STATE"] = f"COALESCE(json_extract({_quote(json.dumps(dict(states)))}, '$.\"' || id || '\"'), state)"
    if wide or columns:
        cells.update(_WIDE if wide else {k: v for k, v in _WIDE.items() if k != "NAME"})
    grid_head = dict(zip(keys, grid_headers(keys)))
    head = ["ID", "NAME"]
    exprs = [cells["ID"], cells["NAME"]]
    for key in keys:  # the grid columns, the LR column in its grid key's place
        if is_lr_key(key):
            if "LR" not in head:
                head.append("LR")
                exprs.append(cells["LR"])
            continue
        head.append(grid_head[key])
        exprs.append(f"CASE WHEN grid = '{{}}' THEN '-' ELSE COALESCE(json_extract(grid, "
                     f"{_quote('$.' + json.dumps(key))}), '-') END")
    grid_columns = [h for h in head[2:]]
    rest = [h for h in cells if h not in ("ID", "NAME") and h not in head]
    head += rest
    exprs += [cells[h] for h in rest]
    cur = store.conn.cursor()
    cur.row_factory = None
    rows = cur.execute(f"SELECT {', '.join(exprs)} FROM ({inner})", args).fetchall()
    table = printable_cells([tuple(head), *rows])
    if columns:
        picked = _picked(columns, head, grid_columns, {grid_head[k]: k for k in keys})
        return layout_cells([[row[i] for i in picked] for row in table]), []
    if wide or width is None:
        return layout_cells(table), []
    widths = [max(map(len, column)) for column in zip(*table)]
    where = {h: i for i, h in enumerate(head)}
    grid_ix = [where[h] for h in grid_columns if h != "LR"]
    steps: list = [Drop(where[h]) for h in DROPPED_FIRST if h in where and h not in grid_columns]
    # a sweep's rows share its name and differ in their grid values: the name is cut further before those go
    steps += [Cap(1, 24), *(Cap(i, 12) for i in grid_ix), Cap(1, 16), *(Cap(i, 8) for i in grid_ix), Cap(1, 10)]
    steps += [Drop(where[h]) for h in reversed(grid_columns)]
    steps += [Cap(1, 8)]
    kept, caps = fit(widths, width, steps)
    hidden = [h for i, h in enumerate(head) if i not in kept]
    return layout_cells(cut_table(table, kept, caps)), hidden


def _picked(columns: Sequence[str], head: list[str], grid_columns: list[str], grid_keys: Mapping[str, str]) -> list[int]:
    """The indices of ``--columns`` names in ``head``: COLUMNS names, ``grid``, or a grid column's header or key."""
    by_key = {v: k for k, v in grid_keys.items()}
    picked: list[int] = []
    for raw in columns:
        name = raw.strip()
        if name.lower() == "grid":
            wanted = grid_columns
        elif name.lower() in COLUMNS:
            wanted = [COLUMNS[name.lower()]]
        elif name in grid_keys or name in by_key:
            wanted = [name if name in grid_keys else by_key[name]]
        else:
            raise LauncherError(f"--columns {name!r}: unknown column; choose from {', '.join(COLUMNS)}, grid"
                                + (f" or a grid key ({', '.join(grid_keys)})" if grid_keys else ""))
        for header in wanted:
            if header not in head:  # an LR grid key: the LR column (absent only from an empty grid list)
                continue
            if head.index(header) not in picked:
                picked.append(head.index(header))
    return picked


def _quote(text: str) -> str:
    """An SQL string literal (the grid keys come from the store, but are quoted all the same)."""
    return "'" + text.replace("'", "''") + "'"


def best_checkpoint(exp: Experiment) -> str | None:
    """The checkpoint of the run's best evaluation: its ``best_<metric>.pth`` (``save_best``), else the periodic
    checkpoint saved at that evaluation's iteration or epoch while it is still on disk; None when neither is."""
    from launcher.views.metrics import AP_KEYS

    work = Path(exp.work_dir)
    for key in AP_KEYS:
        if (work / f"best_{key}.pth").is_file():
            return str(work / f"best_{key}.pth")
    others = sorted(work.glob("best_*.pth")) if work.is_dir() else []
    if others:
        return str(others[0])
    best = json.loads(exp.best_metrics or "{}")
    for unit in ("iter", "epoch"):
        if isinstance(best.get(unit), int) and (work / f"{unit}_{best[unit]}.pth").is_file():
            return str(work / f"{unit}_{best[unit]}.pth")
    return None


def json_row(exp: Experiment, now: float | None = None) -> dict:
    """A ``launcher list --json`` record: the stored one, plus ``duration_s`` (seconds run, so far for a running
    job; None before it starts) and ``best_checkpoint`` (see :func:`best_checkpoint`)."""
    now = time.time() if now is None else now
    duration = None if exp.started is None else round((exp.ended or now) - exp.started, 3)
    return {**exp.to_json(), "duration_s": duration, "best_checkpoint": best_checkpoint(exp)}
