"""Grid sweeps: ``--grid key=v1,v2`` options expanded into one override set per combination (pure)."""
from __future__ import annotations

import itertools
import re

from launcher.errors import LauncherError


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


def expand_grid(axes: list[tuple[str, tuple[str, ...]]]) -> list[tuple[str, ...]]:
    """Every combination as ``key=value`` overrides, first axis slowest."""
    keys = [k for k, _ in axes]
    return [tuple(f"{k}={v}" for k, v in zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def combination_name(base: str, overrides: tuple[str, ...]) -> str:
    """``base-lr=0.01-max_iters=4``: the last part of each key and its value, filename-safe."""
    parts = [base]
    for item in overrides:
        key, _, value = item.partition("=")
        parts.append(f"{key.lstrip('+').split('.')[-1]}={value}")
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts))[:100]
