"""Explicit name -> callable registries.

A registry maps a type name to a callable and remembers where it came from. Configs build
objects from ``{type: Name, **kwargs}`` dicts. User code adds entries by being imported
through ``custom_imports`` in a config; nothing is registered as a hidden side effect.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from detcore.errors import RegistryError


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Callable[..., Any]
    origin: str  # "module.qualname" of the registered object


class Registry:
    """A named table of builders. ``register`` (or MMDetection's ``register_module``) is a decorator;
    ``build`` makes an object."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | Sequence[str] | None = None, *, force: bool = False) -> Callable[[Callable], Callable]:
        """Decorator: ``@R.register()``, ``@R.register("Name")`` or ``@R.register(["Name", "Alias"])``."""
        names = _names(self.name, name)

        def decorator(obj: Callable) -> Callable:
            for key in names or [None]:
                self.add(obj, name=key, force=force)
            return obj

        return decorator

    def register_module(self, name: str | Sequence[str] | Callable | None = None, force: bool = False,
                        module: Callable | None = None) -> Any:
        """MMDetection's spelling (mmcv's and mmengine's ``Registry.register_module``), so modules written
        for MMDetection register unchanged:

        - ``@R.register_module()`` or ``@R.register_module`` (mmcv's old form, without parentheses);
        - ``@R.register_module(name="Name", force=True)``; ``name`` may be a list of names;
        - ``R.register_module(module=Cls)`` (or ``R.register_module(name=..., module=Cls)``) registers at once
          and returns ``Cls``.

        ``force=True`` replaces an entry of another origin; without it that is a :class:`RegistryError`.
        """
        if not isinstance(force, bool):
            raise RegistryError(f"{self.name} registry: register_module(force=...) must be true or false, got {force!r}")
        if module is None and name is not None and not isinstance(name, (str, list, tuple)) and callable(name):
            module, name = name, None  # @R.register_module without parentheses
        if module is not None:
            return self.register(name, force=force)(module)
        return self.register(name, force=force)

    def add(self, obj: Callable, name: str | None = None, *, force: bool = False) -> None:
        key = name or obj.__name__
        origin = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', key)}"
        old = self._entries.get(key)
        if old is not None and not force and old.origin != origin:
            raise RegistryError(
                f"{self.name} registry: {key!r} is already registered by {old.origin}; "
                f"cannot register {origin} under the same name (pick another name or pass force=True)"
            )
        self._entries[key] = Entry(key, obj, origin)

    def get(self, name: str) -> Callable:
        try:
            return self._entries[name].obj
        except KeyError:
            raise RegistryError(self._unknown_message(name)) from None

    def origin(self, name: str) -> str:
        self.get(name)
        return self._entries[name].origin

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self._entries, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        return (
            f"unknown {self.name} type {name!r}: {hint}known: {', '.join(sorted(self._entries)) or '(none)'}. "
            f"Add your own with a module listed in the config's custom_imports"
        )

    def build(self, cfg: Mapping[str, Any], **defaults: Any) -> Any:
        """Build ``cfg['type'](**rest, **defaults)``; keys in cfg win over defaults."""
        if not isinstance(cfg, Mapping) or "type" not in cfg:
            raise RegistryError(
                f"{self.name} config must be a mapping with a 'type' key, got {cfg!r}; "
                f"expected e.g. {{type: {next(iter(sorted(self._entries)), 'Name')}}}"
            )
        kwargs = {**defaults, **{k: v for k, v in cfg.items() if k != "type"}}
        builder = self.get(cfg["type"])
        try:
            return builder(**kwargs)
        except TypeError as exc:
            if "argument" in str(exc):
                raise RegistryError(f"{self.name} type {cfg['type']!r}: {exc}") from exc
            raise

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {sorted(self._entries)})"


def _names(registry: str, name: Any) -> list[str]:
    """``name`` as a list of names (empty: the object's own name); RegistryError for anything else."""
    if name is None:
        return []
    names = [name] if isinstance(name, str) else list(name) if isinstance(name, (list, tuple)) else None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise RegistryError(f"{registry} registry: name must be a non-empty string or a list of them, got {name!r}")
    return names


DETECTORS = Registry("detector")
BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
HOOKS = Registry("hook")
OPTIMIZERS = Registry("optimizer")
LR_SCHEDULES = Registry("lr schedule")
