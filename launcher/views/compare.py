"""Experiments side by side: resolved configs as dotted keys, the keys that differ, and metric tables (pure
except :func:`resolved_config`, which reads the config files).

Used by ``launcher compare`` (a row per differing key, a column per experiment) and ``launcher export``
(a row per experiment, a flat column per varying key and per metric, numbers kept as numbers).
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

from detcore.contract import WorkDir
from launcher.errors import LauncherError
from launcher.views.metrics import trained_config
from launcher.views.printable import printable_cells
from launcher.store import Experiment

MISSING = None  # a key one experiment's config does not have
_IGNORED = ("filename",)  # where the config was read from: not a hyperparameter


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.02}}`` -> ``{"optimizer.lr": 0.02}``; lists stay values (compared whole)."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def resolved_config(exp: Experiment) -> dict[str, Any]:
    """The experiment's config with its overrides applied, flattened: from its config file, else (the file
    was moved or deleted) from the ``config.yaml`` the trainer wrote into the work dir."""
    from detcore.config import load_config
    from detcore.errors import DetcoreError

    spec = exp.spec_dict
    config = spec.get("config") or exp.config
    if os.path.isfile(config):
        try:
            cfg = load_config(config, tuple(spec.get("overrides") or ()), import_custom=False)
        except DetcoreError as exc:
            raise LauncherError(f"experiment {exp.id}: its config no longer loads: {exc}") from None
    else:
        cfg = trained_config(exp.work_dir)
        if cfg is None:
            raise LauncherError(f"experiment {exp.id}: its config {config} is gone and its work dir has no readable "
                                f"config ({WorkDir(exp.work_dir).config}); restore the config file to compare it")
    return {k: v for k, v in flatten(cfg).items() if k.split(".")[0] not in _IGNORED}


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Dotted keys whose value is not the same in every config (a key some lack counts), sorted."""
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({json.dumps(c.get(k, MISSING), sort_keys=True, default=str)
                                    for c in configs}) > 1]


def metric_keys(metric_sets: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the metric names, in first-seen order."""
    return list(dict.fromkeys(k for m in metric_sets for k in m))


def final_metrics(exp: Experiment) -> dict[str, Any]:
    return json.loads(exp.last_metrics or "{}")


def best_metrics(exp: Experiment) -> dict[str, Any]:
    return json.loads(exp.best_metrics or "{}")


def comparison(exps: Sequence[Experiment], configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What ``launcher compare --json`` prints: the experiments, each differing key's values and the
    final/best metrics, every list in the experiments' order."""
    finals = [final_metrics(e) for e in exps]
    bests = [best_metrics(e) for e in exps]
    return {
        "experiments": [{"id": e.id, "name": e.name, "state": e.state.value} for e in exps],
        "config": {k: [c.get(k, MISSING) for c in configs] for k in differing_keys(configs)},
        "final": {k: [m.get(k) for m in finals] for k in metric_keys(finals)},
        "best": {k: [m.get(k) for m in bests] for k in metric_keys(bests)},
    }


def cell(value: Any) -> str:
    """A table cell: ``-`` for nothing, numbers to 4 significant digits, lists and mappings as JSON."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def comparison_lines(data: Mapping[str, Any], width: int | None = None) -> list[str]:
    """``compare`` as text: each experiment's id, state and name, then an aligned table with a row per
    differing key or metric and a column per experiment headed by its id, in three sections. ``width``: the
    table's lines are cut to fit it (keys first, then values, each keeping its start and end)."""
    from launcher.views.listing import layout_cells
    from launcher.views.table_fit import Cap, cut_table, fit, shorten

    exps = data["experiments"]
    legend = [f"{e['id']}  {e['state']}  {e['name']}" for e in exps]
    head = ["KEY", *(e["id"] for e in exps)]
    table: list[list[str]] = [head]
    titles: dict[int, str] = {}  # line index -> a section's title, a line of its own (never cut to the columns)
    for section, title in (("config", "config (differing keys)"), ("final", "final metrics"),
                           ("best", "best evaluation")):
        titles[len(table) + len(titles)] = f"[{title}]"
        if not data[section]:
            titles[len(table) + len(titles)] = "(none)" if section != "config" else "(the configs are the same)"
        table += [[key, *(cell(v) for v in values)] for key, values in data[section].items()]
    table = [list(row) for row in printable_cells(table)]  # names and config values are user text
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    values = range(1, len(head))
    shown, caps = fit(widths, width, [*(Cap(i, 16) for i in values), Cap(0, 40), Cap(0, 24),
                                      *(Cap(i, 10) for i in values), Cap(0, 16)])
    lines = [line.rstrip() for line in layout_cells(cut_table(table, shown, caps))]
    for at in sorted(titles):
        lines.insert(at, titles[at])
    legend = [shorten(line, width) if width else line for line in printable_cells([legend])[0]]
    return [*legend, "", *lines]


def iso_time(stamp: float | None) -> str | None:
    """A Unix time as ISO 8601 in local time with its UTC offset (``2026-12-07T13:05:09+01:00``): what
    ``pandas.to_datetime`` and spreadsheets read; None stays None."""
    from datetime import datetime

    return None if stamp is None else datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


def export_rows(exps: Sequence[Experiment], configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per experiment: who it is, its varying hyperparameters (dotted keys), the effective
    LR and batch, and ``final.<metric>`` / ``best.<metric>`` columns. Every record has every column."""
    keys = differing_keys(configs)
    finals = [final_metrics(e) for e in exps]
    bests = [best_metrics(e) for e in exps]
    final_keys, best_keys = metric_keys(finals), metric_keys(bests)
    rows = []
    for exp, cfg, final, best in zip(exps, configs, finals, bests):
        scaling = json.loads(exp.scaling) if exp.scaling else {}
        row: dict[str, Any] = {
            "id": exp.id, "name": exp.name, "state": exp.state.value, "backend": exp.backend, "mode": exp.mode,
            "sweep": exp.sweep, "tags": ",".join(exp.tag_list), "note": exp.note, "world_size": exp.world_size,
            "total_batch": exp.total_batch, "base_lr": scaling.get("base_lr"), "lr": exp.lr,
            "max_iter": exp.max_iter, "last_iter": exp.last_iter, "restarts": exp.restarts,
            "duration_s": None if exp.started is None or exp.ended is None else round(exp.ended - exp.started, 3),
            "created": iso_time(exp.created), "started": iso_time(exp.started), "ended": iso_time(exp.ended),
        }
        for key in keys:
            value = cfg.get(key, MISSING)
            row[key] = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value
        row.update({f"final.{k}": final.get(k) for k in final_keys})
        row.update({f"best.{k}": best.get(k) for k in best_keys})
        rows.append(row)
    return rows
