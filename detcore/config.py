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
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from detcore.errors import ConfigError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror}); check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}; fix the syntax (plain YAML, no Python tags)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict:
    """Return ``base`` updated by ``child`` (neither is modified).

    Nested mappings merge key by key; any other value in ``child`` replaces. A child mapping
    with ``_delete_: true`` replaces the base mapping whole.
    """
    out = copy.deepcopy(dict(base))
    for key, value in child.items():
        if isinstance(value, Mapping):
            value = dict(value)
            if value.pop(DELETE_KEY, False) or not isinstance(out.get(key), Mapping):
                out[key] = _strip_delete(value)
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strip_delete(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    return value


def _load_tree(path: Path, chain: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"cyclic _base_ chain: {cycle}; remove one of these _base_ entries")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base)
        if not base_path.exists():
            via = " <- ".join(str(p) for p in (path, *reversed(chain)))
            raise ConfigError(f"{path}: _base_ file {base!r} not found (looked for {base_path}; included via {via})")
        merged = merge(merged, _load_tree(base_path, (*chain, path)))
    return merge(merged, data)


def load_config(path: str | os.PathLike, overrides: Iterable[str] = (), *, import_custom: bool = True) -> dict:
    """Load ``path`` with its bases, apply ``key.sub=value`` overrides and run custom_imports.

    The result is a plain dict; ``filename`` holds the resolved path of the top file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass the path to a .yaml config")
    cfg = _load_tree(path, ())
    cfg = apply_overrides(cfg, overrides)
    cfg["filename"] = str(path.resolve())
    if import_custom:
        import_custom_modules(cfg)
    validate_config(cfg)
    return cfg


def parse_override(item: str) -> tuple[str, Any, bool]:
    """``'a.b=1'`` -> ``('a.b', 1, False)``; a leading ``+`` marks a new key."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. optimizer.lr=0.01)")
    key, raw = item.split("=", 1)
    key = key.strip()
    is_new = key.startswith("+")
    key = key.lstrip("+")
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the text as a string, e.g. a path with ':'
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

    A key that does not exist is an error naming the closest existing key, unless it is
    marked new with a leading ``+`` (``+model.extra=1``). Integer parts index lists.
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
            elif not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[:i])} is a {type(node).__name__}, not a mapping")
            elif part not in node:
                if not is_new:
                    close = difflib.get_close_matches(key, _all_keys(out), n=1, cutoff=0.6)
                    hint = f"the closest existing key is {close[0]!r}; " if close else ""
                    raise ConfigError(f"override {key!r}: no such key in the config; {hint}"
                                      f"prefix it with '+' (+{key}=...) to add a new key")
                if not last:
                    node[part] = {}
            if last:
                node[part] = value
            else:
                node = node[part]
    return out


def import_custom_modules(cfg: Mapping[str, Any]) -> list[str]:
    """Import the modules named in ``custom_imports`` so they can register their types.

    Modules are importable by name, including from the current working directory.
    """
    spec = cfg.get("custom_imports")
    if not spec:
        return []
    if isinstance(spec, Mapping):
        modules = spec.get("imports", [])
        allow_failed = bool(spec.get("allow_failed_imports", False))
    else:
        modules, allow_failed = spec, False
    if isinstance(modules, str):
        modules = [modules]
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


def _check_positive_int(cfg: Mapping[str, Any], dotted: str, *, allow_zero: bool = False) -> None:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return
        node = node[part]
    ok = isinstance(node, int) and not isinstance(node, bool) and (node >= 0 if allow_zero else node > 0)
    if not ok:
        expected = "an integer >= 0" if allow_zero else "a positive integer"
        raise ConfigError(f"{cfg.get('filename', 'config')}: {dotted} must be {expected}, got {node!r}")


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Check the types of the keys the library relies on; raise ConfigError naming the key."""
    for key in ("data.samples_per_gpu", "model.num_classes", "runner.max_iters", "runner.max_epochs"):
        _check_positive_int(cfg, key)
    _check_positive_int(cfg, "data.workers_per_gpu", allow_zero=True)
    opt = cfg.get("optimizer")
    if isinstance(opt, Mapping) and "lr" in opt:
        lr = opt["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ConfigError(f"{cfg.get('filename', 'config')}: optimizer.lr must be a positive number, got {lr!r}")
    for key in ("model", "data", "optimizer"):
        if key in cfg and not isinstance(cfg[key], Mapping):
            raise ConfigError(f"{cfg.get('filename', 'config')}: {key} must be a mapping, got {type(cfg[key]).__name__}")
    evaluation = cfg.get("evaluation")
    if isinstance(evaluation, Mapping) and "backend" in evaluation:
        from detcore.evaluation.coco_eval import check_backend

        check_backend(evaluation["backend"], f"{cfg.get('filename', 'config')}: evaluation.backend")


def dump_config(cfg: Mapping[str, Any]) -> str:
    """The resolved config as YAML text (what runs and checkpoints save)."""
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None)


def config_from_text(text: str) -> dict:
    """Inverse of :func:`dump_config` (used to rebuild a model from checkpoint meta)."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError("checkpoint meta holds no config mapping")
    return data
