"""Service-catalogue entries: what a provider's security server tells the registry it offers.

An entry is one service of a provider subsystem as consumers should find it: the service
code, the X-Road service version if there is one, its type (``REST``, ``OPENAPI`` or
``WSDL``, as in PR-MREST's ``service_type``), a title and a description, and for REST
services the endpoints (HTTP method and path glob, as :class:`~xchange.access.EndpointPattern`
writes them).  Its JSON form is what a ``service_catalogue_update`` management request
carries (``schemas/management-request.schema.json``, :mod:`xchange.management`) and what the
registry keeps::

    {"code": "register-api", "type": "OPENAPI", "title": "Population register",
     "description": "", "endpoints": [{"method": "GET", "path": "/persons/*"}]}

``version`` appears only when there is one.  :func:`parse_catalogue` takes that JSON (already
shape-checked by the schema) and checks what a schema cannot: identifier characters,
endpoint globs in their normal written form, no WSDL service with endpoints, each code once.

Pure: no I/O.  Building the list from a security server's configuration is
:mod:`security_server.catalogue`'s; applying it is :mod:`registry.management`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from xchange.access import EndpointPattern
from xchange.canonical import canonical_json
from xchange.errors import BadRequestError
from xchange.identifiers import check_part

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_ENTRIES",
    "MAX_TITLE",
    "SERVICE_TYPES",
    "CatalogueEntry",
    "catalogue_digest",
    "catalogue_json",
    "parse_catalogue",
]

SERVICE_TYPES: Final = ("REST", "OPENAPI", "WSDL")
MAX_ENTRIES: Final = 1000
MAX_TITLE: Final = 1000
MAX_DESCRIPTION: Final = 4000
_CODE = "registry.management.bad_request"


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    code: str
    type: str
    """``REST``, ``OPENAPI`` or ``WSDL``."""
    title: str = ""
    description: str = ""
    endpoints: tuple[EndpointPattern, ...] = ()
    version: str | None = None

    def __post_init__(self) -> None:
        check_part(self.code, "service code", code=_CODE)
        if self.version is not None:
            check_part(self.version, "service version", code=_CODE)
        if self.type not in SERVICE_TYPES:
            raise BadRequestError(f"service type must be one of {', '.join(SERVICE_TYPES)}",
                                  code=_CODE)
        if self.type == "WSDL" and self.endpoints:
            raise BadRequestError(f"WSDL service {self.code!r} cannot have REST endpoints",
                                  code=_CODE)
        if len(self.title) > MAX_TITLE or len(self.description) > MAX_DESCRIPTION:
            raise BadRequestError(f"title or description of {self.code!r} is too long",
                                  code=_CODE)

    @property
    def kind(self) -> str:
        """The registry's coarser kind: ``SOAP`` for WSDL services, else ``REST``."""
        return "SOAP" if self.type == "WSDL" else "REST"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code, "type": self.type, "title": self.title,
            "description": self.description,
            "endpoints": [{"method": e.method, "path": e.path} for e in self.endpoints]}
        if self.version is not None:
            out["version"] = self.version
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CatalogueEntry:
        """One entry; raises :class:`BadRequestError` (``registry.management.bad_request``)."""
        try:
            endpoints = tuple(EndpointPattern(e["method"], e["path"]) for e in doc["endpoints"])
        except BadRequestError as exc:
            raise BadRequestError(f"service {doc.get('code')!r}: {exc.message}",
                                  code=_CODE) from exc
        for given, parsed in zip(doc["endpoints"], endpoints, strict=True):
            if given["path"] != parsed.path:
                raise BadRequestError(f"endpoint path {given['path']!r} is not in its normal "
                                      f"form {parsed.path!r}", code=_CODE)
        if len(set(endpoints)) != len(endpoints):
            raise BadRequestError(f"service {doc.get('code')!r} lists an endpoint twice",
                                  code=_CODE)
        return cls(doc["code"], doc["type"], doc["title"], doc["description"], endpoints,
                   doc.get("version"))


def parse_catalogue(docs: Sequence[dict[str, Any]]) -> tuple[CatalogueEntry, ...]:
    """The entries of a request's ``services`` list, each code once."""
    if len(docs) > MAX_ENTRIES:
        raise BadRequestError(f"more than {MAX_ENTRIES} services", code=_CODE)
    entries = tuple(CatalogueEntry.from_json(d) for d in docs)
    codes = [e.code for e in entries]
    if len(set(codes)) != len(codes):
        raise BadRequestError("a service code is listed twice", code=_CODE)
    return entries


def catalogue_json(entries: Iterable[CatalogueEntry]) -> list[dict[str, Any]]:
    """The JSON list of ``entries``, ordered by service code (one canonical order)."""
    return [e.to_json() for e in sorted(entries, key=lambda e: e.code)]


def catalogue_digest(entries: Iterable[CatalogueEntry]) -> str:
    """SHA-256 (hex) of the canonical list: equal digests, equal catalogues."""
    return hashlib.sha256(canonical_json(catalogue_json(entries))).hexdigest()
