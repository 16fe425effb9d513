"""The literal subset of Python an MMDetection config is written in, evaluated from its :mod:`ast`.

Evaluated: literals (strings, numbers, booleans, None), dicts, ``dict(...)`` calls (keywords and
``**name``), lists, tuples, names bound earlier in the file or in its bases, ``_base_.key`` /
``{{_base_.key}}`` references, ``name.key`` on a dict (MMEngine's attribute access), ``+ - * /
//`` on numbers, ``+`` and ``* n`` on strings and lists, ``x[i]`` with a literal index and
f-strings whose fields are plain names, and list/dict comprehensions over lists, ``range(n)`` and
``enumerate(list)`` (no ``if`` clauses). A class imported by a new-style (MMEngine "pure Python")
config is never imported: it is a :class:`Lazy` name and evaluates to the class's name
(``type=SGD`` reads as ``type='SGD'``). Anything else (other calls, attribute access on
something that is not a dict, comprehensions, lambdas) is code: :class:`CodeInConfig`, one
line naming the file and the line.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from detcore.config import BASE_KEY
from detcore.config_yaml import MAX_CONFIG_BYTES
from detcore.errors import ConfigError

MAX_VALUE_ITEMS = 100_000  # items one `list * n` or `str * n` may produce
MAX_INT = 2 ** 63


class CodeInConfig(ConfigError):
    """The config holds an expression or statement that only running Python could evaluate."""


def code_error(path: Path, node: ast.AST, what: str) -> CodeInConfig:
    return CodeInConfig(f"{path}:{getattr(node, 'lineno', '?')}: {what} is code; detcore reads MMDetection configs "
                        f"without running them, so write the value as a literal (dict(...), [...], 'text', 1.0)")


@dataclass(frozen=True)
class Lazy:
    """A name a new-style config imports from a module (``from torch.optim import SGD``): never
    imported; as a value it is the imported object's own name (``'SGD'``)."""

    dotted: str

    @property
    def name(self) -> str:
        return self.dotted.rsplit(".", 1)[-1]


class Evaluator:
    """Evaluates the literal subset of Python described in the module docstring.

    ``names``: what the file bound so far (its own values and, in a new-style config, what it
    imported); ``base``: the merged ``_base_`` files (old style), read through ``_base_.key``.
    """

    def __init__(self, path: Path, names: dict[str, Any], base: Mapping[str, Any]) -> None:
        self.path, self.names, self.base = path, names, base
        self.produced = 0  # items comprehensions made so far in this file (bounded by MAX_VALUE_ITEMS)

    def value(self, node: ast.AST) -> Any:
        """The value of expression ``node`` (a :class:`Lazy` import becomes its name)."""
        value = self._raw(node)
        return value.name if isinstance(value, Lazy) else value

    def _raw(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise code_error(self.path, node, f"{type(node).__name__.lower()} {source_text(node)!r}")
        return method(node)

    def reference(self, node: ast.AST) -> Any:
        """The object ``node`` names, itself (not a copy): the container an assignment or an
        ``update`` changes. ``name``, ``_base_.key``, ``x.key`` and ``x[i]`` chains only."""
        if isinstance(node, ast.Name):
            if node.id == BASE_KEY:
                return self.base
            if node.id in self.names:
                return self.names[node.id]
            if node.id in self.base:
                return self.base[node.id]
            raise self._undefined(node)
        if isinstance(node, ast.Attribute):
            return self._item(self.reference(node.value), node.attr, node)
        if isinstance(node, ast.Subscript):
            return self._item(self.reference(node.value), self.value(node.slice), node)
        raise code_error(self.path, node, f"the target {source_text(node)!r:.80}")

    def _item(self, container: Any, key: Any, node: ast.AST) -> Any:
        try:
            if isinstance(container, dict) or (isinstance(container, list) and isinstance(key, int)
                                               and not isinstance(key, bool)):
                return container[key]
        except (IndexError, KeyError, TypeError):
            raise ConfigError(f"{self.path}:{node.lineno}: {source_text(node)!r:.80}: no such key") from None
        raise code_error(self.path, node, f"the access {source_text(node)!r:.80} (on a {type(container).__name__})")

    def _undefined(self, node: ast.Name) -> ConfigError:
        return ConfigError(f"{self.path}:{node.lineno}: name {node.id!r} is not defined in the file or its "
                           f"_base_ files; define it above its first use")

    def _Constant(self, node: ast.Constant) -> Any:
        if node.value is Ellipsis or isinstance(node.value, (bytes, complex)):
            raise code_error(self.path, node, f"the constant {source_text(node)!r}")
        return node.value

    def _Dict(self, node: ast.Dict) -> dict:
        out: dict = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                out.update(self._mapping(value))
                continue
            k = self.value(key)
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise code_error(self.path, key, f"the dict key {source_text(key)!r}")
            out[k] = self.value(value)
        return out

    def _mapping(self, node: ast.AST) -> dict:
        value = self.value(node)
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}:{node.lineno}: **{source_text(node)} is a {type(value).__name__}, "
                              f"not a dict; unpack only dicts")
        return value

    def _sequence(self, elts: list[ast.expr]) -> list:
        out: list = []
        for elt in elts:
            if isinstance(elt, ast.Starred):
                value = self.value(elt.value)
                if not isinstance(value, list):
                    raise code_error(self.path, elt, f"*{source_text(elt.value)}")
                out.extend(value)
            else:
                out.append(self.value(elt))
        return out

    def _List(self, node: ast.List) -> list:
        return self._sequence(node.elts)

    _Tuple = _List  # tuples become lists, as YAML has only lists

    def dict_call(self, node: ast.Call) -> dict:
        """The mapping of the arguments of ``f(...)``: ``f({...})``, ``f(other)``, ``f(k=v, **d)``."""
        out: dict = {}
        for arg in node.args:
            out.update(self._mapping(arg))
        for kw in node.keywords:
            if kw.arg is None:
                out.update(self._mapping(kw.value))
            else:
                out[kw.arg] = self.value(kw.value)
        return out

    def _Call(self, node: ast.Call) -> dict:
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict" and "dict" not in self.names):
            raise code_error(self.path, node, f"the call {source_text(node)!r:.80}")
        return self.dict_call(node)

    def _ListComp(self, node: ast.ListComp) -> list:
        return [self.value(node.elt) for _ in self._bindings(node, node.generators)]

    def _DictComp(self, node: ast.DictComp) -> dict:
        out: dict = {}
        for _ in self._bindings(node, node.generators):
            key = self.value(node.key)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise code_error(self.path, node.key, f"the dict key {source_text(node.key)!r}")
            out[key] = self.value(node.value)
        return out

    def _bindings(self, node: ast.AST, generators: list[ast.comprehension]) -> Iterator[None]:
        """Bind the loop names of ``[elt for a in xs for b in ys]`` in turn (no ``if`` clauses);
        the names are put back as they were afterwards, as a comprehension's scope is its own."""
        saved = {name: self.names.get(name, _UNSET) for gen in generators for name in _target_names(gen.target)}
        try:
            yield from self._loop(node, generators)
        finally:
            for name, value in saved.items():
                if value is _UNSET:
                    self.names.pop(name, None)
                else:
                    self.names[name] = value

    def _loop(self, node: ast.AST, generators: list[ast.comprehension]) -> Iterator[None]:
        if not generators:
            yield
            return
        gen = generators[0]
        if gen.ifs or gen.is_async or not _target_names(gen.target):
            raise code_error(self.path, node, f"the comprehension {source_text(node)!r:.80}")
        for item in self._iterable(gen.iter):
            self.produced += 1
            if self.produced > MAX_VALUE_ITEMS:
                raise ConfigError(f"{self.path}:{node.lineno}: {source_text(node)!r:.80} makes more than "
                                  f"{MAX_VALUE_ITEMS} items")
            self._bind(gen.target, item, node)
            yield from self._loop(node, generators[1:])

    def _iterable(self, node: ast.expr) -> list:
        """What a comprehension may loop over: a list, ``range(ints)`` or ``enumerate(list)``."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("range", "enumerate") \
                and node.func.id not in self.names and not node.keywords and 1 <= len(node.args) <= 3:
            args = [self.value(a) for a in node.args]
            if node.func.id == "range" and all(isinstance(a, int) and not isinstance(a, bool) for a in args):
                span = range(*args)
                if len(span) <= MAX_VALUE_ITEMS:
                    return list(span)
            if node.func.id == "enumerate" and len(args) == 1 and isinstance(args[0], list):
                return [[i, v] for i, v in enumerate(args[0])]
        value = self.value(node)
        if isinstance(value, list):
            return value
        raise code_error(self.path, node, f"the loop over {source_text(node)!r:.80}")

    def _bind(self, target: ast.expr, item: Any, node: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = item
            return
        names = _target_names(target)
        if not isinstance(item, list) or len(item) != len(names):
            raise ConfigError(f"{self.path}:{node.lineno}: cannot unpack {item!r:.60} into {source_text(target)}")
        for name, value in zip(names, item):
            self.names[name] = value

    def _Name(self, node: ast.Name) -> Any:
        if node.id in self.names:
            return self.names[node.id]
        if node.id in self.base and not node.id.startswith("__"):
            return self.base[node.id]
        raise self._undefined(node)

    def _Attribute(self, node: ast.Attribute) -> Any:
        if isinstance(node.value, ast.Name) and node.value.id == BASE_KEY:
            if node.attr not in self.base:
                raise ConfigError(f"{self.path}:{node.lineno}: {source_text(node)} is not in the _base_ files")
            return self.base[node.attr]  # the base's own value: changing it changes what is inherited, as in MMEngine
        owner = self._raw(node.value)
        if isinstance(owner, Lazy):
            return Lazy(f"{owner.dotted}.{node.attr}")
        if isinstance(owner, dict):  # MMEngine's ConfigDict: cfg.key is cfg['key']
            if node.attr not in owner:
                raise ConfigError(f"{self.path}:{node.lineno}: {source_text(node)!r:.80}: no such key")
            return owner[node.attr]
        raise code_error(self.path, node, f"the attribute access {source_text(node)!r:.80}")

    def _Set(self, node: ast.Set) -> Any:  # MMCV's {{_base_.key}} substitution
        if len(node.elts) == 1 and isinstance(node.elts[0], ast.Set) and len(node.elts[0].elts) == 1:
            inner = node.elts[0].elts[0]
            if isinstance(inner, ast.Attribute) and _rooted_at_base(inner):
                return self._Attribute(inner)
        raise code_error(self.path, node, f"the set {source_text(node)!r:.80}")

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self.value(node.operand)
        if isinstance(node.op, (ast.USub, ast.UAdd)) and _is_number(value):
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node.op, ast.Not) and isinstance(value, bool):
            return not value
        raise code_error(self.path, node, f"the expression {source_text(node)!r:.80}")

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
                    raise code_error(self.path, node, f"the operator in {source_text(node)!r:.80}")
            except ZeroDivisionError:
                raise ConfigError(f"{self.path}:{node.lineno}: division by zero in {source_text(node)!r:.80}") from None
            if abs(result) > MAX_INT:
                raise ConfigError(f"{self.path}:{node.lineno}: {source_text(node)!r:.80} is larger than {MAX_INT}")
            return result
        if isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list)):
            return self._sized(node, left + right) if len(left) + len(right) <= _limit(left) else \
                self._sized(node, None)
        if isinstance(op, ast.Mult) and isinstance(left, (str, list)) and isinstance(right, int) \
                and not isinstance(right, bool):
            return self._sized(node, left * right if len(left) * max(right, 0) <= _limit(left) else None)
        raise code_error(self.path, node, f"the expression {source_text(node)!r:.80}")

    def _sized(self, node: ast.AST, value: Any) -> Any:
        """``value``, or (None: it would be too long) one line saying so."""
        if value is None:
            raise ConfigError(f"{self.path}:{node.lineno}: {source_text(node)!r:.80} makes a value longer than "
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
            raise ConfigError(f"{self.path}:{node.lineno}: {source_text(node)!r:.80}: no such item") from None
        raise code_error(self.path, node, f"the subscript {source_text(node)!r:.80}")

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
                    raise code_error(self.path, node, f"the f-string {source_text(node)!r:.80}")
                out.append(str(value))
            else:
                raise code_error(self.path, node, f"the f-string {source_text(node)!r:.80}")
        return self._sized(node, "".join(out) if sum(map(len, out)) <= MAX_CONFIG_BYTES else None)


_UNSET = object()


def _target_names(target: ast.expr) -> list[str]:
    """``x`` or ``(a, b)`` as names; [] for any other loop target."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in target.elts):
        return [e.id for e in target.elts]  # type: ignore[attr-defined]
    return []


def _rooted_at_base(node: ast.Attribute) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value  # type: ignore[assignment]
    return isinstance(node, ast.Name) and node.id == BASE_KEY


def _limit(value: str | list) -> int:
    return MAX_CONFIG_BYTES if isinstance(value, str) else MAX_VALUE_ITEMS


def expanded_size(value: Any, limit: int) -> int:
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


def source_text(node: ast.AST) -> str:
    """``node`` as one line of source (for messages)."""
    try:
        return " ".join(ast.unparse(node).split())
    except Exception:  # noqa: BLE001 - only used to describe the node
        return type(node).__name__
