"""Canonical JSON: the one byte form of a JSON value that xchange signs.

Signed documents (the global configuration envelope, style.md point 3) are signed over
:func:`canonical_json` of their payload, never over the bytes that travelled, so that a
re-serialisation on the way cannot break a signature and two parties always agree on what
was signed.  The form is: UTF-8, object keys sorted by code point, no insignificant
whitespace (separators ``","`` and ``":"``), non-ASCII characters written as themselves, and
only the JSON types that have a single textual form: objects with string keys, arrays,
strings, integers, ``true``, ``false`` and ``null``.  Floats are refused outright, because
``1.0``/``1``/``1e0`` and NaN would make the bytes ambiguous.

:func:`parse_json` is the matching strict reader for untrusted bytes: it refuses invalid
UTF-8, duplicate object keys and the non-standard ``NaN``/``Infinity`` literals.

This is not RFC 8785 (JCS): JCS sorts keys by UTF-16 code units and allows floats; xchange
needs neither.  Errors are :class:`~xchange.errors.BadRequestError`; callers that know the
context re-raise them under their own code.
"""

from __future__ import annotations

import json
from typing import Any, Final

from xchange.errors import BadRequestError

__all__ = ["canonical_json", "parse_json"]


def _check(value: object, path: str) -> None:
    # bool is a subclass of int, so it passes the int test; both have one form.
    if value is None or isinstance(value, str | int):
        return
    if isinstance(value, float):
        raise BadRequestError(f"{path}: floats have no canonical form ({value!r})")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadRequestError(f"{path}: object key {key!r} is not a string")
            _check(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    raise BadRequestError(f"{path}: {type(value).__name__} is not a JSON type")


_SCALARS: Final = frozenset({str, int, bool, type(None)})
"""The exact types whose values have one form (subclasses take the slow path)."""


def _valid(value: object) -> bool:
    """:func:`_check` without building the path of every value: a check that passes (the
    usual case) costs no string formatting; a failing one is redone by ``_check`` to name
    the place.  Exact types only, tested inline: anything else (a subclass, say) answers
    False and is left to ``_check``, the authority, so this is never more permissive."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or (type(item) not in _SCALARS and not _valid(item)):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # type: ignore[attr-defined]  # noqa: SIM110 (no generator per list)
            if type(item) not in _SCALARS and not _valid(item):
                return False
        return True
    return False


def canonical_json(value: object) -> bytes:
    """Serialise ``value`` to canonical JSON bytes (see the module docstring)."""
    try:
        if not _valid(value):
            _check(value, "$")
        text = _ENCODER.encode(value)
        # A lone surrogate in a str is valid Python but not encodable UTF-8.
        return text.encode("utf-8")
    except RecursionError as exc:
        raise BadRequestError("JSON value is nested too deeply") from exc
    except (UnicodeEncodeError, ValueError) as exc:
        raise BadRequestError(f"value cannot be written as canonical JSON: {exc}") from exc


_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                   allow_nan=False)
"""What ``json.dumps`` with these options builds on every call; it keeps no state between
calls, so one serves every thread."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise BadRequestError(f"duplicate object key {key!r}")
        result[key] = item
    return result


def _no_constant(name: str) -> Any:
    raise BadRequestError(f"non-standard JSON literal {name}")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
"""Made once and shared, as ``json.loads`` shares its default decoder: ``json.loads`` with
options builds a decoder per call, a good share of the cost of parsing the small documents
read for every message."""


def parse_json(data: bytes) -> Any:
    """Parse untrusted JSON bytes strictly (UTF-8, no duplicate keys, no NaN/Infinity)."""
    try:
        text = data.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads: a BOM is not JSON
            raise ValueError("unexpected UTF-8 BOM")
        return _DECODER.decode(text)
    except BadRequestError:
        raise
    except UnicodeDecodeError as exc:
        raise BadRequestError("JSON is not valid UTF-8") from exc
    except RecursionError as exc:
        raise BadRequestError("JSON is nested too deeply") from exc
    except ValueError as exc:  # json.JSONDecodeError, and over-long integer literals
        raise BadRequestError(f"malformed JSON: {exc}") from exc
