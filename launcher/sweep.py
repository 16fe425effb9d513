"""Grid sweeps: ``--grid key=v1,v2`` options expanded into one override set per combination (pure).

A grid's size is known before anything is built (:func:`grid_size`), so a sweep states it at once
and refuses more than ``SWEEP_LIMIT`` experiments unless the user confirms (``--yes``); the
combinations are generated lazily (:func:`iter_grid`), so a dry run renders only the first few.
"""
from __future__ import annotations

import itertools
import math
import re
from typing import Iterator

from launcher.errors import LauncherError

SWEEP_LIMIT = 256     # a bigger grid is submitted only with --yes
DRY_RUN_SHOWN = 3     # a dry run of a bigger grid renders this many combinations


def parse_grid(items: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``["optimizer.lr=0.01,0.02", "seed=1,2"]`` -> ``[("optimizer.lr", ("0.01", "0.02")), ...]``."""
    axes: list[tuple[str, tuple[str, ...]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        values = tuple(v.strip() for v in raw.split(",")) if sep else ()
        if not key or not values or any(v == "" for v in values):
            raise LauncherError(f"--grid {item!r} must look like key.sub=v1,v2 (comma-separated values, none empty)")
        if key in (k for k, _ in axes):
            raise LauncherError(f"--grid names {key!r} twice; give all its values in one --grid")
        if len(set(values)) != len(values):
            raise LauncherError(f"--grid {item!r} repeats a value")
        axes.append((key, values))
    if not axes:
        raise LauncherError("a sweep needs at least one --grid key=v1,v2")
    return axes


def check_values(axes: list[tuple[str, tuple[str, ...]]]) -> None:
    """Every value read as ``--cfg-options`` reads it (YAML), so a bad one is found before anything is built;
    ConfigError naming it otherwise."""
    from detcore.config import parse_override

    for key, values in axes:
        for value in values:
            parse_override(f"{key}={value}")


def iter_grid(axes: list[tuple[str, tuple[str, ...]]]) -> Iterator[tuple[str, ...]]:
    """Every combination as ``key=value`` overrides, first axis slowest, one at a time."""
    keys = [k for k, _ in axes]
    for combo in itertools.product(*(v for _, v in axes)):
        yield tuple(f"{k}={v}" for k, v in zip(keys, combo))


def expand_grid(axes: list[tuple[str, tuple[str, ...]]]) -> list[tuple[str, ...]]:
    """:func:`iter_grid` as a list."""
    return list(iter_grid(axes))


def grid_size(axes: list[tuple[str, tuple[str, ...]]]) -> int:
    """How many experiments the grid makes (nothing is expanded)."""
    return math.prod(len(values) for _, values in axes)


def grid_shape(axes: list[tuple[str, tuple[str, ...]]]) -> str:
    """``3 optimizer.lr x 4 seed``: the values per key, as people read a grid's size."""
    return " x ".join(f"{len(values)} {key}" for key, values in axes)


def size_error(size: int, shape: str, limit: int = SWEEP_LIMIT) -> str | None:
    """Why a grid of ``size`` needs ``--yes`` (None when it does not)."""
    if size <= limit:
        return None
    return (f"the grid makes {size:,} experiments ({shape}), more than {limit} at once; pass --yes to submit them "
            f"all, or --dry-run to see the first ones")


def combination_name(base: str, overrides: tuple[str, ...]) -> str:
    """``base-lr=0.01-max_iters=4``: the last part of each key and its value, filename-safe."""
    parts = [base]
    for item in overrides:
        key, _, value = item.partition("=")
        parts.append(f"{key.lstrip('+').split('.')[-1]}={value}")
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts))[:100]
