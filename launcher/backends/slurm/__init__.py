"""The Slurm backend: detcore jobs as Slurm jobs through submitit, one task per GPU (or CPU worker).

The package is the backend's face to the CLI (its options, :func:`create`); the backend is
:class:`~launcher.backends.slurm.backend.SlurmBackend`: its dry run is the plan (the sbatch script
:func:`~launcher.backends.slurm.script.render_sbatch` renders once, with submitit's own template,
and every task's arguments) and ``submit`` executes it: the plan and the script are written to the
job folder ``$LAUNCHER_HOME/slurm/<id>/`` next to submitit's pickled
:class:`~launcher.backends.slurm.task.SlurmTask`, and the script is handed to ``sbatch``. submitit
then does what it does best inside the job: its runner unpickles the task on every rank, installs
the USR2 handler, and on preemption or an approaching time limit checkpoints (through
``SlurmTask.checkpoint``) and requeues the job, which resumes from the newest checkpoint. The
launcher calls ``sbatch`` itself (instead of ``SlurmExecutor.submit``) so that the submitted
script is byte for byte the dry run and sbatch's refusal reaches the user as one line.

Every call to Slurm goes through one subprocess seam with time-boxed queries
(:mod:`launcher.backends.slurm.queries`). State lives in Slurm and the job folder, never in this
process, so a job submitted by a launcher that has exited is fully manageable. Clients need
``SLURM_CONF`` where the cluster requires it (for the test cluster: ``source
/tmp/detlaunch-slurm/env.sh``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from launcher.backends.slurm.backend import SlurmBackend
from launcher.backends.slurm.gpus import Gres, parse_gres
from launcher.backends.slurm.mmdet_env import mmdet_env_line
from launcher.backends.slurm.queries import SlurmError, SlurmNotConfigured, SlurmUnreachable, no_cluster_line
from launcher.backends.slurm.script import (MANAGED_OPTIONS, SlurmOptions, defaults_paths, load_defaults,
                                            parse_slurm_option)
from launcher.errors import LauncherError
from launcher.spec import Resources

__all__ = ["Options", "SlurmOptions", "SlurmBackend", "add_arguments", "options_from_args", "resources_from_args", "create",
           "MANAGED_OPTIONS", "SlurmError", "SlurmUnreachable", "SlurmNotConfigured", "no_cluster_line"]

Options = SlurmOptions  # the name the backend protocol looks up (launcher.backends.protocol)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-p", "--partition", "--slurm-partition", dest="slurm_partition", metavar="P",
                       help="slurm: partition (default: slurm.partition in launcher.yaml, else the cluster's)")
    group.add_argument("-A", "--account", "--slurm-account", dest="slurm_account", metavar="A",
                       help="slurm: account")
    group.add_argument("-q", "--qos", "--slurm-qos", dest="slurm_qos", metavar="Q", help="slurm: quality of service")
    group.add_argument("--gres", dest="slurm_gres", metavar="gpu:[TYPE:]N",
                       help="slurm: GPUs per node (one task each) as sbatch writes them, e.g. gpu:4 or gpu:a100:4; "
                            "other entries (gpu:4,nvme:1) are passed on")
    group.add_argument("--constraint", "--slurm-constraint", dest="slurm_constraint", metavar="C",
                       help="slurm: node features, e.g. 'a100|h100'")
    group.add_argument("--exclude", "--slurm-exclude", dest="slurm_exclude", metavar="NODES",
                       help="slurm: nodes not to use, e.g. gpu[01-03]")
    group.add_argument("--gpus-per-node", dest="slurm_gpus_per_node", type=int, metavar="G",
                       help="slurm: GPUs per node, one task each (same as --gpus)")
    group.add_argument("--tasks-per-node", dest="slurm_tasks_per_node", type=int, metavar="T",
                       help="slurm: CPU worker tasks per node (same as --nproc)")
    group.add_argument("--signal-delay", dest="slurm_signal_delay", type=int, metavar="S",
                       help="slurm: USR2 comes S seconds before the time limit; the job checkpoints and requeues "
                            "(default 120)")
    group.add_argument("--max-timeouts", dest="slurm_max_timeouts", type=int, metavar="N",
                       help="slurm: requeue after reaching the time limit at most N times (default 20; "
                            "preemptions are not counted)")
    group.add_argument("--array-parallelism", dest="slurm_array_parallelism", type=int, metavar="P",
                       help="slurm sweep: at most P array tasks run at once (default: --max-parallel, else all)")
    group.add_argument("--slurm-option", dest="slurm_options", action="append", default=[], metavar="KEY=VALUE",
                       help="slurm: any other sbatch option, e.g. mail-user=me@example.org, or a flag: exclusive")


def options_from_args(args: argparse.Namespace) -> SlurmOptions:
    gres = parse_gres(args.slurm_gres) if getattr(args, "slurm_gres", None) else Gres()
    line = mmdet_env_line(os.environ, _given(args))
    if line:
        print(line, file=sys.stderr)
    return SlurmOptions(gpu_type=gres.gpu_type, gres_other=gres.other,
                   partition=getattr(args, "slurm_partition", None), account=getattr(args, "slurm_account", None),
                   qos=getattr(args, "slurm_qos", None), constraint=getattr(args, "slurm_constraint", None),
                   exclude=getattr(args, "slurm_exclude", None),
                   signal_delay_s=getattr(args, "slurm_signal_delay", None),
                   max_timeouts=getattr(args, "slurm_max_timeouts", None),
                   array_parallelism=getattr(args, "slurm_array_parallelism", None),
                   extra=tuple(parse_slurm_option(o) for o in getattr(args, "slurm_options", None) or ()))


def _given(args: argparse.Namespace) -> set[str]:
    """Which of the flags that replace slurm_train.sh's variables the command line set."""
    flags = {"gpus": ("gpus", "nproc", "slurm_gres", "slurm_gpus_per_node", "slurm_tasks_per_node"),
             "cpus": ("cpus_per_task",), "partition": ("slurm_partition",), "slurm_options": ("slurm_options",)}
    return {key for key, dests in flags.items() if any(getattr(args, d, None) for d in dests)}


def resources_from_args(args: argparse.Namespace, resources: Resources) -> Resources:
    """``--gres gpu:N`` / ``--gpus-per-node`` / ``--tasks-per-node``: Slurm's names for ``--gpus`` / ``--nproc``."""
    gpn, tpn = getattr(args, "slurm_gpus_per_node", None), getattr(args, "slurm_tasks_per_node", None)
    gres = parse_gres(args.slurm_gres) if getattr(args, "slurm_gres", None) else Gres()
    if gres.gpus:
        for flag, value in (("--gpus", getattr(args, "gpus", None)), ("--gpus-per-node", gpn)):
            if value is not None and value != gres.gpus:
                raise LauncherError(f"--gres {args.slurm_gres} asks {gres.gpus} GPUs per node but {flag} {value}; "
                                    f"pass the GPU count once")
        if getattr(args, "nproc", None) is not None or tpn not in (None, gres.gpus):
            raise LauncherError(f"--gres {args.slurm_gres} runs one task per GPU; drop --nproc/--tasks-per-node")
        return dataclasses.replace(resources, gpus=gres.gpus, nproc=gres.gpus)
    if gpn is not None:
        if getattr(args, "gpus", None) not in (None, gpn) or getattr(args, "nproc", None) is not None:
            raise LauncherError("--gpus-per-node is --gpus under another name; pass only one of --gpus-per-node, "
                                "--gpus and --nproc")
        return dataclasses.replace(resources, gpus=gpn, nproc=tpn if tpn is not None else gpn)
    if tpn is not None:
        if getattr(args, "nproc", None) not in (None, tpn):
            raise LauncherError("--tasks-per-node is --nproc under another name; pass only one of them")
        return dataclasses.replace(resources, nproc=tpn)
    return resources


def create(home: Path) -> SlurmBackend:
    return SlurmBackend(home, load_defaults(defaults_paths(home, os.environ)))
