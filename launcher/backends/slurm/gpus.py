"""How a Slurm job asks for its GPUs: ``--gres`` values, and which of Slurm's two forms a cluster takes.

Slurm takes a GPU count either as a generic resource (``--gres=gpu:N``, every select plugin) or as
``--gpus-per-node=N`` (only with ``SelectType=select/cons_tres``, which also brings ``--mem-per-gpu``).
A script names its GPUs in exactly one of them: :func:`choose_gpu_form` picks it from
``scontrol show config`` (or ``slurm.gpu_request`` in ``launcher.yaml``) and says why. Pure functions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from launcher.errors import LauncherError

GPUS_PER_NODE = "gpus-per-node"
GRES = "gres"
GPU_FORMS = (GPUS_PER_NODE, GRES)
_ENTRY = re.compile(r"^(?:gres/)?(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?::(?P<type>[A-Za-z0-9_.-]+))??"
                    r"(?::(?P<count>\d+))?$")


@dataclass(frozen=True)
class Gres:
    """A parsed ``--gres`` value: the GPUs per node (0: none), their type, and every other entry as given."""

    gpus: int = 0
    gpu_type: str | None = None
    other: tuple[str, ...] = ()


def parse_gres(text: str, what: str = "--gres") -> Gres:
    """``gpu:2``, ``gpu:a100:2``, ``gpu:2,nvme:1`` (Slurm's ``NAME[:TYPE][:COUNT]`` list; COUNT defaults to 1)."""
    gpus, gpu_type, other = 0, None, []
    for entry in (e.strip() for e in str(text).split(",")):
        match = _ENTRY.match(entry)
        if match is None:
            raise LauncherError(f"{what} {text!r}: expected NAME[:TYPE][:COUNT] entries separated by commas, "
                                f"e.g. gpu:2 or gpu:a100:2")
        if match["name"] != "gpu":
            other.append(entry.removeprefix("gres/"))
            continue
        if gpus:
            raise LauncherError(f"{what} {text!r} names GPUs twice; ask them once, e.g. gpu:a100:2")
        gpus, gpu_type = int(match["count"] or 1), match["type"]
        if gpus < 1:
            raise LauncherError(f"{what} {text!r}: a GPU count must be at least 1; leave the gpu entry out for a "
                                f"CPU job")
    return Gres(gpus, gpu_type, tuple(other))


@dataclass(frozen=True)
class GpuForm:
    """Which sbatch option carries the GPU count (``gpus-per-node`` or ``gres``), and why."""

    form: str
    why: str

    def __post_init__(self) -> None:
        if self.form not in GPU_FORMS:
            raise LauncherError(f"slurm.gpu_request {self.form!r}: expected one of {', '.join(GPU_FORMS)}")


def parse_scontrol_config(text: str) -> dict[str, str]:
    """``scontrol show config``'s ``Key = value`` lines as a dict (other lines ignored)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def choose_gpu_form(config: Mapping[str, str]) -> GpuForm:
    """``gpus-per-node`` under ``select/cons_tres``, else ``gres`` (which every select plugin accepts)."""
    select = config.get("SelectType", "(unknown)")
    gres_types = config.get("GresTypes", "(null)")
    no_gpus = "" if "gpu" in gres_types.split(",") else \
        f"; note: GresTypes={gres_types} names no gpu, so this cluster has no GPUs to give"
    if select == "select/cons_tres":
        return GpuForm(GPUS_PER_NODE, f"scontrol show config: SelectType={select}{no_gpus}")
    return GpuForm(GRES, f"scontrol show config: SelectType={select}; --gpus-per-node needs select/cons_tres"
                         f"{no_gpus}")


def gpu_value(gpus: int, gpu_type: str | None) -> str:
    """The GPU count as Slurm writes it, typed when a type was given: ``2`` or ``a100:2``."""
    return f"{gpu_type}:{gpus}" if gpu_type else str(gpus)
