"""What every adapter service does the same way, whatever its silo: parse typed parameters,
page, minimise fields per consumer, name data subjects, describe itself in OpenAPI 3.

Pure: values in, values out, no I/O.  :mod:`adapters.app` is the aiohttp layer over it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

from adapters.base import Field, FieldType, Operation, Parameter, Result, Value
from adapters.config import ALL_FIELDS, ServiceConfig
from xchange.errors import AdapterError
from xchange.rest import DATA_SUBJECTS_HEADER

__all__ = [
    "DATA_SUBJECTS_HEADER",
    "MAX_SUBJECTS_HEADER",
    "data_subjects",
    "minimise",
    "openapi_document",
    "page_of",
    "parse_params",
    "response_body",
]

MAX_SUBJECTS_HEADER: Final = 6000
"""Longest data-subject header (bytes).  HTTP clients refuse headers near 8 KiB (aiohttp:
8190), and an answer whose subjects cannot all be named is refused, not truncated."""
MAX_STRING: Final = 1000
"""Longest string parameter (characters)."""

_INTEGER: Final = re.compile(r"-?[0-9]{1,18}")
_NUMBER: Final = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,18})?([eE][-+]?[0-9]{1,3})?")
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}"
                              r"(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?")
_PAGING: Final = ("offset", "limit")


def _bad(message: str) -> AdapterError:
    return AdapterError(message, code="adapter.bad_request")


def convert(name: str, kind: FieldType, text: str) -> Value:
    """``text`` as a value of ``kind``; :class:`AdapterError` (400) naming ``name`` if not."""
    expected = {"integer": "an integer", "number": "a number", "boolean": "true or false",
                "date": "a date (YYYY-MM-DD)", "datetime": "a date-time (ISO 8601)",
                "string": "a string"}[kind]
    wrong = _bad(f"parameter {name!r} must be {expected}")
    match kind:
        case "string":
            if len(text) > MAX_STRING or "\x00" in text:
                raise _bad(f"parameter {name!r} must be a string of at most {MAX_STRING} "
                           "characters without NUL")
            return text
        case "integer":
            if not _INTEGER.fullmatch(text):
                raise wrong
            return int(text)
        case "number":
            if not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
                raise wrong
            return float(text)
        case "boolean":
            if text not in ("true", "false"):
                raise wrong
            return text == "true"
        case "date":
            try:
                if not _DATE.fullmatch(text):
                    raise ValueError(text)
                return dt.date.fromisoformat(text).isoformat()
            except ValueError:
                raise wrong from None
        case "datetime":
            try:
                if not _DATETIME.fullmatch(text):
                    raise ValueError(text)
                return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
            except ValueError:
                raise wrong from None
    raise AssertionError(kind)  # pragma: no cover (FieldType is closed)


def parse_params(op: Operation, path: Mapping[str, str],
                 query: Iterable[tuple[str, str]]) -> dict[str, Value]:
    """The operation's parameters from the request's path and query, each of its type.

    Unknown, repeated or missing parameters are refused (400), as are values of the wrong
    type; ``offset`` and ``limit`` of a paged operation are left to :func:`page_of`."""
    declared = {p.name: p for p in op.parameters}
    seen: dict[str, str] = {}
    for name, value in query:
        if op.many and name in _PAGING:
            continue
        p = declared.get(name)
        if p is None or p.location != "query":
            raise _bad(f"unknown query parameter {name!r}; this operation takes "
                       f"{_names(op.parameters, 'query', op.many) or 'none'}")
        if name in seen:
            raise _bad(f"query parameter {name!r} given twice")
        seen[name] = value
    out: dict[str, Value] = {}
    for p in op.parameters:
        text = path.get(p.name) if p.location == "path" else seen.get(p.name)
        if text is None:
            if p.required:
                raise _bad(f"missing parameter {p.name!r}")
            out[p.name] = None
            continue
        out[p.name] = convert(p.name, p.type, text)
    return out


def _names(params: Sequence[Parameter], location: str, many: bool) -> str:
    names = [p.name for p in params if p.location == location]
    return ", ".join([*names, *(_PAGING if many else ())])


def page_of(query: Iterable[tuple[str, str]], service: ServiceConfig) -> tuple[int, int]:
    """``(offset, limit)`` of a paged request; ``limit`` is capped at the row limit."""
    values: dict[str, int] = {}
    for name, text in query:
        if name in _PAGING:
            if name in values:
                raise _bad(f"query parameter {name!r} given twice")
            if not _INTEGER.fullmatch(text) or int(text) < (0 if name == "offset" else 1):
                raise _bad(f"parameter {name!r} must be an integer of at least "
                           f"{0 if name == 'offset' else 1}")
            values[name] = int(text)
    limit = min(values.get("limit", service.default_limit), service.row_limit)
    return values.get("offset", 0), limit


def minimise(records: Sequence[Mapping[str, Value]], fields: Sequence[Field],
             granted: frozenset[str]) -> list[dict[str, Value]]:
    """Each record with only the granted fields (all with ``*``), in the operation's order."""
    names = [f.name for f in fields if ALL_FIELDS in granted or f.name in granted]
    return [{n: r.get(n) for n in names} for r in records]


def data_subjects(records: Sequence[Mapping[str, Value]], field: str) -> str | None:
    """The value of :data:`DATA_SUBJECTS_HEADER` for ``records``: the distinct values of
    ``field``, percent-encoded, comma-separated (``None``: no subjects)."""
    seen: dict[str, None] = {}
    for r in records:
        value = r.get(field)
        if value is not None and value != "":
            seen[quote(str(value), safe="")] = None
    if not seen:
        return None
    header = ",".join(seen)
    if len(header) > MAX_SUBJECTS_HEADER:
        raise AdapterError(f"the answer concerns too many data subjects to name them in "
                           f"{DATA_SUBJECTS_HEADER}; ask for a smaller page")
    return header


def response_body(op: Operation, result: Result, records: list[dict[str, Value]],
                  offset: int, limit: int) -> dict[str, Any] | None:
    """The JSON answer: a page for a list operation, the record for a one-record operation
    (``None`` when there is none: 404)."""
    if op.many:
        return {"items": records, "offset": offset, "limit": limit,
                "has_more": result.has_more}
    return records[0] if records else None


# -- OpenAPI 3 --------------------------------------------------------------------------------

_SCHEMA_OF: Final[Mapping[str, dict[str, str]]] = {
    "string": {"type": "string"}, "integer": {"type": "integer"},
    "number": {"type": "number"}, "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
}
_ERROR_SCHEMA: Final = {
    "type": "object", "required": ["type", "message"],
    "properties": {"type": {"type": "string", "description": "An adapter.* error code."},
                   "message": {"type": "string"},
                   "detail": {"type": "string", "nullable": True}},
}


def _record_schema(fields: Sequence[Field]) -> dict[str, Any]:
    props = {}
    for f in fields:
        schema: dict[str, Any] = dict(_SCHEMA_OF[f.type])
        if f.nullable:
            schema["nullable"] = True
        if f.description:
            schema["description"] = f.description
        props[f.name] = schema
    # No "required": fields a consumer is not granted are left out of its records.
    return {"type": "object", "properties": props, "additionalProperties": False}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(op: Operation, service: ServiceConfig) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": p.name, "in": p.location, "required": p.required,
         "schema": dict(_SCHEMA_OF[p.type]), **({"description": p.description}
                                                if p.description else {})}
        for p in op.parameters]
    record = _record_schema(op.fields)
    if op.many:
        params += [
            {"name": "offset", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0, "default": 0}},
            {"name": "limit", "in": "query", "required": False,
             "description": f"At most {service.row_limit} (larger values are capped).",
             "schema": {"type": "integer", "minimum": 1, "default": service.default_limit}},
        ]
        body: dict[str, Any] = {"type": "object", "required": ["items", "offset", "limit",
                                                                "has_more"],
                                "properties": {"items": {"type": "array", "items": record},
                                               "offset": {"type": "integer"},
                                               "limit": {"type": "integer"},
                                               "has_more": {"type": "boolean"}}}
    else:
        body = record
    ok: dict[str, Any] = {"description": "A page of records" if op.many else "The record",
                          "content": {"application/json": {"schema": body}}}
    if service.data_subject_field:
        ok["headers"] = {DATA_SUBJECTS_HEADER: {
            "description": f"The {service.data_subject_field} values of the records "
                           "returned (percent-encoded, comma-separated).",
            "schema": {"type": "string"}}}
    responses = {"200": ok, "400": _error("A parameter is missing, unknown or of the wrong "
                                          "type (adapter.bad_request)"),
                 "403": _error("The consumer is granted no fields (adapter.access_denied)"),
                 "504": _error("The data silo did not answer in time (adapter.timeout)")}
    if not op.many:
        responses["404"] = _error("No such record (adapter.not_found)")
    out: dict[str, Any] = {"operationId": op.name, "parameters": params,
                           "responses": responses}
    if op.summary:
        out["summary"] = op.summary
    return out


def openapi_document(service: ServiceConfig, operations: Sequence[Operation],
                     title: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of one service; paths are relative to the service's base URL
    (``/{code}`` on the adapter), which is what the security server registers."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, service)
    info: dict[str, Any] = {"title": service.title or f"{title}: {service.code}",
                            "version": "1"}
    if service.description:
        info["description"] = service.description
    # No "servers": consumers reach the service through their security server, at
    # /r1/{service id}{path}; the adapter's own address is the provider's business.
    return {"openapi": "3.0.3", "info": info, "paths": paths,
            "components": {"schemas": {"Error": _ERROR_SCHEMA}}}
