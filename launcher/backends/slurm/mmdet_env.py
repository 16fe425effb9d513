"""MMDetection's ``tools/slurm_train.sh`` variables, named with the launcher flags that replace them.

``slurm_train.sh`` reads ``GPUS``, ``GPUS_PER_NODE``, ``CPUS_PER_TASK``, ``SRUN_ARGS`` and ``PARTITION``
from the environment. The launcher does not: a variable left exported in a shell would silently
resize every later job. When one is set and its flag was not given, :func:`mmdet_env_line` says
which flag to use, in one line. Pure.
"""
from __future__ import annotations

import shlex
from typing import AbstractSet, Mapping

SLURM_TRAIN_GPUS_PER_NODE = 8  # slurm_train.sh's default for GPUS_PER_NODE


def _int(text: str) -> int | None:
    return int(text) if text.strip().isdigit() and int(text) > 0 else None


def _srun_flags(text: str) -> str:
    """``SRUN_ARGS="--exclusive --mem=0"`` as ``--slurm-option exclusive --slurm-option mem=0``."""
    try:
        words = shlex.split(text)
    except ValueError:
        return "--slurm-option KEY=VALUE (one per sbatch option)"
    flags = [w for w in words if w.startswith("--")]
    if not flags or len(flags) != len(words):
        return "--slurm-option KEY=VALUE (one per sbatch option)"
    return " ".join(f"--slurm-option {shlex.quote(w[2:])}" for w in flags)


def mmdet_env_line(environ: Mapping[str, str], given: AbstractSet[str]) -> str | None:
    """One line naming each set ``slurm_train.sh`` variable and the flag to use instead, or None.

    ``given``: which of ``gpus``, ``cpus``, ``partition``, ``slurm_options`` the command line set
    (a variable whose flag was given is not mentioned).
    """
    hints = []
    gpus, per_node = _int(environ.get("GPUS", "")), _int(environ.get("GPUS_PER_NODE", ""))
    if "gpus" not in given and (gpus or per_node):
        per_node = per_node or SLURM_TRAIN_GPUS_PER_NODE
        names = " ".join(f"{v}={environ[v]}" for v in ("GPUS", "GPUS_PER_NODE") if environ.get(v))
        if gpus:
            nodes = -(-gpus // per_node)
            flag = f"--gres gpu:{min(gpus, per_node)}" + (f" --nodes {nodes}" if nodes > 1 else "")
        else:
            flag = f"--gres gpu:{per_node}"
        hints.append(f"{names} -> {flag}")
    for var, key, flag in (("CPUS_PER_TASK", "cpus", lambda v: f"--cpus-per-task {v}"),
                           ("PARTITION", "partition", lambda v: f"-p {shlex.quote(v)}"),
                           ("SRUN_ARGS", "slurm_options", _srun_flags)):
        value = environ.get(var, "").strip()
        if value and key not in given:
            hints.append(f"{var}={shlex.quote(value)} -> {flag(value)}")
    if not hints:
        return None
    return ("launcher: MMDetection's slurm_train.sh variables are not read (flags only, so that an exported "
            "variable never resizes a job): " + "; ".join(hints))
