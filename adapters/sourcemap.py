"""Where a value of a TOML or YAML document is: JSON path -> line number.

Used to name the line of a configuration error.  ``tomllib`` keeps no positions, so
:func:`toml_lines` scans the text: table headers (``[a.b]``, ``[[a]]`` with the index of
each array-of-tables entry), ``key = value`` lines (dotted and quoted keys), the elements of
arrays written over several lines, and multi-line strings (skipped).  It is not a TOML
parser -- the text has already been parsed by ``tomllib`` -- only a good guess at lines;
:func:`line_of` falls back to the nearest enclosing value that has one.  YAML keeps
positions: :func:`yaml_lines` reads them from the composed node tree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import yaml

from xchange.servicedesc import NoAliasLoader

__all__ = ["JsonPath", "format_path", "line_of", "toml_lines", "yaml_lines"]

JsonPath = tuple[str | int, ...]

_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY_TABLE = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]\s*(?:#.*)?$")
_TABLE = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?$")
_KEY_VALUE = re.compile(rf"^\s*({_DOTTED})\s*=\s*(.*)$")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _keys(dotted: str) -> list[str]:
    out = []
    for key in re.findall(_KEY, dotted):
        if key.startswith('"'):
            out.append(str(json.loads(key)))
        elif key.startswith("'"):
            out.append(key[1:-1])
        else:
            out.append(key)
    return out


class _TomlScan:
    def __init__(self) -> None:
        self.lines: dict[JsonPath, int] = {}
        self.arrays: dict[JsonPath, int] = {}  # array-of-tables path -> entries so far
        self.table: JsonPath = ()
        self.closing: str | None = None  # inside a multi-line string ending with this
        self.array: JsonPath | None = None  # inside a multi-line array value at this path
        self.depth = 0
        self.index = 0
        self.open_element = False

    def resolve(self, keys: Sequence[str]) -> JsonPath:
        path: JsonPath = ()
        for key in keys:
            path += (key,)
            if path in self.arrays:
                path += (self.arrays[path] - 1,)
        return path

    def feed(self, number: int, line: str) -> None:
        if self.closing is not None:
            if self.closing in line:
                self.closing = None
            return
        if self.array is not None:
            self.scan_array(number, line)
            return
        if m := _ARRAY_TABLE.match(line):
            keys = _keys(m.group(1))
            path = (*self.resolve(keys[:-1]), keys[-1])
            self.arrays[path] = self.arrays.get(path, 0) + 1
            self.lines.setdefault(path, number)
            self.table = (*path, self.arrays[path] - 1)
            self.lines[self.table] = number
        elif m := _TABLE.match(line):
            self.table = self.resolve(_keys(m.group(1)))
            self.lines.setdefault(self.table, number)
        elif m := _KEY_VALUE.match(line):
            path = (*self.table, *_keys(m.group(1)))
            self.lines[path] = number
            value = m.group(2).lstrip()
            for quote in ('"""', "'''"):
                if value.startswith(quote) and quote not in value[3:]:
                    self.closing = quote
                    return
            if value.startswith("["):
                self.array, self.depth, self.index, self.open_element = path, 0, 0, False
                self.scan_array(number, value)

    def scan_array(self, number: int, text: str) -> None:
        """Follow brackets (strings and comments removed) to number the array's elements."""
        assert self.array is not None
        text = _STRINGS.sub('""', text).split("#", 1)[0]
        for ch in text:
            if self.depth == 1 and not self.open_element and ch not in " \t,]":
                self.lines[(*self.array, self.index)] = number
                self.open_element = True
            if ch in "[{":
                self.depth += 1
            elif ch in "]}":
                self.depth -= 1
                if self.depth == 0:
                    self.array = None
                    return
            elif ch == "," and self.depth == 1:
                self.index += 1
                self.open_element = False


def toml_lines(text: str) -> dict[JsonPath, int]:
    """JSON path -> 1-based line, for the tables, keys and array elements of a TOML text."""
    scan = _TomlScan()
    for number, line in enumerate(text.splitlines(), 1):
        scan.feed(number, line)
    return scan.lines


def yaml_lines(text: str) -> dict[JsonPath, int]:
    """JSON path -> 1-based line, for every mapping key and sequence item of a YAML text."""
    lines: dict[JsonPath, int] = {}

    def walk(node: yaml.Node, path: JsonPath) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, str(key.value))
                walk(value, here)
                lines[here] = key.start_mark.line + 1  # the key's line, not its value's
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    root = yaml.compose(text, Loader=NoAliasLoader)
    if root is not None:
        walk(root, ())
    return lines


def line_of(lines: dict[JsonPath, int], path: Sequence[str | int]) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    for end in range(len(path), 0, -1):
        found = lines.get(tuple(path[:end]))
        if found is not None:
            return found
    return None


def format_path(path: Sequence[str | int]) -> str:
    """``services[0].sql.queries[1].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"
