"""Read an MMDetection 2.x ``.py`` config and its ``_base_`` chain without running it.

The file is parsed with :mod:`ast` and only these expressions are evaluated: literals
(strings, numbers, booleans, None), dicts, ``dict(...)`` calls (keywords and ``**name``),
lists, tuples, names bound earlier in the file or in its bases, ``_base_.key`` /
``{{_base_.key}}`` references, ``+ - * / //`` on numbers, ``+`` and ``* n`` on strings and
lists, ``x[i]`` with a literal index and f-strings whose fields are plain names. Anything
else (other calls, imports, attribute access, comprehensions, lambdas) is code: the file
is refused with one line naming the file and the line, and nothing in it is run.

Bases merge as MMDetection merges them (:func:`detcore.config.merge`: later bases override
earlier, the child overrides, ``_delete_=True`` replaces, dicts merge, lists replace).
"""
from __future__ import annotations

import ast
import functools
import os
from pathlib import Path
from typing import Any, Mapping

from detcore.config import BASE_KEY, _Budget, merge
from detcore.config_yaml import MAX_CONFIG_BYTES, MAX_NODES, read_config_text
from detcore.errors import ConfigError

MAX_VALUE_ITEMS = 100_000  # items one `list * n` or `str * n` may produce
MAX_INT = 2 ** 63


class CodeInConfig(ConfigError):
    """The config holds an expression or statement that only running Python could evaluate."""


def _code(path: Path, node: ast.AST, what: str) -> CodeInConfig:
    return CodeInConfig(f"{path}:{getattr(node, 'lineno', '?')}: {what} is code; detcore reads MMDetection configs "
                        f"without running them, so write the value as a literal (dict(...), [...], 'text', 1.0)")


class _Evaluator:
    """Evaluates the literal subset of Python described in the module docstring."""

    def __init__(self, path: Path, names: dict[str, Any], base: Mapping[str, Any]) -> None:
        self.path, self.names, self.base = path, names, base

    def value(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise _code(self.path, node, f"{type(node).__name__.lower()} {_source(node)!r}")
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        if node.value is Ellipsis or isinstance(node.value, (bytes, complex)):
            raise _code(self.path, node, f"the constant {_source(node)!r}")
        return node.value

    def _Dict(self, node: ast.Dict) -> dict:
        out: dict = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                out.update(self._mapping(value))
                continue
            k = self.value(key)
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise _code(self.path, key, f"the dict key {_source(key)!r}")
            out[k] = self.value(value)
        return out

    def _mapping(self, node: ast.AST) -> dict:
        value = self.value(node)
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}:{node.lineno}: **{_source(node)} is a {type(value).__name__}, "
                              f"not a dict; unpack only dicts")
        return value

    def _sequence(self, elts: list[ast.expr]) -> list:
        out: list = []
        for elt in elts:
            if isinstance(elt, ast.Starred):
                value = self.value(elt.value)
                if not isinstance(value, list):
                    raise _code(self.path, elt, f"*{_source(elt.value)}")
                out.extend(value)
            else:
                out.append(self.value(elt))
        return out

    def _List(self, node: ast.List) -> list:
        return self._sequence(node.elts)

    _Tuple = _List  # tuples become lists, as YAML has only lists

    def _Call(self, node: ast.Call) -> dict:
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict" and "dict" not in self.names):
            raise _code(self.path, node, f"the call {_source(node)!r:.80}")
        out: dict = {}
        for arg in node.args:  # dict({...}) / dict(other)
            out.update(self._mapping(arg))
        for kw in node.keywords:
            if kw.arg is None:
                out.update(self._mapping(kw.value))
            else:
                out[kw.arg] = self.value(kw.value)
        return out

    def _Name(self, node: ast.Name) -> Any:
        if node.id in self.names:
            return self.names[node.id]
        if node.id in self.base and not node.id.startswith("__"):
            return self.base[node.id]
        raise ConfigError(f"{self.path}:{node.lineno}: name {node.id!r} is not defined in the file or its "
                          f"_base_ files; define it above its first use")

    def _Attribute(self, node: ast.Attribute) -> Any:
        parts = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.insert(0, cur.attr)
            cur = cur.value
        if not (isinstance(cur, ast.Name) and cur.id == BASE_KEY):
            raise _code(self.path, node, f"the attribute access {_source(node)!r:.80}")
        value: Any = self.base
        for part in parts:
            if not isinstance(value, Mapping) or part not in value:
                raise ConfigError(f"{self.path}:{node.lineno}: {_source(node)} is not in the _base_ files")
            value = value[part]
        return value

    def _Set(self, node: ast.Set) -> Any:  # MMCV's {{_base_.key}} substitution
        if len(node.elts) == 1 and isinstance(node.elts[0], ast.Set) and len(node.elts[0].elts) == 1:
            inner = node.elts[0].elts[0]
            if isinstance(inner, ast.Attribute):
                return self._Attribute(inner)
        raise _code(self.path, node, f"the set {_source(node)!r:.80}")

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self.value(node.operand)
        if isinstance(node.op, (ast.USub, ast.UAdd)) and _is_number(value):
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node.op, ast.Not) and isinstance(value, bool):
            return not value
        raise _code(self.path, node, f"the expression {_source(node)!r:.80}")

    def _BinOp(self, node: ast.BinOp) -> Any:
        left, right = self.value(node.left), self.value(node.right)
        op = node.op
        if _is_number(left) and _is_number(right):
            try:
                if isinstance(op, ast.Add):
                    result = left + right
                elif isinstance(op, ast.Sub):
                    result = left - right
                elif isinstance(op, ast.Mult):
                    result = left * right
                elif isinstance(op, ast.Div):
                    result = left / right
                elif isinstance(op, ast.FloorDiv):
                    result = left // right
                else:
                    raise _code(self.path, node, f"the operator in {_source(node)!r:.80}")
            except ZeroDivisionError:
                raise ConfigError(f"{self.path}:{node.lineno}: division by zero in {_source(node)!r:.80}") from None
            if abs(result) > MAX_INT:
                raise ConfigError(f"{self.path}:{node.lineno}: {_source(node)!r:.80} is larger than {MAX_INT}")
            return result
        if isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list)):
            return self._sized(node, left + right) if len(left) + len(right) <= _limit(left) else \
                self._sized(node, None)
        if isinstance(op, ast.Mult) and isinstance(left, (str, list)) and isinstance(right, int) \
                and not isinstance(right, bool):
            return self._sized(node, left * right if len(left) * max(right, 0) <= _limit(left) else None)
        raise _code(self.path, node, f"the expression {_source(node)!r:.80}")

    def _sized(self, node: ast.AST, value: Any) -> Any:
        """``value``, or (None: it would be too long) one line saying so."""
        if value is None:
            raise ConfigError(f"{self.path}:{node.lineno}: {_source(node)!r:.80} makes a value longer than "
                              f"{MAX_VALUE_ITEMS} items or {MAX_CONFIG_BYTES} characters")
        return value

    def _Subscript(self, node: ast.Subscript) -> Any:
        container = self.value(node.value)
        key = self.value(node.slice)
        try:
            if isinstance(container, (list, str)) and isinstance(key, int) and not isinstance(key, bool):
                return container[key]
            if isinstance(container, dict):
                return container[key]
        except (IndexError, KeyError, TypeError):
            raise ConfigError(f"{self.path}:{node.lineno}: {_source(node)!r:.80}: no such item") from None
        raise _code(self.path, node, f"the subscript {_source(node)!r:.80}")

    def _Index(self, node: Any) -> Any:  # Python 3.8's wrapper around a subscript
        return self.value(node.value)

    def _JoinedStr(self, node: ast.JoinedStr) -> str:
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value))
            elif (isinstance(part, ast.FormattedValue) and part.conversion == -1 and part.format_spec is None
                  and isinstance(part.value, (ast.Name, ast.Constant))):
                value = self.value(part.value)
                if not isinstance(value, (str, int, float)):
                    raise _code(self.path, node, f"the f-string {_source(node)!r:.80}")
                out.append(str(value))
            else:
                raise _code(self.path, node, f"the f-string {_source(node)!r:.80}")
        return self._sized(node, "".join(out) if sum(map(len, out)) <= MAX_CONFIG_BYTES else None)


def _limit(value: str | list) -> int:
    return MAX_CONFIG_BYTES if isinstance(value, str) else MAX_VALUE_ITEMS


def _expanded_size(value: Any, limit: int) -> int:
    """The number of values in ``value`` with shared references counted each time, up to ``limit``
    (names reused in nested lists would otherwise build a "billion laughs" of references)."""
    count, stack = 0, [value]
    while stack and count < limit:
        item = stack.pop()
        count += 1 + (len(item) // 100 if isinstance(item, str) else 0)  # long text counts as many values
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _source(node: ast.AST) -> str:
    try:
        return " ".join(ast.unparse(node).split())
    except Exception:  # noqa: BLE001 - only used to describe the node
        return type(node).__name__


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


def read_file_names(path: Path, base: Mapping[str, Any], budget: _Budget) -> dict[str, Any]:
    """The names one file binds (``_base_`` included), evaluated without running the file."""
    text = read_config_text(path)
    budget.read(path, len(text))
    names: dict[str, Any] = {}
    evaluator = _Evaluator(path, names, base)
    for stmt in _parse(path, text).body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # a docstring
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        elif isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            targets, value = stmt.targets, stmt.value
        else:
            kind = {ast.Import: "an import", ast.ImportFrom: "an import", ast.Expr: "the statement"}.get(
                type(stmt), f"a {type(stmt).__name__.lower()} statement")
            raise _code(path, stmt, f"{kind} {_source(stmt)!r:.80}")
        try:
            result = evaluator.value(value)
        except RecursionError:
            raise ConfigError(f"{path}:{stmt.lineno}: nested too deeply; flatten the value") from None
        budget.values -= _expanded_size(result, budget.values + 1)
        if budget.values < 0:
            raise ConfigError(f"{path}:{stmt.lineno}: the _base_ tree holds more than {MAX_NODES} values once "
                              f"names are expanded; a config is small, is this a data file?")
        for target in targets:
            if target.id.startswith("__"):
                raise _code(path, stmt, f"an assignment to {target.id}")
            names[target.id] = result
    return names


def _bases_of(path: Path, text_names_base: Any) -> list[str]:
    bases = text_names_base
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r:.200}")
    return bases


def _base_list(path: Path, budget: _Budget) -> list[str]:
    """The ``_base_`` of ``path``, read first (its value may not use other names)."""
    text = read_config_text(path)
    for stmt in _parse(path, text).body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == BASE_KEY for t in stmt.targets):
            return _bases_of(path, _Evaluator(path, {}, {}).value(stmt.value))
    return []


def _load_tree(path: Path, chain: tuple[Path, ...], budget: _Budget) -> dict:
    path = Path(os.path.abspath(path))
    real = Path(os.path.realpath(path))
    if real in chain:
        raise ConfigError(f"cyclic _base_ chain: {' -> '.join(str(p) for p in (*chain, real))}; remove one of "
                          f"these _base_ entries")
    merged: dict = {}
    for base in _base_list(path, budget):
        base_path = path.parent / os.path.expanduser(base)
        if not os.path.lexists(base_path):
            raise ConfigError(f"{path}: _base_ file {base!r} not found (looked for {base_path})")
        if base_path.suffix != ".py":
            raise ConfigError(f"{path}: _base_ file {base!r} is not a .py MMDetection config; import .py bases only")
        merged = merge(merged, _load_tree(base_path, (*chain, real), budget))
    names = read_file_names(path, merged, budget)
    names.pop(BASE_KEY, None)
    return merge(merged, names)


def read_mmdet_config(path: str | os.PathLike) -> dict:
    """The merged MMDetection config at ``path`` as plain data (tuples become lists)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"{path}: config file not found; pass the path to an MMDetection .py config")
    return _load_tree(path, (), _Budget())
