"""What each ``launcher`` subcommand does (argument parsing lives in :mod:`launcher.cli`)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from typing import TYPE_CHECKING

from launcher.errors import LauncherError
from launcher.views.printable import printable
from launcher.state import JobState
from launcher.store import Experiment, ExperimentStore

if TYPE_CHECKING:
    from launcher.spec import Resources

EXIT_BY_STATE = {JobState.SUCCEEDED: 0, JobState.FAILED: 1, JobState.CANCELLED: 3}
SAY_SIZE_FIRST = 20  # a sweep that builds more specs says its size before building them (with a progress bar)


def _store() -> ExperimentStore:
    return ExperimentStore()


def _resources(args: argparse.Namespace) -> Resources:
    from launcher.spec import Resources

    gpus = args.gpus or 0
    nproc = args.nproc if args.nproc is not None else (gpus or 1)
    return Resources(nproc=nproc, gpus=gpus, nodes=getattr(args, "nodes", 1),
                     cpus_per_task=getattr(args, "cpus_per_task", None), mem_gb=getattr(args, "mem_gb", None),
                     time_min=_time_min(args))


def _time_min(args: argparse.Namespace) -> int | None:
    """``--time`` in minutes (Slurm's formats), None when not given or ``auto`` (set once the run is estimated)."""
    from launcher.walltime import parse_walltime

    text = getattr(args, "time", None)
    return parse_walltime(text) if text is not None and not _time_auto(args) else None


def _request(args: argparse.Namespace, module):
    from detcore.contract import WorkerArgs
    from launcher.jobs import SubmitRequest

    resources = _resources(args)
    resources = module.resources_from_args(args, resources)
    return SubmitRequest(config=args.config, backend=args.backend, overrides=tuple(args.cfg_options),
                         resources=resources, name=args.name, work_dir=args.work_dir,
                         resume=getattr(args, "resume", None), checkpoint=getattr(args, "test", None),
                         eval_metrics=tuple(getattr(args, "eval", ())), max_restarts=args.max_restarts,
                         backend_options=module.options_from_args(args),
                         worker_module=args.worker_module, hang_timeout_s=getattr(args, "hang_timeout", None),
                         worker=WorkerArgs(**{name: getattr(args, name) for name in WorkerArgs.submit_fields()}))


def _print_json(data) -> None:
    print(json.dumps(data, sort_keys=True, default=str))


def _wait(store: ExperimentStore, backend, exp: Experiment, args: argparse.Namespace, skip_lines: int = 0) -> int:
    """Follow ``exp`` (rank 0's log, less its first ``skip_lines``, unless --json) and return its exit status."""
    from launcher.views.follow import follow_experiment
    from launcher.store.reconcile import refresh

    try:
        if args.json:
            while not exp.state.is_terminal():
                time.sleep(1.0)
                exp = refresh(store, [store.get(exp.id)])[0]
            _print_json(exp.to_json())
        else:
            exp = follow_experiment(store, backend, exp.id, skip_lines=skip_lines)
            tail = f" ({printable(exp.reason)})" if exp.reason else ""
            print(f"launcher: experiment {exp.id} {exp.state.value}{tail}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"launcher: stopped following; {exp.id} keeps running (`launcher cancel {exp.id}` stops it)",
              file=sys.stderr)
        return 130
    return EXIT_BY_STATE.get(exp.state, 1)


# ---- submit / sweep / resume ------------------------------------------------------------------

def cmd_submit(args: argparse.Namespace) -> int:
    from launcher.backends import backend_module, require_installed
    from launcher.jobs import build_spec, submit_spec

    module = backend_module(args.backend)
    require_installed(args.backend)
    store = _store()
    if not args.dry_run:
        store.refuse_if_read_only()  # before the config is loaded: a read-only home is one line at once
    backend = module.create(store.home)
    spec = build_spec(_request(args, module))
    estimate = _estimate(store, spec) if args.dry_run or _time_auto(args) else None
    spec, time_line = _auto_time_specs(args, [spec], [estimate])
    spec = spec[0]
    dry = backend.dryrun(spec)
    if args.dry_run:
        if args.json:
            print(json.dumps({**dry.to_json(), "estimate": estimate.to_json(), "time_auto": time_line or None},
                             sort_keys=True))
        else:
            print("\n".join([dry.render(), estimate.text(), *([time_line] if time_line else [])]))
        return 0
    exp = submit_spec(store, backend, spec, dry=dry)
    if spec.scaling is not None:
        print(f"launcher: {spec.id}: {spec.scaling.describe()}", file=sys.stderr)
    if time_line:
        print(f"launcher: {spec.id}: {time_line}", file=sys.stderr)
    if args.json and args.detach:
        _print_json(exp.to_json())
    elif not args.json:
        print(exp.id, flush=True)
    return 0 if args.detach else _wait(store, backend, exp, args)


def _estimate(store: ExperimentStore, spec, measured: dict | None = None):
    """The estimate of ``spec``'s wall time from the finished runs in ``store`` (:mod:`launcher.views.estimate`);
    ``measured``: the runs already read, for the next spec of a sweep."""
    from detcore.config import load_config
    from launcher.views.estimate_runs import estimate_for_spec

    cfg = load_config(spec.config, spec.overrides, import_custom=False)
    return estimate_for_spec(store, spec, cfg, measured)


def _time_auto(args: argparse.Namespace) -> bool:
    from launcher.views.time_auto import AUTO

    return str(getattr(args, "time", None) or "").strip().lower() == AUTO


def _auto_time_specs(args: argparse.Namespace, specs: list, estimates: list) -> tuple[list, str]:
    """``specs`` with the ``--time auto`` limit (:mod:`launcher.views.time_auto`) and the line that says how it was
    made; as they are, and no line, without ``--time auto``."""
    if not _time_auto(args):
        return specs, ""
    from launcher.views.time_auto import auto_time

    minutes, line = auto_time(estimates)
    return [dataclasses.replace(s, resources=dataclasses.replace(s.resources, time_min=minutes))
            for s in specs], line


def _resume_resources(args: argparse.Namespace, old: Resources, module) -> Resources | None:
    """The resources a resume asks for (None: the old ones): new flags over the old values."""
    given = {k: getattr(args, k, None) for k in ("nproc", "gpus", "nodes", "cpus_per_task", "mem_gb")}
    given["time_min"] = _time_min(args)
    gpus = given["gpus"] if given["gpus"] is not None else (0 if given["nproc"] is not None else old.gpus)
    nproc = given["gpus"] or given["nproc"] or (old.nproc if given["gpus"] is None else gpus)
    resources = dataclasses.replace(old, nproc=nproc, gpus=gpus, **{k: v for k, v in given.items()
                                                                     if v is not None and k not in ("nproc", "gpus")})
    resources = module.resources_from_args(args, resources)
    return None if resources == old else resources


def cmd_resume(args: argparse.Namespace) -> int:
    """A new launch of a finished experiment (:func:`launcher.jobs.resume`), then follow it unless --detach."""
    from launcher.jobs import resume

    store = _store()

    def adjust(old, module):
        moved = args.backend not in (None, old.backend)
        return (_resume_resources(args, old.resources, module),
                _resume_options(args, module, old.backend_options, moved))

    done = resume(store, store.get(args.id).id, backend=args.backend, adjust=adjust,
                  max_restarts=args.max_restarts, hang_timeout_s=args.hang_timeout,
                  say=lambda line: print(f"launcher: {line}", file=sys.stderr))
    exp = done.experiment
    if args.json and args.detach:
        _print_json(exp.to_json())
    elif not args.json:
        print(exp.id, flush=True)
    return 0 if args.detach else _wait(store, done.backend, exp, args, skip_lines=done.shown_from)


def _resume_options(args: argparse.Namespace, module, old, moved: bool):
    """The backend options of a resume: the new backend's from the flags when it moves; on the same backend
    the old ones, with only the flags given now changed (``--exclude n3`` keeps the partition and account)."""
    given = module.options_from_args(args)
    if moved or old is None or given is None:
        return given
    defaults = type(given)()
    changed = {f.name: getattr(given, f.name) for f in dataclasses.fields(given)
               if getattr(given, f.name) != getattr(defaults, f.name)}
    return dataclasses.replace(old, **changed) if changed else old


def cmd_sweep(args: argparse.Namespace) -> int:
    """A grid's size at once: a refusal past the limit without --yes (every value checked first); else said as
    soon as the first combination's config checks out (a small grid: once all have, so any bad one stays one
    line). The specs are built one by one; a dry run of a big grid builds and renders only the first few."""
    import itertools

    from tqdm import tqdm

    from launcher.backends import backend_module, require_installed
    from launcher.backends.protocol import ArrayBackend
    from launcher.jobs import build_spec, default_name, submit_specs
    from launcher.spec import SlotPool, new_experiment_id
    from launcher.sweep import (DRY_RUN_SHOWN, SWEEP_LIMIT, check_values, combination_name, grid_shape, grid_size,
                                iter_grid, parse_grid, size_error)

    axes = parse_grid(args.grid)
    size, shape = grid_size(axes), grid_shape(axes)
    refusal = None if args.yes else size_error(size, shape)
    check_values(axes)
    if refusal and not args.dry_run:
        raise LauncherError(refusal)
    module = backend_module(args.backend)
    require_installed(args.backend)
    store = _store()
    if not args.dry_run:
        store.writable()
    backend = module.create(store.home)
    sweep_id = new_experiment_id()
    slots = SlotPool(sweep_id, args.max_parallel) if args.max_parallel is not None else None
    base = dataclasses.replace(_request(args, module), work_dir=None, slots=slots)
    base_name = args.name or default_name(args.config)
    shown = min(size, DRY_RUN_SHOWN) if args.dry_run and size > SWEEP_LIMIT else size
    combos = list(itertools.islice(iter_grid(axes), shown))

    def spec_of(combo: tuple[str, ...]):
        name = combination_name(base_name, combo)
        work_dir = os.path.join(args.work_dir, name) if args.work_dir else None
        return build_spec(dataclasses.replace(base, overrides=base.overrides + combo, name=name, work_dir=work_dir))

    specs = [spec_of(combos[0])]
    said = f"launcher: sweep of {size:,} experiment(s) ({shape})"
    if len(combos) > SAY_SIZE_FIRST:  # building the rest takes a while: say what is coming
        print(said, file=sys.stderr, flush=True)
    specs += [spec_of(combo) for combo in tqdm(combos[1:], desc="checking configs", unit="exp", file=sys.stderr,
                                                disable=len(combos) <= SAY_SIZE_FIRST or not sys.stderr.isatty())]
    if len(combos) <= SAY_SIZE_FIRST:  # all checked: a bad combination stayed one line
        print(said, file=sys.stderr, flush=True)
    if _time_auto(args):  # every task asks for the longest estimate's limit
        measured: dict = {}
        specs, time_line = _auto_time_specs(args, specs, [_estimate(store, s, measured) for s in specs])
        print(f"launcher: {time_line}", file=sys.stderr)
    array = isinstance(backend, ArrayBackend)
    dries = [backend.dryrun_array(specs)] if isinstance(backend, ArrayBackend) else [backend.dryrun(s) for s in specs]
    if args.dry_run:
        if args.json:
            _print_json([d.to_json() for d in dries])
        else:
            print("\n\n".join(d.render() for d in dries))
        if shown < size:
            print(f"launcher: the first {shown} of {size:,} experiments are shown"
                  + (f" (an array job of {size:,} tasks on submit)" if array else "")
                  + (f"; submitting more than {SWEEP_LIMIT} needs --yes" if refusal else ""), file=sys.stderr)
        return 0
    grids = [dict(item.lstrip("+").split("=", 1) for item in combo) for combo in combos]
    submitted = submit_specs(store, backend, specs, sweep=sweep_id, grids=grids, dries=dries)
    print(f"launcher: sweep {sweep_id}: {len(submitted)} experiments"
          + (f", at most {args.max_parallel} at a time" if slots else ""), file=sys.stderr)
    if args.json and args.detach:
        _print_json([e.to_json() for e in submitted])
    elif not args.json:
        for exp in submitted:
            print(f"{exp.id}  {printable(exp.name)}", flush=True)
    if args.detach:
        return 0
    return _wait_sweep(store, [e.id for e in submitted], args.json)


def _wait_sweep(store: ExperimentStore, ids: list[str], as_json: bool) -> int:
    """Follow a sweep to its end: a live bar on a terminal; where stdout is not one (a pipe, a log file, nohup)
    one line as each job ends (on stderr with --json, which keeps stdout for the JSON)."""
    from tqdm import tqdm

    from launcher.store.reconcile import refresh
    from launcher.views.status_text import ended_line

    bar = tqdm(total=len(ids), desc="sweep", unit="job", file=sys.stderr, disable=not sys.stderr.isatty())
    each = sys.stderr if as_json else sys.stdout
    per_job = not each.isatty() or bar.disable
    said: set[str] = set()
    try:
        while True:
            exps = refresh(store, store.list(ids=ids))
            done = sum(e.state.is_terminal() for e in exps)
            for exp in exps:
                if per_job and exp.state.is_terminal() and exp.id not in said:
                    said.add(exp.id)
                    print(ended_line(exp), file=each, flush=True)
            bar.n = done
            bar.set_postfix_str(" ".join(f"{s.value}={n}" for s in JobState
                                         if (n := sum(e.state is s for e in exps))))
            bar.refresh()
            if done == len(ids):
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("launcher: stopped following; the sweep keeps running", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if as_json:
        _print_json([e.to_json() for e in exps])
    else:
        from launcher.views.listing import table_lines
        from launcher.views.table_fit import terminal_width

        print("\n".join(table_lines(store, ids=ids, width=terminal_width())))
    return 0 if all(e.state is JobState.SUCCEEDED for e in exps) else 1


# ---- reading ---------------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    """The table fits the terminal (``COLUMNS``, else the terminal's width; a pipe gets whole rows)."""
    from launcher.views.listing import json_row, list_table, order_sql
    from launcher.views.table_fit import terminal_width

    store = _store()
    state = JobState.parse(args.state) if args.state else None
    filters = dict(backend=args.backend, sweep=args.sweep, tags=args.tag)
    active = store.list(active=True, **filters)
    derived = {}
    if active:
        from launcher.store.reconcile import refresh

        derived = {e.id: e for e in refresh(store, active)}  # what the jobs report, even if it could not be saved
    if args.json:
        if args.limit is not None and args.limit < 1:
            raise LauncherError(f"--limit {args.limit}: expected a positive number of rows")
        rows = [derived.get(e.id, e) for e in store.list(order=order_sql(args.sort, args.reverse), **filters)]
        rows = [e for e in rows if state is None or e.state is state][:args.limit]
        _print_json([json_row(e) for e in rows])
    else:
        # the derived states, also where the store could not save them, and last known ones marked "?"
        shown = {e.id: state_text(e) for e in derived.values()}
        columns = [c for c in args.columns.split(",") if c.strip()] if args.columns else None
        width = terminal_width()
        lines, hidden = list_table(store, state, sort=args.sort, reverse=args.reverse, limit=args.limit,
                                   wide=args.wide, states=shown, width=width, columns=columns, **filters)
        if len(lines) == 1:
            filtered = state is not None or any(filters.values())
            print("no experiments match these filters; `launcher list` shows them all" if filtered else
                  "no experiments yet: launcher submit CONFIG starts one")
        else:
            sys.stdout.write("\n".join(lines) + "\n")
        if hidden and sys.stderr.isatty():
            print(f"launcher: {', '.join(hidden)} left out to fit {width} columns (--wide: all, --columns: "
                  f"your choice)", file=sys.stderr)
    warn_stale(derived.values())
    return 0


def state_text(exp: Experiment) -> str:
    """``running``, or ``running?`` when it is the last known state (its backend could not be asked)."""
    return exp.state.value + ("?" if exp.stale else "")


def warn_stale(exps) -> None:
    """One line on stderr per reason some states are only the last known ones."""
    reasons: dict[str, int] = {}
    for exp in exps:
        if exp.stale:
            reasons[exp.stale] = reasons.get(exp.stale, 0) + 1
    for reason, n in reasons.items():
        print(f"launcher: warning: {n} experiment(s) show their last known state, marked '?': {printable(reason)}",
              file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from launcher.store.reconcile import refresh, weights_fact
    from launcher.views.status_text import eta_text, status_lines

    store = _store()
    exp = refresh(store, [store.get(args.id)])[0]  # derived even when the store cannot be written
    weights = weights_fact(exp)
    if args.json:
        _print_json({**exp.to_json(), "weights": weights})
        return 0
    estimate = None
    if eta_text(exp) == "estimating":  # not measured yet: what finished runs that resemble it took
        from launcher.views.estimate_runs import estimate_started

        estimate = estimate_started(store, exp)
    print("\n".join(status_lines(exp, weights=weights, estimate=estimate)))
    if exp.backend == "local" and not exp.state.is_terminal() and not store.read_only:
        from launcher.backends.local.cores import describe_cores
        from launcher.resources.leases import CPU_POOL, LeaseBook

        held = LeaseBook(store.home).held_by(exp.id)
        if held:
            print("leases: " + "; ".join(f"{pool} {describe_cores(units) if pool == CPU_POOL else ','.join(units)}"
                                         for pool, units in sorted(held.items())))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from launcher.backends import get_backend
    from launcher.store.reconcile import handle_of

    store = _store()
    exp = store.get(args.id)
    backend = get_backend(exp.backend, store.home)
    try:
        for line in backend.logs(handle_of(exp), args.rank, args.follow):
            print(line, flush=args.follow)
    except BrokenPipeError:
        pass
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from launcher.jobs import cancel

    store = _store()
    for exp_id in args.ids:
        exp, already = cancel(store, store.get(exp_id).id)
        print(f"{exp.id}: already {exp.state.value}" if already else f"{exp.id}: {exp.state.value}")
    return 0