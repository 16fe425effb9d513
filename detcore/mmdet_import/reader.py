"""Read an MMDetection ``.py`` config (2.x or 3.x) and its bases without running it.

The file is parsed with :mod:`ast`; values are evaluated by :mod:`.evaluator` (literals, dicts,
lists, names, ``_base_`` references and a little arithmetic). Statements: assignments to a
name, to ``name.key`` / ``name[i]`` chains (``_base_.optim_wrapper.type = 'AmpOptimWrapper'``
changes what the file inherits, as MMEngine does), and ``name.update(...)`` /
``name.merge(...)`` (MMEngine's recursive merge). Anything else (imports, calls, loops,
functions) is code: the file is refused with one line naming the file and the line, and
nothing in it is run.

Two ways to inherit:

- ``_base_ = [...]`` (MMDetection 2.x and 3.x): bases merge as MMDetection merges them
  (:func:`detcore.config.merge`: later bases override earlier, the child overrides,
  ``_delete_=True`` replaces, dicts merge, lists replace).
- MMEngine's new ("pure Python") style: ``with read_base(): from .._base_.x import *`` (or
  ``if '_base_':``). The imported base files are read the same way; their names are bound as
  Python binds them (an assignment replaces, ``update``/``merge`` merge). Other imports
  (``from mmdet.models import FasterRCNN``) are never executed: the name stands for the class's
  name. Bases must be relative imports (files beside the config); an import from an installed
  package is refused.
"""
from __future__ import annotations

import ast
import copy
import functools
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from detcore.config import BASE_KEY, _Budget, merge
from detcore.config_yaml import MAX_NODES, read_config_text
from detcore.errors import ConfigError
from detcore.mmdet_import.evaluator import Evaluator, Lazy, code_error, expanded_size, source_text

MERGE_METHODS = ("update", "merge")  # ConfigDict methods a statement may call (both merge recursively)


def _parse(path: Path, text: str) -> ast.Module:
    return _parse_text(str(path), text)


@functools.lru_cache(maxsize=64)
def _parse_text(path: str, text: str) -> ast.Module:
    """Parse ``text`` (cached: a tree's bases are read once per file and by many configs; the
    trees are only read, never changed)."""
    try:
        return ast.parse(text, filename=path)
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid Python ({exc.msg}); an MMDetection config is a .py "
                          f"file of assignments") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be parsed ({type(exc).__name__}); nested too deeply or not text") from None


class _FileReader:
    """Runs the statements of one parsed file over ``names`` (its bindings) without executing them."""

    def __init__(self, path: Path, names: dict[str, Any], base: Mapping[str, Any], budget: _Budget) -> None:
        self.path, self.names, self.budget = path, names, budget
        self.evaluator = Evaluator(path, names, base)

    def statement(self, stmt: ast.stmt) -> None:
        try:
            self._statement(stmt)
        except RecursionError:
            raise ConfigError(f"{self.path}:{stmt.lineno}: nested too deeply; flatten the value") from None

    def _statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            return  # a docstring
        if isinstance(stmt, ast.Pass):
            return
        if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self._assign([stmt.target], stmt.value, stmt)
        elif isinstance(stmt, ast.Assign):
            self._assign(stmt.targets, stmt.value, stmt)
        elif isinstance(stmt, ast.Expr) and _is_merge_call(stmt.value):
            self._merge_call(stmt.value, stmt)  # type: ignore[arg-type]
        else:
            kind = {ast.Import: "an import", ast.ImportFrom: "an import", ast.Expr: "the statement"}.get(
                type(stmt), f"a {type(stmt).__name__.lower()} statement")
            raise code_error(self.path, stmt, f"{kind} {source_text(stmt)!r:.80}")

    def _evaluate(self, node: ast.expr, stmt: ast.stmt) -> Any:
        return self._counted(self.evaluator.value(node), stmt)

    def _counted(self, result: Any, stmt: ast.stmt) -> Any:
        """``result``, counted against the tree's budget of values."""
        self.budget.values -= expanded_size(result, self.budget.values + 1)
        if self.budget.values < 0:
            raise ConfigError(f"{self.path}:{stmt.lineno}: the _base_ tree holds more than {MAX_NODES} values once "
                              f"names are expanded; a config is small, is this a data file?")
        return result

    def _assign(self, targets: list[ast.expr], value: ast.expr, stmt: ast.stmt) -> None:
        for target in targets:
            if not (isinstance(target, ast.Name) or _is_item_chain(target)):
                raise code_error(self.path, stmt, f"an assignment to {source_text(target)!r:.80}")
            if isinstance(target, ast.Name) and target.id.startswith("__"):
                raise code_error(self.path, stmt, f"an assignment to {target.id}")
        result = self._evaluate(value, stmt)
        for target in targets:
            if isinstance(target, ast.Name):
                self.names[target.id] = result
                continue
            container = self.evaluator.reference(target.value)  # type: ignore[attr-defined]
            key = target.attr if isinstance(target, ast.Attribute) else self.evaluator.value(target.slice)
            _store(container, key, copy.deepcopy(result), self.path, stmt)  # a copy: no cycles, no aliases

    def _merge_call(self, call: ast.Call, stmt: ast.stmt) -> None:
        target = self.evaluator.reference(call.func.value)  # type: ignore[attr-defined]
        if not isinstance(target, dict):
            raise code_error(self.path, stmt, f"the call {source_text(call)!r:.80} (on a {type(target).__name__})")
        update = self._counted(self.evaluator.dict_call(call), stmt)
        merged = merge(target, update)
        target.clear()
        target.update(merged)


def _is_item_chain(node: ast.expr) -> bool:
    """``a.b``, ``a['b']``, ``_base_.x[1].y``: keys and indexes below a name."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return isinstance(node, ast.Name)


def _is_merge_call(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MERGE_METHODS
            and _is_item_chain(node.func.value))


def _store(container: Any, key: Any, value: Any, path: Path, stmt: ast.stmt) -> None:
    if isinstance(container, dict) and isinstance(key, (str, int, float, bool)):
        container[key] = value
        return
    if isinstance(container, list) and isinstance(key, int) and not isinstance(key, bool):
        if not -len(container) <= key < len(container):
            raise ConfigError(f"{path}:{stmt.lineno}: index {key} is outside the list of {len(container)}")
        container[key] = value
        return
    raise code_error(path, stmt, f"the assignment {source_text(stmt)!r:.80} (into a {type(container).__name__})")


def read_file_names(path: Path, base: Mapping[str, Any], budget: _Budget) -> dict[str, Any]:
    """The names one old-style file binds (``_base_`` included), evaluated without running the file.
    ``base`` (the merged ``_base_`` files) may be changed by ``_base_.key = value`` statements."""
    text = read_config_text(path)
    budget.read(path, len(text))
    names: dict[str, Any] = {}
    reader = _FileReader(path, names, base, budget)
    for stmt in _parse(path, text).body:
        reader.statement(stmt)
    return names


def _bases_of(path: Path, text_names_base: Any) -> list[str]:
    bases = text_names_base
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r:.200}")
    return bases


def _base_assignment(tree: ast.Module) -> ast.Assign | None:
    return next((stmt for stmt in tree.body if isinstance(stmt, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == BASE_KEY for t in stmt.targets)), None)


def _check_cycle(path: Path, chain: tuple[Path, ...]) -> Path:
    real = Path(os.path.realpath(path))
    if real in chain:
        raise ConfigError(f"cyclic _base_ chain: {' -> '.join(str(p) for p in (*chain, real))}; remove one of "
                          f"these _base_ entries")
    return real


def _load_tree(path: Path, chain: tuple[Path, ...], budget: _Budget) -> dict:
    """The config at ``path`` merged over its bases (old style), or read in the new style."""
    path = Path(os.path.abspath(path))
    real = _check_cycle(path, chain)
    tree = _parse(path, read_config_text(path))
    if is_new_style(tree):
        return _load_new_style(path, tree, (*chain, real), budget)
    assignment = _base_assignment(tree)
    bases = _bases_of(path, Evaluator(path, {}, {}).value(assignment.value)) if assignment else []
    merged: dict = {}
    for base in bases:
        base_path = path.parent / os.path.expanduser(base)
        if "::" in base and not os.path.lexists(base_path):
            raise ConfigError(f"{path}: _base_ file {base!r} is a config inside the installed package "
                              f"{base.split('::')[0]!r}; copy it (and its bases) beside this config and give its "
                              f"relative path")
        if not os.path.lexists(base_path):
            raise ConfigError(f"{path}: _base_ file {base!r} not found (looked for {base_path})")
        if base_path.suffix != ".py":
            raise ConfigError(f"{path}: _base_ file {base!r} is not a .py MMDetection config; import .py bases only")
        merged = merge(merged, _load_tree(base_path, (*chain, real), budget))
    names = read_file_names(path, merged, budget)
    names.pop(BASE_KEY, None)
    return merge(merged, names)


def _stdlib(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in sys.stdlib_module_names  # type: ignore[union-attr]


def is_new_style(tree: ast.Module) -> bool:
    """MMEngine's rule for a "pure Python" config: no ``_base_ =`` and a ``with`` block, a relative
    import or an import of a non-standard-library module (an ``import os`` alone is old-style code)."""
    if _base_assignment(tree) is not None:
        return False
    for stmt in tree.body:
        if isinstance(stmt, ast.With) or _is_base_if(stmt):
            return True
        if isinstance(stmt, ast.ImportFrom) and (stmt.level > 0 or not _stdlib(stmt.module)):
            return True
        if isinstance(stmt, ast.Import) and any(not _stdlib(alias.name) for alias in stmt.names):
            return True
    return False


def _is_base_if(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Constant) and stmt.test.value == BASE_KEY
            and not stmt.orelse)


def _is_read_base(stmt: ast.stmt) -> bool:
    if not (isinstance(stmt, ast.With) and len(stmt.items) == 1 and stmt.items[0].optional_vars is None):
        return False
    call = stmt.items[0].context_expr
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "read_base" \
        and not call.args and not call.keywords


def _load_new_style(path: Path, tree: ast.Module, chain: tuple[Path, ...], budget: _Budget) -> dict:
    """The names a new-style file leaves bound (the classes it imported too, as a child's
    ``import *`` sees them; :func:`read_mmdet_config` drops those at the top, as MMEngine does)."""
    budget.read(path, len(read_config_text(path)))
    names: dict[str, Any] = {}
    reader = _FileReader(path, names, names, budget)  # `_base_.key` reads what the bases bound
    for stmt in tree.body:
        if _is_read_base(stmt) or _is_base_if(stmt):
            for inner in stmt.body:  # type: ignore[attr-defined]
                _import_base(path, inner, names, chain, budget)
        elif isinstance(stmt, ast.With):
            raise code_error(path, stmt, f"the block {source_text(stmt.items[0].context_expr)!r:.80} (only `with "
                                         f"read_base():` may open a block)")
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            _bind_lazy(path, stmt, names)
        else:
            reader.statement(stmt)
    names.pop(BASE_KEY, None)
    return {k: v for k, v in names.items() if not k.startswith("__")}


def _import_base(path: Path, stmt: ast.stmt, names: dict[str, Any], chain: tuple[Path, ...], budget: _Budget) -> None:
    """``from .rel.module import *`` (or some names) inside ``with read_base():``."""
    if not isinstance(stmt, ast.ImportFrom):
        raise code_error(path, stmt, f"the statement {source_text(stmt)!r:.80} inside `with read_base():` (only "
                                     f"`from .base_file import *` belongs there)")
    if stmt.level == 0:
        raise ConfigError(f"{path}:{stmt.lineno}: base {stmt.module!r} is a config inside an installed package; "
                          f"copy it (and its bases) beside this config and import it relatively "
                          f"(from .{str(stmt.module).rsplit('.', 1)[-1]} import *)")
    base_path = path.parent.joinpath(*([".."] * (stmt.level - 1)), *str(stmt.module or "").split(".")) \
        .with_suffix(".py")
    if not stmt.module or not os.path.lexists(base_path):
        raise ConfigError(f"{path}:{stmt.lineno}: base file for {'.' * stmt.level}{stmt.module or ''} not found "
                          f"(looked for {base_path})")
    base = _load_tree(base_path, chain, budget)
    for alias in stmt.names:
        if alias.name == "*":
            names.update(copy.deepcopy(base))
        elif alias.name in base:
            names[alias.asname or alias.name] = copy.deepcopy(base[alias.name])
        else:
            raise ConfigError(f"{path}:{stmt.lineno}: {alias.name!r} is not defined in {base_path}")


def _bind_lazy(path: Path, stmt: ast.Import | ast.ImportFrom, names: dict[str, Any]) -> None:
    """Bind the names an import would bind to :class:`Lazy` placeholders; nothing is imported."""
    if isinstance(stmt, ast.ImportFrom):
        if stmt.level > 0 or _stdlib(stmt.module):
            raise code_error(path, stmt, f"an import {source_text(stmt)!r:.80}" + (
                " outside `with read_base():`" if stmt.level > 0 else ""))
        for alias in stmt.names:
            if alias.name == "*":
                raise code_error(path, stmt, f"an import {source_text(stmt)!r:.80}")
            names[alias.asname or alias.name] = Lazy(f"{stmt.module}.{alias.name}")
        return
    for alias in stmt.names:
        if _stdlib(alias.name):
            raise code_error(path, stmt, f"an import {source_text(stmt)!r:.80}")
        names[alias.asname or alias.name.split(".")[0]] = Lazy(alias.name if alias.asname else alias.name.split(".")[0])


def read_mmdet_config(path: str | os.PathLike) -> dict:
    """The merged MMDetection config at ``path`` as plain data (tuples become lists)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"{path}: config file not found; pass the path to an MMDetection .py config")
    return {k: v for k, v in _load_tree(path, (), _Budget()).items() if not isinstance(v, Lazy)}
