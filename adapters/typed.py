"""Typed record fields for the adapter backends that read text: files and legacy SOAP.

A silo hands over text (a CSV cell, a fixed-width slice, an XML element's content) or a
JSON value; a :class:`TypedField` says which :class:`~adapters.base.Field` it becomes and how
its text is read: an ``strptime`` format for dates, the words that mean true and false, the
texts that mean "no value".  Dates and date-times always leave as ISO 8601 strings, whatever
the silo's own format.

Also here: reading the ``fields`` list of a backend's configuration section (already valid
against its kind's JSON Schema: the configuration loader checks that).

What this module does not do: read files or sockets.  Conversion failures raise
:class:`ValueError` with a message meant for people; callers add where the value came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, cast, get_args

from adapters.base import ConfigValueError, Field, FieldType, Value

__all__ = [
    "TypedField",
    "fields_from_config",
    "from_json",
    "from_text",
    "to_text",
]

DEFAULT_TRUE: Final = frozenset({"true", "1", "yes", "y"})
DEFAULT_FALSE: Final = frozenset({"false", "0", "no", "n"})
_INTEGER: Final = re.compile(r"[+-]?\d+")
_FIELD_TYPES: Final = frozenset(get_args(FieldType))


@dataclass(frozen=True, slots=True)
class TypedField:
    """A record field and how the silo writes it."""

    field: Field
    source: str
    """Where the value is: a CSV column name, a JSON member, an XML element's local name."""
    format: str | None = None
    """``strptime`` format of a date or date-time; None: ISO 8601."""
    true_values: frozenset[str] = DEFAULT_TRUE
    false_values: frozenset[str] = DEFAULT_FALSE
    null_values: frozenset[str] = frozenset({""})
    decimal_comma: bool = False
    start: int = 0
    """Fixed-width records: the 0-based character position of the value."""
    length: int = 0
    """Fixed-width records: the value's width in characters."""

    @property
    def name(self) -> str:
        return self.field.name


def from_text(text: str | None, spec: TypedField) -> Value:
    """The value ``text`` means for ``spec``; ValueError saying why when it is not one."""
    if text is None or text.strip() in spec.null_values:
        if not spec.field.nullable:
            raise ValueError(f"field {spec.name!r} has no value")
        return None
    text = text.strip()
    kind = spec.field.type
    if kind == "string":
        return text
    if kind == "integer":
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"field {spec.name!r}: {text[:40]!r} is not an integer")
        return int(text)
    if kind == "number":
        candidate = text.replace(",", ".") if spec.decimal_comma else text
        try:
            number = float(candidate)
        except ValueError:
            raise ValueError(f"field {spec.name!r}: {text[:40]!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"field {spec.name!r}: {text[:40]!r} is not a finite number")
        return number
    if kind == "boolean":
        lowered = text.lower()
        if lowered in spec.true_values:
            return True
        if lowered in spec.false_values:
            return False
        raise ValueError(f"field {spec.name!r}: {text[:40]!r} is neither "
                         f"{'/'.join(sorted(spec.true_values))} nor "
                         f"{'/'.join(sorted(spec.false_values))}")
    return _moment(text, spec)


def _moment(text: str, spec: TypedField) -> str:
    want = spec.format or ("ISO 8601 (YYYY-MM-DD)" if spec.field.type == "date"
                           else "ISO 8601")
    try:
        if spec.field.type == "date":
            if spec.format:
                return datetime.strptime(text, spec.format).date().isoformat()
            return date.fromisoformat(text).isoformat()
        if spec.format:
            return datetime.strptime(text, spec.format).isoformat()
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"field {spec.name!r}: {text[:40]!r} is not a "
                         f"{spec.field.type} in the format {want}") from None


def from_json(value: Any, spec: TypedField) -> Value:
    """A JSON Lines member's value: JSON of the field's type, or text read as
    :func:`from_text` reads it."""
    kind = spec.field.type
    if value is None or isinstance(value, str):
        return from_text(value, spec)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"field {spec.name!r}: the JSON value {str(value)[:40]!r} is not "
                     f"{'an' if kind == 'integer' else 'a'} {kind}")


def to_text(value: Value, kind: FieldType) -> str:
    """The XML Schema lexical form of a parameter value (``true``, ``42``, ``1.5``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if value is None:
        raise ValueError("no value")
    del kind  # strings, dates and date-times already are their lexical form
    return str(value)


def fields_from_config(entries: Sequence[Mapping[str, Any]], *, source_key: str,
                       null_values: Sequence[str] = ("",),
                       decimal_comma: bool = False) -> tuple[TypedField, ...]:
    """The ``fields`` list of a section (already checked against its schema)."""
    found: list[TypedField] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        name = str(entry["name"])
        if name in seen:
            raise ConfigValueError(f"field {name!r} is declared twice", ("fields", i, "name"))
        seen.add(name)
        kind = cast(FieldType, entry.get("type", "string"))
        if kind not in _FIELD_TYPES:  # the schema refuses it first
            raise ConfigValueError(f"unknown type {kind!r}", ("fields", i, "type"))
        found.append(TypedField(
            field=Field(name, kind, nullable=bool(entry.get("nullable", True)),
                        description=str(entry.get("description", ""))),
            source=str(entry.get(source_key, name)),
            format=entry.get("format"),
            true_values=frozenset(v.lower() for v in entry.get("true", DEFAULT_TRUE)),
            false_values=frozenset(v.lower() for v in entry.get("false", DEFAULT_FALSE)),
            null_values=frozenset(null_values),
            decimal_comma=decimal_comma,
            start=int(entry.get("start", 1)) - 1,
            length=int(entry.get("length", 0)),
        ))
    return tuple(found)
