"""The seam between an adapter's HTTP layer and its backends (SQL, files, legacy SOAP).

A backend turns a silo into a fixed set of read-only :class:`Operation` s, each a typed
record shape and typed parameters, and runs a :class:`Query` for one of them.  Everything
that is the same for every kind of silo lives above the seam, in the adapter's HTTP layer:
routing and parameter parsing (a value of the wrong type never reaches a backend), paging
limits, field minimisation per consumer subsystem, the data-subject header, the OpenAPI
document, health and metrics.

What a backend does not do: read HTTP, know the consumer, or decide which fields leave the
adapter.  It returns whole records; the layer above removes what a consumer may not see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "Backend",
    "BackendFactory",
    "ConfigValueError",
    "Field",
    "FieldType",
    "Operation",
    "Parameter",
    "Query",
    "Result",
    "Value",
]

FieldType = Literal["string", "integer", "number", "boolean", "date", "datetime"]
"""Types of record fields and parameters; each maps to one JSON Schema type (and format)."""

Value = str | int | float | bool | None
"""A field or parameter value.  Dates and date-times travel as ISO 8601 strings."""


@dataclass(frozen=True, slots=True)
class Field:
    """One field of the records an operation returns."""

    name: str
    type: FieldType
    nullable: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class Parameter:
    """A typed path or query parameter of an operation."""

    name: str
    location: Literal["path", "query"]
    type: FieldType
    required: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    """One endpoint an adapter service exposes.

    ``path`` is an OpenAPI path template (``/persons/{code}``) relative to the service's base;
    every ``{name}`` in it is a ``path`` parameter.  ``many`` says whether the operation
    answers a paged list (``{"items": [...], ...}``) or one record (404 when there is none).
    """

    service: str
    """The service code (X-Road ``serviceCode``) this operation belongs to."""
    name: str
    """Unique within the service; the OpenAPI ``operationId``."""
    method: Literal["GET", "POST"]
    path: str
    parameters: tuple[Parameter, ...]
    fields: tuple[Field, ...]
    many: bool
    summary: str = ""


@dataclass(frozen=True, slots=True)
class Query:
    """A request for one operation, with every parameter already converted to its type."""

    operation: Operation
    params: Mapping[str, Value]
    offset: int = 0
    limit: int = 1
    """At most this many records (the layer above caps it by the operation's row limit)."""
    timeout: float = 10.0
    """Seconds the backend may spend; it raises :class:`TimeoutError` beyond that."""


@dataclass(frozen=True, slots=True)
class Result:
    records: Sequence[Mapping[str, Value]]
    has_more: bool = False
    """True when records beyond ``offset + limit`` exist (paging)."""


class Backend(Protocol):
    """A silo behind an adapter.  Backends are read-only by construction."""

    def operations(self) -> Sequence[Operation]:
        """The operations this backend serves; fixed once :meth:`start` returned."""
        ...

    async def start(self) -> None:
        """Open connections, build indexes; raise a domain error when the silo is unusable."""
        ...

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise when the silo cannot answer now (the adapter's health endpoint)."""
        ...

    async def run(self, query: Query) -> Result:
        """Run ``query``; raise :class:`TimeoutError` past ``query.timeout``."""
        ...


class ConfigValueError(ValueError):
    """A backend's ``from_config`` refuses its section: ``path`` is where, relative to the
    section (``("queries", 0, "sql")``), so that the loader can name the file's line."""

    def __init__(self, message: str, path: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.path = tuple(path)


BackendFactory = Callable[[str, Mapping[str, Any], Path], Backend]
"""A kind's ``from_config(code, section, base_dir)``: the service code, the kind's own table
of the service (already valid against ``schemas/adapter-<kind>.schema.json``) and the
configuration file's folder (relative paths in the section are relative to it).  It does no
I/O beyond reading small files the section names; :meth:`Backend.start` opens the silo.
It raises :class:`ConfigValueError` (or ``ValueError``) for a section it cannot use."""
