"""The backend registry: an explicit name -> module table, imported only when used.

Each entry names the module that implements the backend (see :mod:`launcher.backends.protocol`
for what a backend module exposes). Nothing registers itself as a side effect of an import.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from launcher.errors import LauncherError


@dataclass(frozen=True)
class BackendEntry:
    name: str
    module: str
    summary: str
    needs: tuple[str, ...] = ()  # top-level packages its jobs import, installed by the extra of the same name
    multi_node: bool = True      # whether its jobs may span several nodes (``--nodes N``)


BACKENDS: dict[str, BackendEntry] = {
    "local": BackendEntry("local", "launcher.backends.local", "this machine, workers under torchrun's elastic agent",
                          multi_node=False),
    "slurm": BackendEntry("slurm", "launcher.backends.slurm", "a Slurm cluster through submitit", ("submitit",)),
    "ray": BackendEntry("ray", "launcher.backends.ray_train", "a Ray cluster through Ray Train", ("ray",)),
}


def _entry(name: str) -> BackendEntry:
    if name in BACKENDS:
        return BACKENDS[name]
    close = difflib.get_close_matches(name, list(BACKENDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise LauncherError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}{hint}")


def backend_module(name: str) -> ModuleType:
    """The module implementing backend ``name``; a clear error when it is unknown or not importable."""
    entry = _entry(name)
    try:
        return importlib.import_module(entry.module)
    except ImportError as exc:
        raise LauncherError(f"backend {name!r} is not available: cannot import {entry.module} ({exc})") from None


def require_installed(name: str) -> None:
    """Refuse, in one line naming the extra to install, a backend whose packages this environment lacks.

    The backend modules themselves import without them (their options show in ``--help``, and a store's
    experiments of that backend can still be listed); a job on the backend cannot run without them.
    """
    entry = _entry(name)
    missing = [package for package in entry.needs if importlib.util.find_spec(package) is None]
    if missing:
        raise LauncherError(f"the {name} backend needs {', '.join(missing)}, which is not installed here: "
                            f"pip install 'detlaunch[{name}]' (from a checkout: pip install -e '.[{name}]')")


def get_backend(name: str, home: str | os.PathLike | None = None):
    """A ready backend object for ``name`` working under launcher home ``home``."""
    from launcher.store import launcher_home

    return backend_module(name).create(Path(home) if home is not None else launcher_home())
