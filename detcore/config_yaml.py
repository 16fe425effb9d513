"""Reading config YAML safely: bounded in size, depth and alias expansion, JSON-compatible values.

Torch-free on purpose (``detcore config show`` and the launcher read configs without torch).

- Only regular files are read, opened non-blocking (a FIFO or a device never hangs) and at
  most :data:`MAX_CONFIG_BYTES` of them; text must be UTF-8.
- ``yaml.SafeLoader`` with numbers as users write them (YAML 1.2 floats: ``1e-4``, ``5.e-3``)
  and dates left as strings (YAML 1.2 has no timestamps).
- The node graph is checked before anything is constructed: at most :data:`MAX_NODES` nodes
  with every alias expanded ("billion laughs" is refused, not built), at most
  :data:`MAX_DEPTH` levels, no recursive alias, no ``!!set``/``!!binary``/``!!timestamp``/
  ``!!omap``/``!!pairs`` tags. So every loaded config can be copied, merged and printed as
  JSON in bounded memory.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from detcore.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20   # a config file larger than 1 MiB is refused
MAX_NODES = 100_000          # values in one document after alias expansion
MAX_DEPTH = 64               # nesting levels of lists and mappings

_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)
_FLOAT_TAG = "tag:yaml.org,2002:float"
_REFUSED_TAGS = {f"tag:yaml.org,2002:{t}": t for t in ("set", "binary", "timestamp", "omap", "pairs")}


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats, no implicit timestamps and a bounded node graph."""

    values = 0  # expanded size of the last document, set before it is constructed

    def construct_document(self, node: yaml.Node) -> Any:
        self.values = check_node_graph(node)
        return super().construct_document(node)


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))


def check_node_graph(root: yaml.Node) -> int:
    """The number of values in the document with aliases expanded; ConfigError if it exceeds
    MAX_NODES or MAX_DEPTH, recurses, or uses a refused tag.

    Sizes are memoised per node, so the check itself is linear in the text even for alias bombs.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def where(node: yaml.Node) -> str:
        mark = node.start_mark
        return f"line {mark.line + 1}, column {mark.column + 1}"

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"recursive alias at {where(node)}; a config value cannot contain itself")
        if depth > MAX_DEPTH:
            raise ConfigError(f"nested deeper than {MAX_DEPTH} levels at {where(node)}; flatten the config")
        if node.tag in _REFUSED_TAGS:
            raise ConfigError(f"!!{_REFUSED_TAGS[node.tag]} value at {where(node)} is not supported; configs hold "
                              f"strings, numbers, booleans, null, lists and mappings")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise ConfigError(f"more than {MAX_NODES} values once YAML aliases are expanded (at {where(node)}); "
                                  f"an alias bomb or a data file, not a config")
        active.discard(key)
        sizes[key] = total
        return total

    return size(root, 0)


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document with :class:`ConfigLoader`; errors are ConfigError naming ``source``."""
    return parse_yaml_counted(text, source)[0]


def parse_yaml_counted(text: str, source: str) -> tuple[Any, int]:
    """:func:`parse_yaml` and the number of values it holds with aliases expanded."""
    try:
        loader = ConfigLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters before any parsing
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}; remove it, or write it as an "
                          f"escape (\\x1b) in a double-quoted string") from None
    try:
        return loader.get_single_data(), loader.values
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{at}: {problem}; fix the syntax (plain YAML, no Python tags)") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to parse; flatten the config") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{source}: a value cannot be read ({exc}); quote it as a string") from None
    finally:
        loader.dispose()


def read_config_text(path: Path) -> str:
    """The text of config file ``path``: a regular file of at most MAX_CONFIG_BYTES, UTF-8."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(unreadable_config(path, exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
            raise ConfigError(f"{path}: is {kind}; a config must be a .yaml file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {st.st_size} bytes, larger than the {MAX_CONFIG_BYTES} bytes a config "
                              f"may have; is it a data file?")
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror}); check the path") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than the {MAX_CONFIG_BYTES} bytes a config may have; is it a data file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None


def unreadable_config(path: str | os.PathLike, exc: OSError) -> str:
    """Why config ``path`` could not be opened, as one line: not found, a dangling link, a link loop."""
    if exc.errno == errno.ELOOP:
        loop = symlink_loop(path)
        return (f"{path}: symbolic link loop ({loop}); point one of these links at a config file" if loop else
                f"{path}: a symbolic link in its path loops back on itself; fix the link")
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist; fix or remove the link"
    if isinstance(exc, FileNotFoundError):
        return f"{path}: config file not found; pass the path to a .yaml config"
    return f"{path}: cannot read config ({exc.strerror}); check the path"


def symlink_loop(path: str | os.PathLike, hops: int = 40) -> str:
    """``a.yaml -> b.yaml -> a.yaml``: the links from ``path`` that lead back to one of them ('' if none)."""
    seen: list[str] = []
    current = os.path.abspath(path)
    for _ in range(hops):
        if current in seen:
            return " -> ".join(seen[seen.index(current):] + [current])
        seen.append(current)
        try:
            target = os.readlink(current)
        except OSError:
            return ""
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
    return ""


class ConfigDumper(yaml.SafeDumper):
    """SafeDumper that quotes every string :class:`ConfigLoader` would read as a float (``'1e-4'``)."""


ConfigDumper.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))


def dump_yaml(data: Any) -> str:
    """``data`` as block YAML that :func:`parse_yaml` reads back to an equal value."""
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False, default_flow_style=None)
