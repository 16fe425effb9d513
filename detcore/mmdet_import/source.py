"""The merged MMDetection config being mapped, and which of its keys the mapping used.

Every key path the mapping reads is marked used; what is never read is the "not mapped"
part of the summary, so nothing is dropped silently.
"""
from __future__ import annotations

import json
from typing import Any

from detcore.errors import ConfigError
from detcore.config import lookup

_MISSING = object()


class Source:
    """Read access to a merged MMDetection config with bookkeeping of used key paths."""

    def __init__(self, cfg: dict, filename: str) -> None:
        self.cfg, self.filename = cfg, filename
        self.used: set[str] = set()
        self.notes: list[tuple[str, Any, str]] = []

    def lookup(self, path: str) -> Any:
        found, value = lookup(self.cfg, path)
        return value if found else _MISSING

    def has(self, path: str) -> bool:
        return self.lookup(path) is not _MISSING

    def get(self, path: str, default: Any = None) -> Any:
        """The value at dotted ``path`` (marked used), or ``default`` when it is absent."""
        value = self.lookup(path)
        if value is _MISSING:
            return default
        self.used.add(path)
        return value

    def items(self, path: str) -> list:
        """The list at ``path`` (not marked used), or ``[]`` when it is absent or not a list."""
        value = self.lookup(path)
        return value if isinstance(value, list) else []

    def use_if(self, path: str, *expected: Any) -> bool:
        """Mark ``path`` used when its value is one of ``expected`` (what detcore does anyway)."""
        found = self.has(path) and any(self.lookup(path) == e and type(self.lookup(path)) is type(e) for e in expected)
        if found:
            self.used.add(path)
        return found

    def use(self, *paths: str) -> None:
        """Mark ``paths`` (and everything under them) as used without reading them."""
        self.used.update(p for p in paths if self.has(p))

    def note(self, path: str, why: str) -> None:
        """Record that ``path`` was mapped only approximately (or is meaningless here), and why."""
        self.used.add(path)
        self.notes.append((path, self.lookup(path), why))

    def error(self, path: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.filename}: {path}={_short(self.lookup(path))} {expected}")

    def leftovers(self) -> list[tuple[str, Any]]:
        """Key paths no mapping step used, largest unused subtrees first in file order."""
        return _unused(self.cfg, "", self.used)

    def summary(self) -> list[str]:
        """One line per key that did not carry over exactly: approximations, then unmapped keys."""
        lines = [f"{path}: {_short(value)}  ({why})" for path, value, why in self.notes]
        lines += [f"{path}: {_short(value)}  (not mapped)" for path, value in self.leftovers()]
        return lines


def _unused(node: Any, path: str, used: set[str]) -> list[tuple[str, Any]]:
    if path in used:
        return []
    prefix = f"{path}." if path else ""
    if path and not any(u.startswith(prefix) for u in used):
        return [(path, node)]
    if isinstance(node, dict):
        items = [(f"{prefix}{k}", v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(f"{prefix}{i}", v) for i, v in enumerate(node)]
    else:
        return []
    out: list[tuple[str, Any]] = []
    for sub, value in items:
        out.extend(_unused(value, sub, used))
    return out


def _short(value: Any, limit: int = 100) -> str:
    """``value`` as compact one-line JSON-like text, cut at ``limit`` characters."""
    if value is _MISSING:
        return "(unset)"
    try:
        text = json.dumps(value, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
