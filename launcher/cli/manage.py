"""The experiment manager's subcommands: compare, export, plot, tag, note, rm, store, tensorboard.

Argument parsing for them lives here too (:func:`add_arguments`, called by :mod:`launcher.cli`
for the chosen subcommand only; tensorboard's options are :mod:`launcher.cli`'s own). Tags and notes are what the user says about a row, so these
commands write them; observed state (metrics, state) is refreshed through
:func:`launcher.store.reconcile.refresh` first, which stays its only writer.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from detcore.atomic import replacing
from launcher.errors import LauncherError
from launcher.views.printable import printable
from launcher.state import JobState
from launcher.store import Experiment, ExperimentStore

TAG_RE = re.compile(r"^[A-Za-z0-9._:+@/-]{1,64}$")


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    """The options of subcommand ``name``."""
    if name == "compare":
        p.add_argument("ids", nargs="+", metavar="ID", help="two or more experiment ids")
        p.add_argument("--json", action="store_true", help="one JSON object (config, final and best metrics)")
    elif name == "export":
        p.add_argument("ids", nargs="*", metavar="ID", help="experiments (default: all, or those --sweep/--tag pick)")
        p.add_argument("--sweep", help="only this sweep's experiments")
        p.add_argument("--tag", action="append", default=[], metavar="TAG", help="only experiments with this tag")
        p.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
        p.add_argument("--out", metavar="FILE", help="write here (replaced atomically) instead of to stdout")
    elif name == "plot":
        p.add_argument("ids", nargs="+", metavar="ID", help="experiments, one curve each")
        p.add_argument("--metric", default="loss", help="loss (default), bbox_AP, lr, ...: a key of metrics.jsonl")
        p.add_argument("--out", required=True, metavar="FILE.png", help="the PNG to write")
    elif name == "tag":
        p.add_argument("id", help="experiment id")
        p.add_argument("tags", nargs="+", metavar="TAG", help="tags (letters, digits, . _ : + @ / -)")
        p.add_argument("--remove", action="store_true", help="remove these tags instead")
    elif name == "note":
        p.add_argument("id", help="experiment id")
        p.add_argument("text", nargs="+", help="the note (replaces the old one; '' clears it)")
    elif name == "store":
        p.add_argument("action", choices=("check", "repair"),
                       help="check: SQLite's integrity check, nothing changed; repair: a damaged store is kept "
                            "aside and rebuilt, and rows that the experiment records hold but the store lacks "
                            "are put back")
    elif name == "rm":
        p.add_argument("ids", nargs="+", metavar="ID", help="finished experiments to remove")
        p.add_argument("--purge", action="store_true", help="also delete their work dirs")
        p.add_argument("--yes", action="store_true", help="with --purge: do not ask (needed without a terminal)")


def _experiments(store: ExperimentStore, ids: list[str]) -> list[Experiment]:
    """Full rows (with the spec) for ``ids``, each refreshed from its backend first; duplicates dropped."""
    from launcher.store.reconcile import refresh

    rows = list({e.id: e for e in (store.get(i) for i in ids)}.values())
    return refresh(store, rows)


def _write_text(text: str, out: str | None) -> None:
    """``text`` to stdout, or to ``out`` through a temporary file renamed into place."""
    if out is None:
        sys.stdout.write(text)
        return
    path = Path(out)
    if not path.parent.is_dir():
        raise LauncherError(f"--out {out!r}: folder {path.parent} does not exist; create it first")
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def cmd_compare(args: argparse.Namespace) -> int:
    from launcher.views.compare import comparison, comparison_lines, resolved_config

    store = ExperimentStore()
    exps = _experiments(store, args.ids)
    if len(exps) < 2:
        raise LauncherError("compare needs two or more different experiment ids")
    data = comparison(exps, [resolved_config(e) for e in exps])
    if args.json:
        print(json.dumps(data, sort_keys=True, default=str))
    else:
        from launcher.views.table_fit import terminal_width

        print("\n".join(comparison_lines(data, terminal_width())))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from launcher.views.compare import export_rows, resolved_config

    store = ExperimentStore()
    ids = args.ids or [e.id for e in store.list(sweep=args.sweep, tags=args.tag)]
    exps = _experiments(store, ids) if ids else []
    rows = export_rows(exps, [resolved_config(e) for e in exps])
    if args.format == "json":
        text = json.dumps(rows, indent=1, default=str) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    _write_text(text, args.out)
    if args.out:
        print(f"launcher: {len(rows)} experiment(s) written to {printable(args.out)}", file=sys.stderr)
    return 0


def curve_label(exp: Experiment, names: list[str]) -> str:
    """A sweep row by its grid values, another by its name; the id added where two would read the same."""
    from launcher.views.listing import grid_headers

    grid = exp.grid_values
    label = ", ".join(f"{h}={v}" for h, v in zip(grid_headers(list(grid)), grid.values())) if grid else exp.name
    return f"{label} ({exp.id})" if names.count(label) > 1 else label


def cmd_plot(args: argparse.Namespace) -> int:
    from launcher.views.plot import plot_curves

    store = ExperimentStore()
    exps = _experiments(store, args.ids)
    plain = [", ".join(f"{k}={v}" for k, v in e.grid_values.items()) if e.grid_values else e.name for e in exps]
    points = plot_curves([curve_label(e, plain) for e in exps], [e.work_dir for e in exps], args.metric, args.out)
    print(f"launcher: {printable(args.metric)} of {len(exps)} experiment(s) ({sum(points)} points) written to "
          f"{printable(args.out)}", file=sys.stderr)
    for exp, n in zip(exps, points):
        if not n:
            print(f"launcher: {exp.id} has no {args.metric} values yet", file=sys.stderr)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    bad = [t for t in args.tags if not TAG_RE.match(t)]
    if bad:
        raise LauncherError(f"tag {bad[0]!r}: use 1-64 letters, digits or . _ : + @ / - (no spaces or commas)")
    store = ExperimentStore()
    exp_id = store.get(args.id).id
    tags = store.update_tags(exp_id, remove=args.tags) if args.remove else store.update_tags(exp_id, add=args.tags)
    print(f"{exp_id}: {', '.join(tags) or '(no tags)'}")
    return 0


def cmd_note(args: argparse.Namespace) -> int:
    store = ExperimentStore()
    exp_id = store.get(args.id).id
    store.set_note(exp_id, " ".join(args.text).strip())
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    """``store check`` (exit 1 when damaged) and ``store repair``."""
    from launcher.store.repair import integrity_problem

    store = ExperimentStore()
    if args.action == "check":
        problem = integrity_problem(store.path, store.home)
        if problem:
            print(f"{store.path}: {problem}; `launcher store repair` keeps it aside and rebuilds it")
            return 1
        count = store.conn.execute("SELECT count(*) FROM experiments").fetchone()[0]
        kept = ""
        if store.filesystem:  # opened read-write: how it is kept, and why
            mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
            how = "kept for a network filesystem: rollback journal and a write lock" if store.on_network \
                else f"journal mode {mode}"
            kept = f"; {how} ({store.filesystem})"
        print(f"{store.path}: ok (SQLite's integrity_check), {count} experiment(s){kept}")
        return 0
    store.conn  # opening it rebuilds a damaged or lost store and says so
    restored = store.restore_missing()
    if restored.ids or restored.unreadable:
        print(f"launcher: restored {restored.describe()}")
    elif not store.repaired:
        print(f"launcher: {store.path} is sound and holds every experiment its records describe; nothing to repair")
    return 0


def _unsafe_to_delete(work_dir: str) -> bool:
    """The filesystem root, the home folder, the current folder or one above it: never purged."""
    path = os.path.realpath(work_dir)
    here = os.path.realpath(os.getcwd())
    return path in (os.path.sep, os.path.realpath(os.path.expanduser("~"))) or \
        here == path or here.startswith(path.rstrip(os.sep) + os.sep)


def cmd_rm(args: argparse.Namespace) -> int:
    store = ExperimentStore()
    store.writable()
    exps = _experiments(store, args.ids)
    busy = [e for e in exps if not e.state.is_terminal()]
    if busy:
        raise LauncherError("cannot remove experiments that have not ended: " + ", ".join(
            f"{e.id} ({e.state.value})" for e in busy) + "; `launcher cancel` them first")
    gone = {e.id for e in exps}
    purge: list[str] = []
    if args.purge:
        kept = {e.work_dir: e.id for e in store.list() if e.id not in gone}
        for work_dir in dict.fromkeys(e.work_dir for e in exps):
            if work_dir in kept:
                print(f"launcher: keeping {printable(work_dir)}: experiment {kept[work_dir]} still uses it",
                      file=sys.stderr)
            elif _unsafe_to_delete(work_dir):
                print(f"launcher: keeping {printable(work_dir)}: it is /, your home or contains the current folder",
                      file=sys.stderr)
            elif os.path.isdir(work_dir):
                purge.append(work_dir)
        if purge and not args.yes:
            if not sys.stdin.isatty():
                raise LauncherError("--purge would delete work dirs and there is no terminal to confirm on; "
                                    "add --yes to delete them")
            print("\n".join(map(printable, purge)), file=sys.stderr)
            answer = input(f"delete these {len(purge)} work dir(s) and everything in them? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("launcher: nothing removed", file=sys.stderr)
                return 1
    with store.transaction():
        for exp in exps:
            store.delete(exp.id)
    for exp in exps:
        print(f"{exp.id}: removed")
    for work_dir in purge:
        shutil.rmtree(work_dir, ignore_errors=True)
        shown = printable(work_dir)
        print(f"{shown}: deleted" if not os.path.exists(work_dir) else f"{shown}: could not be deleted fully")
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    import shlex
    import socket

    from launcher.views.tensorboard import (check_port, choose_port, port_is_free, run_links, serve, sync_links,
                                      tensorboard_command, url)

    check_port(args.port)
    if not args.refresh > 0:
        raise LauncherError(f"--refresh {args.refresh}: expected the seconds between looks for new experiments, "
                            f"above 0 (default 15)")
    store = ExperimentStore()
    ids = [store.get(i).id for i in args.ids] if args.ids else None
    state = JobState.parse(args.state) if args.state else None
    filters = dict(ids=ids, backend=args.backend, sweep=args.sweep, tags=args.tag)
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    with tempfile.TemporaryDirectory(prefix="detlaunch-tensorboard-") as logdir:  # the runs, named by symlinks
        exps = select_experiments(store, state, **filters)
        sync_links(run_links(exps), logdir)
        if not loopback:
            print(f"launcher: warning: TensorBoard on {args.host} is reachable from other machines", file=sys.stderr)
        if not exps:
            print("launcher: no experiments match yet; they appear in TensorBoard as they are submitted",
                  file=sys.stderr)
        if args.dry_run:
            port = choose_port(args.port, lambda p: port_is_free(args.host, p))
            where = url(args.host, port) if port else f"{args.host}, on a free port the system picks"
            print(f"TensorBoard for {len(exps)} experiment(s) would serve at {where}")
            for name, target in run_links(exps).items():
                print(printable(f"{logdir}/{name} -> {target}"))
            print(shlex.join(tensorboard_command(logdir, args.host, port)))
            return 0

        def serving(port: int) -> None:
            taken = f" ({args.port} is taken)" if port != args.port and args.port else ""
            print(f"TensorBoard for {len(exps)} experiment(s) at {url(args.host, port)}{taken}; "
                  f"experiments submitted from now on appear within a minute", flush=True)
            if loopback:
                print(f"from another machine: ssh -N -L 6006:127.0.0.1:{port} {socket.gethostname()}, "
                      f"then open http://127.0.0.1:6006/", flush=True)

        def refresh() -> None:
            added, removed = sync_links(run_links(select_experiments(store, state, **filters)), logdir)
            for name in added:
                print(f"TensorBoard: added {printable(name)}", flush=True)
            for name in removed:
                print(f"TensorBoard: removed {printable(name)}", flush=True)

        # SIGTERM/SIGINT/SIGHUP (or a SIGKILL of this process) end the server too
        return serve(logdir, args.host, args.port, serving, refresh, refresh_s=args.refresh)


def select_experiments(store: ExperimentStore, state: JobState | None = None, **filters) -> list[Experiment]:
    """The store's experiments that pass ``launcher list``'s filters, oldest first: ``state`` as
    their backends report it now (also where the store could not save it), the other ``filters``
    (``ids``, ``backend``, ``sweep``, ``tags``) as :meth:`ExperimentStore.list` takes them."""
    rows = store.list(**filters)
    if state is None:
        return rows
    from launcher.store.reconcile import refresh

    return [e for e in refresh(store, rows) if e.state is state]
