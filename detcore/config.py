"""YAML configs with ``_base_`` inheritance, ``_delete_`` and dotted overrides.

Follows the MMDetection user guide: a config may name one or more base files (relative to
itself) under ``_base_``; bases merge in order, then the child on top. Nested dicts merge,
anything else replaces; ``_delete_: true`` in a child dict replaces the base dict.
Everything here is pure: inputs are copied, never mutated.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from detcore.config_yaml import (MAX_CONFIG_BYTES, MAX_NODES, dump_yaml, parse_yaml, parse_yaml_counted,
                                 read_config_text, symlink_loop)
from detcore.config_habits import resolve_habits
from detcore.config_values import value_problems
from detcore.errors import ConfigError, ConfigProblems

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
RESERVED_KEY = "filename"  # set by load_config to the top file's path
MAX_TREE_FILES = 256  # files one config may load through _base_ (repeats counted)
# Keys detcore reads when present that a config need not spell out: overrides may set them without
# a '+', as MMDetection users type them (--cfg-options data.test.samples_per_gpu=2).
OPTIONAL_KEYS = re.compile(r"data\.(train|val|test)\.(samples_per_gpu|workers_per_gpu)|data\.test_samples_per_gpu|amp"
                           r"|compile|model\.channels_last|optimizer\.(foreach|fused)")


@dataclass
class _Budget:
    """What one config tree may read in all: a diamond of ``_base_`` lists repeating the same
    files would otherwise load (and merge) exponentially many copies."""

    files: int = MAX_TREE_FILES
    values: int = MAX_NODES
    chars: int = 4 * MAX_CONFIG_BYTES

    def read(self, path: Path, chars: int) -> None:
        """Count one file of ``chars`` characters, before it is parsed."""
        self.files -= 1
        self.chars -= chars
        if self.files < 0:
            raise ConfigError(f"{path}: the _base_ tree loads more than {MAX_TREE_FILES} files; list each base once")
        if self.chars < 0:
            raise ConfigError(f"{path}: the _base_ tree holds more than {4 * MAX_CONFIG_BYTES} characters in all; "
                              f"configs are small, list each base once")

    def parsed(self, path: Path, values: int) -> None:
        """Count the values of a parsed file."""
        self.values -= values
        if self.values < 0:
            raise ConfigError(f"{path}: the _base_ tree holds more than {MAX_NODES} values in all; list each base "
                              f"once")


def _read_yaml(path: Path, budget: _Budget) -> dict:
    text = read_config_text(path)
    budget.read(path, len(text))
    data, values = parse_yaml_counted(text, str(path))
    budget.parsed(path, values)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    if RESERVED_KEY in data:
        raise ConfigError(f"{path}: top-level key {RESERVED_KEY!r} is reserved (detcore records the config's path "
                          f"there); rename the key, or drop the line if the file was saved by detcore")
    return data


def merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict:
    """Return ``base`` updated by ``child`` (neither is modified; no ``_delete_`` in the result).

    Nested mappings merge key by key; any other value in ``child`` replaces. A child mapping
    with ``_delete_: true`` replaces the base mapping whole. ``_delete_`` is removed at every
    depth, inside lists too, so it never reaches a builder.
    """
    out = copy.deepcopy(dict(base))
    child = dict(child)
    if child.pop(DELETE_KEY, False):
        out = {}
    for key, value in child.items():
        out[key] = _merge_value(out.get(key), value, key in out)
    return _strip_delete(out)


def _merge_value(old: Any, new: Any, exists: bool) -> Any:
    """``new`` merged into ``old``: mappings merge (unless ``new`` says ``_delete_``), others replace."""
    if isinstance(new, Mapping) and exists and isinstance(old, Mapping) and not new.get(DELETE_KEY, False):
        return merge(old, new)
    return _strip_delete(copy.deepcopy(new))


def _strip_delete(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    return value


def _load_tree(path: Path, chain: tuple[Path, ...], budget: _Budget) -> dict:
    """``path`` merged over its bases. Bases are found next to ``path`` as given (a symlinked
    config uses the bases beside the link, as MMEngine does); cycles are found on real paths."""
    path = Path(os.path.abspath(path))
    real = Path(os.path.realpath(path))
    if real in chain:
        cycle = " -> ".join(str(p) for p in (*chain, real))
        raise ConfigError(f"cyclic _base_ chain: {cycle}; remove one of these _base_ entries")
    data = _read_yaml(path, budget)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r:.200}")
    merged: dict = {}
    for base in bases:
        base_path = path.parent / os.path.expanduser(base)
        if not os.path.lexists(base_path):
            via = " <- ".join(str(p) for p in (path, *reversed(chain)))
            raise ConfigError(f"{path}: _base_ file {base!r} not found (looked for {base_path}; included via {via})")
        loop = symlink_loop(base_path)
        if loop:
            raise ConfigError(f"{path}: _base_ file {base!r} is a symbolic link loop ({loop}); point one of these "
                              f"links at a config file")
        merged = merge(merged, _load_tree(base_path, (*chain, real), budget))
    return merge(merged, data)


def load_config(path: str | os.PathLike, overrides: Iterable[str] = (), *, import_custom: bool = True) -> dict:
    """Load ``path`` with its bases, apply ``key.sub=value`` overrides and run custom_imports.

    The result is a plain dict of JSON-compatible values; ``filename`` (reserved) holds the
    absolute path of the top file.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"{path}: config file not found; pass the path to a .yaml config")
    if path.suffix == ".py":  # an MMDetection config: read (never run) and mapped onto detcore's keys
        cfg = _import_mmdet(path)
    else:
        cfg = _load_tree(path, (), _Budget())
    cfg = apply_overrides(cfg, overrides)
    cfg[RESERVED_KEY] = os.path.abspath(path)
    cfg, warnings = resolve_habits(cfg)
    for warning in warnings:
        logging.getLogger(__name__).warning("%s", warning)
    if import_custom:
        import_custom_modules(cfg)
    validate_config(cfg)
    return cfg


def _import_mmdet(path: Path) -> dict:
    """The detcore config for MMDetection config ``path``; what did not carry over is logged."""
    from detcore.mmdet_import import import_config  # local: the importer itself builds on this module

    imported = import_config(path)
    if imported.summary and os.environ.get("RANK", "0") in ("", "0"):  # once per job, not per rank
        logging.getLogger(__name__).warning("%s", imported.summary_text())
    return imported.config


def parse_override(item: str) -> tuple[str, Any, bool]:
    """``'a.b=1'`` -> ``('a.b', 1, False)``; a leading ``+`` marks a new key.

    Values are YAML (the config's own rules: ``1e-3`` is a float); a value that is not valid
    YAML (``[1,2``) is an error, never silently a string.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. optimizer.lr=0.01)")
    key, raw = item.split("=", 1)
    key = key.strip()
    is_new = key.startswith("+")
    key = key.lstrip("+")
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    if key == RESERVED_KEY:
        raise ConfigError(f"override {item!r}: {RESERVED_KEY!r} is reserved (detcore records the config's path "
                          f"there); use another key")
    try:
        value = parse_yaml(raw, f"override {item!r}") if raw.strip() else ""
    except ConfigError as exc:
        raise ConfigError(f"{exc}; to pass text, quote it in YAML: {key}=\"'text'\"") from None
    return key, value, is_new


def _all_keys(cfg: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    if isinstance(cfg, Mapping):
        for k, v in cfg.items():
            full = f"{prefix}{k}"
            keys.append(full)
            keys.extend(_all_keys(v, full + "."))
    elif isinstance(cfg, list):
        for i, v in enumerate(cfg):
            keys.extend(_all_keys(v, f"{prefix}{i}."))
    return keys


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str]) -> dict:
    """Return a copy of ``cfg`` with each ``key.sub=value`` applied.

    As MMEngine's ``merge_from_dict``: a mapping value merges into the mapping it overrides
    (``_delete_: true`` in it replaces instead); any other value replaces. Integer parts index
    lists. Stricter than MMEngine: a key that does not exist is an error naming the closest
    existing key, unless it is marked new with a leading ``+`` (``+model.extra=1``) or is one of
    :data:`OPTIONAL_KEYS` (MMDetection's per-split ``data.test.samples_per_gpu`` and the like, on
    a split the config has).
    """
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        key, value, is_new = parse_override(item)
        parts = key.split(".")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {key!r}: {'.'.join(parts[:i]) or 'root'} is a list of "
                                      f"{len(node)}; use an index 0..{len(node) - 1}")
                part = int(part)  # type: ignore[assignment]
                exists = True
            elif not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[:i])} is a {type(node).__name__}, not a mapping")
            else:
                exists = part in node
            if not exists:
                if not is_new and not (last and OPTIONAL_KEYS.fullmatch(key)):
                    close = difflib.get_close_matches(key, _all_keys(out), n=1, cutoff=0.6)
                    hint = f"the closest existing key is {close[0]!r}; " if close else ""
                    raise ConfigError(f"override {key!r}: no such key in the config; {hint}"
                                      f"prefix it with '+' (+{key}=...) to add a new key")
                if not last:
                    node[part] = {}
            if last:
                node[part] = _merge_value(node[part] if exists else None, value, exists)
            else:
                node = node[part]
    return out


def import_custom_modules(cfg: Mapping[str, Any]) -> list[str]:
    """Import the modules named in ``custom_imports`` so they can register their types.

    Modules are importable by name, including from the current working directory.
    """
    spec = cfg.get("custom_imports")
    if spec is None:
        return []
    expected = ("expected {imports: [module.name, ...], allow_failed_imports: false}, a module name or a list "
                "of module names")
    if isinstance(spec, Mapping):
        modules = spec.get("imports", [])
        allow_failed = spec.get("allow_failed_imports", False)
        if not isinstance(allow_failed, bool):
            raise ConfigError(f"{_where(cfg)}: custom_imports.allow_failed_imports must be true or false, "
                              f"got {allow_failed!r:.100}")
    else:
        modules, allow_failed = spec, False
    if isinstance(modules, str):
        modules = [modules]
    if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
        raise ConfigError(f"{_where(cfg)}: custom_imports: got {spec!r:.200}; {expected}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    imported = []
    for name in modules:
        try:
            importlib.import_module(name)
            imported.append(name)
        except ImportError as exc:
            if allow_failed:
                continue
            raise ConfigError(
                f"custom_imports: cannot import {name!r} ({exc}); make it importable from the working "
                f"directory or PYTHONPATH, or set custom_imports.allow_failed_imports: true"
            ) from None
    return imported


def lookup(cfg: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    """``(True, value)`` at the dotted key (a digit part indexes a list), or ``(False, None)``."""
    node: Any = cfg
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _where(cfg: Mapping[str, Any]) -> str:
    return str(cfg.get(RESERVED_KEY, "config"))


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Check the values the library relies on against :mod:`detcore.config_values`' table.

    Runs when a config is loaded, before anything is built, so a bad value never costs a
    set-up (or a traceback) first. Raises :class:`ConfigProblems` with one line per bad key.
    """
    for key in ("model", "data", "optimizer"):
        if key in cfg and not isinstance(cfg[key], Mapping):
            raise ConfigError(f"{_where(cfg)}: {key} must be a mapping, got {type(cfg[key]).__name__}")
    problems = value_problems(cfg)
    if problems:
        raise ConfigProblems([f"{_where(cfg)}: {p}" for p in problems])
    evaluation = cfg.get("evaluation")
    if isinstance(evaluation, Mapping) and "backend" in evaluation:
        from detcore.evaluation.coco_eval import check_backend

        check_backend(evaluation["backend"], f"{_where(cfg)}: evaluation.backend")


def dump_config(cfg: Mapping[str, Any]) -> str:
    """The resolved config as YAML text (what runs and checkpoints save).

    ``filename`` becomes a comment on the first line, so a saved config loads again as a config.
    """
    body = {k: v for k, v in cfg.items() if k != RESERVED_KEY}
    source = " ".join(str(cfg.get(RESERVED_KEY, "")).splitlines())  # a line break in a path must not add YAML
    head = f"# resolved from {source}\n" if source else ""
    return head + dump_yaml(body)


def config_from_text(text: str) -> dict:
    """Inverse of :func:`dump_config` (used to rebuild a model from checkpoint meta)."""
    data = parse_yaml(text, "checkpoint meta config")
    if not isinstance(data, dict):
        raise ConfigError("checkpoint meta holds no config mapping")
    return data
