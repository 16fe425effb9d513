"""The ``launcher`` command: submit, list, status, logs, cancel, resume, sweep, tensorboard, and the experiment
manager's compare, export, plot, tag, note, rm (:mod:`launcher.cli.manage`).

Only the chosen subcommand's parser is built in full, and backend modules are imported only
for ``submit``/``sweep`` (each adds its own option group through ``add_arguments``), so
``launcher list`` starts without importing torch, yaml or any backend library. User errors
print one line on stderr and exit 2; job outcomes map to exit statuses (see ``submit -h``).
"""
from __future__ import annotations

import argparse
import os
import sys

from detcore.errors import DetcoreError

EXIT_HELP = ("exit status without --detach: 0 succeeded, 1 failed, 3 cancelled; 2 for a usage or config error; "
             "130 when you stop following (the job keeps running)")

COMMANDS = {
    "submit": "submit one training (or --test) job",
    "list": "list experiments",
    "status": "show one experiment",
    "logs": "print (or follow) a rank's log",
    "cancel": "stop experiments and everything they started",
    "resume": "run a finished, failed or cancelled experiment again from its newest checkpoint",
    "sweep": "one experiment per combination of --grid values",
    "tensorboard": "one TensorBoard over several experiments",
    "compare": "configs and metrics of experiments side by side",
    "export": "experiments as one CSV or JSON table (hyperparameters and metrics) for pandas",
    "plot": "curves of a metric for several experiments in one PNG",
    "tag": "add (or --remove) tags",
    "note": "set an experiment's note",
    "rm": "remove finished experiments from the store (--purge: and their work dirs)",
    "store": "check the experiment store, or repair it from the experiment records and job folders",
}
# subcommands whose code lives in launcher.cli.manage (the rest: launcher.cli.commands)
MANAGE = ("compare", "export", "plot", "tag", "note", "rm", "store", "tensorboard")

_GPU_IDS = "use --gpus N: the launcher leases free GPUs itself and sets CUDA_VISIBLE_DEVICES per job"
_PORT = "the launcher picks a free rendezvous port itself; drop it"
# MMDetection (tools/train.py, dist_train.sh) and torchrun habits -> the launcher's flags (detcore.tools.old_flags)
RESOURCE_HINTS = {
    "--launcher": "use --backend local|slurm|ray (the launcher starts torchrun, srun or Ray Train itself)",
    "--gpu-ids": _GPU_IDS, "--gpu-id": _GPU_IDS,
    "--nproc-per-node": "use --nproc N (CPU workers) or --gpus N (one worker per GPU), per node",
    "--nproc_per_node": "use --nproc N (CPU workers) or --gpus N (one worker per GPU), per node",
    "--nnodes": "use --nodes N", "--master-port": _PORT, "--master_port": _PORT, "--rdzv-endpoint": _PORT,
    "--local_rank": "the launcher starts one worker per rank itself; drop it",
}
JOB_HINTS = {
    **RESOURCE_HINTS,
    "--resume-from": "use --resume PATH (the default, auto, continues from the work dir's newest checkpoint)",
    "--auto-resume": "--resume auto is the default: a job continues from its work dir's newest checkpoint",
    "--options": "use --cfg-options KEY=VALUE ... (the same syntax)",
    "--auto-scale-lr": ("the worker applies auto_scale_lr whenever the config enables it, at the world size it runs "
                        "at; turn it on with --cfg-options auto_scale_lr.enable=true"),
    "--diff-seed": "each rank already draws its own seed from --seed; drop --diff-seed",
}


def _add_hints(p: argparse.ArgumentParser, hints: dict[str, str]) -> None:
    from detcore.tools.old_flags import add_hints

    add_hints(p, hints, origin="MMDetection's tools/train.py or torchrun")


def _add_backend_groups(p: argparse.ArgumentParser) -> None:
    from launcher.backends import BACKENDS, backend_module

    for name in BACKENDS:
        try:
            module = backend_module(name)
        except Exception:  # not installed, not written yet or broken: --backend NAME then says why
            continue
        module.add_arguments(p.add_argument_group(f"{name} backend options"))


def _add_job_arguments(p: argparse.ArgumentParser, sweep: bool) -> None:
    from detcore.contract import WorkerArgs

    p.add_argument("config", help="path to a YAML config")
    p.add_argument("--backend", default="local", help="local (default), slurm or ray")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--nproc", type=int, help="CPU worker processes per node (default 1)")
    res.add_argument("--gpus", type=int, help="GPUs per node, one worker each")
    p.add_argument("--nodes", type=int, default=1, help="nodes (Slurm/Ray; default 1)")
    p.add_argument("--cpus-per-task", type=int, help="CPUs per worker (Slurm/Ray)")
    p.add_argument("--mem-gb", type=float, help="memory per node in GB (Slurm/Ray)")
    p.add_argument("-t", "--time", dest="time", metavar="TIME",
                   help="wall-time limit (Slurm's formats: MM, HH:MM:SS, D-HH:MM, ...); auto: the estimate from "
                        "finished runs that resemble this one x1.5 + 10 min")
    p.add_argument("--name", help="experiment name (default: the config's file name)")
    p.add_argument("--work-dir", help="work dir (default work_dirs/NAME-ID)" if not sweep else
                   "folder under which each combination gets its own work dir (default work_dirs/)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. optimizer.lr=0.01 (prefix new keys with +)")
    p.add_argument("--max-restarts", type=int, default=2,
                   help="restart the worker group up to K times after a worker dies, resuming from the newest "
                        "checkpoint (default 2; a worker's user error, exit code 2, is never restarted)")
    p.add_argument("--hang-timeout", type=float, metavar="S",
                   help="end and restart an attempt in which no rank finishes an iteration for S seconds (0: off; "
                        "default 1800 for runs of 5000+ iterations or epoch-based, else off)")
    WorkerArgs.add_submit_arguments(p)  # --seed, --amp, --deterministic, --load-from, --no-validate
    p.add_argument("--detach", action="store_true", help="return at once; the job keeps running")
    p.add_argument("--dry-run", action="store_true", help="print what would run and start nothing")
    p.add_argument("--json", action="store_true", help="print JSON records instead of text")
    p.add_argument("--worker-module", default="detcore.tools.cli", help=argparse.SUPPRESS)
    if not sweep:
        p.add_argument("--resume", default=None, metavar="auto|never|PATH",
                       help="auto: continue the run in --work-dir from its newest checkpoint (the default for a new "
                            "work dir; a --work-dir that holds a run needs it said); never; or a checkpoint file")
        p.add_argument("--test", metavar="CHECKPOINT", help="a test job: evaluate CHECKPOINT on the test split")
        p.add_argument("--eval", nargs="+", default=[], metavar="METRIC", help="with --test: bbox and/or segm")
    else:
        from launcher.sweep import SWEEP_LIMIT

        p.add_argument("--grid", action="append", default=[], required=True, metavar="KEY=V1,V2",
                       help="a config key and its values; repeat for more keys (every combination runs)")
        p.add_argument("--max-parallel", type=int, help="at most P of the sweep's jobs run at once")
        p.add_argument("--yes", action="store_true",
                       help=f"submit a grid of more than {SWEEP_LIMIT} experiments (refused without it)")
    _add_backend_groups(p)
    _add_hints(p, JOB_HINTS)


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launcher", description="detlaunch: run detcore jobs locally, on Slurm or "
                                                                  "on Ray, and manage them as experiments",
                                     allow_abbrev=False)
    parser.add_argument("--version", action=_VersionAction, help="print the detlaunch (and torch) version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False,
                           epilog=EXIT_HELP if name in ("submit", "sweep", "resume") else None)
        if chosen is not None and name != chosen:
            continue
        if name in ("submit", "sweep"):
            _add_job_arguments(p, sweep=name == "sweep")
        elif name == "list":
            p.add_argument("--state", help="only this state (queued, pending, running, ..., cancelled)")
            p.add_argument("--backend", help="only this backend")
            p.add_argument("--sweep", help="only this sweep's experiments")
            p.add_argument("--tag", action="append", default=[], metavar="TAG",
                           help="only experiments with this tag (repeat: with all of them)")
            p.add_argument("--sort", default="created", metavar="KEY",
                           help="created (default), name, state, backend, ap, loss, duration, iter, lr, restarts, id; "
                                "-KEY for descending")
            p.add_argument("--reverse", action="store_true", help="descending order")
            p.add_argument("--limit", type=int, metavar="N", help="only the first N rows of that order")
            p.add_argument("--wide", action="store_true",
                           help="every column, uncut: full sweep names, world size, restarts, created, note")
            p.add_argument("--columns", metavar="A,B,...",
                           help="exactly these columns, in this order: id, name, state, backend, progress, duration, "
                                "loss, ap, lr, tags, world, restarts, created, note, grid (every grid key) or a grid "
                                "key such as seed")
            p.add_argument("--json", action="store_true", help="one JSON array of records")
        elif name == "status":
            p.add_argument("id", help="experiment id (a unique prefix is enough)")
            p.add_argument("--json", action="store_true", help="print the record as JSON")
        elif name == "logs":
            p.add_argument("id", help="experiment id")
            p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
            p.add_argument("--rank", type=int, default=0, help="which rank's log (default 0)")
        elif name == "cancel":
            p.add_argument("ids", nargs="+", metavar="ID", help="experiment ids")
        elif name == "resume":
            p.add_argument("id", help="experiment id")
            p.add_argument("--backend", help="continue on another backend (local, slurm or ray); same work dir and "
                                             "experiment, attempt history kept")
            res = p.add_mutually_exclusive_group()
            res.add_argument("--nproc", type=int, help="new number of CPU workers (scaling is recomputed)")
            res.add_argument("--gpus", type=int, help="new number of GPUs (scaling is recomputed)")
            p.add_argument("--nodes", type=int, help="new number of nodes (Slurm/Ray)")
            p.add_argument("--cpus-per-task", type=int, help="CPUs per worker (Slurm/Ray)")
            p.add_argument("--mem-gb", type=float, help="memory per node in GB (Slurm/Ray)")
            p.add_argument("-t", "--time", dest="time", metavar="TIME",
                           help="new wall-time limit (Slurm's formats: MM, HH:MM:SS, D-HH:MM, ...)")
            p.add_argument("--max-restarts", type=int, help="new restart budget")
            p.add_argument("--hang-timeout", type=float, metavar="S", help="new hang watchdog limit (0: off)")
            _add_backend_groups(p)
            _add_hints(p, RESOURCE_HINTS)
            p.add_argument("--detach", action="store_true", help="return at once")
            p.add_argument("--json", action="store_true", help="print the record as JSON")
        elif name == "tensorboard":
            p.add_argument("ids", nargs="*", metavar="ID", help="experiments to show (default: all that match the "
                                                                "filters, also those submitted while it runs)")
            p.add_argument("--state", help="only experiments in this state (queued, pending, running, ..., cancelled)")
            p.add_argument("--backend", help="only this backend's experiments")
            p.add_argument("--sweep", help="only this sweep's experiments")
            p.add_argument("--tag", action="append", default=[], metavar="TAG",
                           help="only experiments with this tag (repeat: with all of them)")
            p.add_argument("--port", type=int, default=6006,
                           help="port (default 6006); when taken, the next free one, which it prints; 0: any free one")
            p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
            p.add_argument("--refresh", type=float, default=15.0, metavar="S",
                           help="seconds between looks for new experiments (default 15)")
            p.add_argument("--dry-run", action="store_true", help="print the TensorBoard command and exit")
        else:
            from launcher.cli.manage import add_arguments

            add_arguments(name, p)
    return parser


def version_text() -> str:
    """``launcher (detlaunch) X``, plus the installed torch version, read from its metadata (torch is not imported)."""
    from importlib import metadata

    def installed(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    text = f"launcher (detlaunch) {installed('detlaunch') or 'unknown (not installed)'}"
    torch = installed("torch")
    return text + (f", torch {torch}" if torch else "")


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for (metadata reads cost milliseconds every start-up otherwise)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if a in COMMANDS), None)
    for i, arg in enumerate(argv[:-1]):  # `--sort -ap`: argparse would take -ap for an option
        if arg == "--sort" and argv[i + 1].startswith("-"):
            argv[i:i + 2] = [f"--sort={argv[i + 1]}"]
            break
    args = build_parser(chosen).parse_args(argv)
    os.umask(os.umask(0) | 0o022)  # nothing the launcher writes is group- or world-writable
    if args.command in MANAGE:
        from launcher.cli import manage as commands
    else:
        from launcher.cli import commands

    try:
        return int(getattr(commands, f"cmd_{args.command}")(args) or 0)
    except DetcoreError as exc:
        from launcher.views.printable import printable

        for line in getattr(exc, "problems", None) or [str(exc)]:  # they may quote a path or a value the user gave
            print(f"launcher {args.command}: error: {printable(line)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"launcher {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `launcher list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        line = _damaged_store(exc)
        if line is None:
            raise
        print(f"launcher {args.command}: error: {line}", file=sys.stderr)
        return 1


def _damaged_store(exc: Exception) -> str | None:
    """A damaged store found in the middle of a command (opening it checks it first, so this is rare):
    rebuilt now; the line to print. None for any other error."""
    import sqlite3

    from launcher.store.repair import is_damage

    if not isinstance(exc, sqlite3.DatabaseError) or not is_damage(exc):
        return None
    from launcher.store import ExperimentStore

    done = ExperimentStore().rebuild(f"SQLite: {exc}")
    return f"the experiment store was found damaged while this command ran; {done.removeprefix('launcher: ')}; " \
           f"run the command again"


if __name__ == "__main__":
    sys.exit(main())
