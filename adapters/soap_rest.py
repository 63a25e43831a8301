"""The ``soap`` backend: one operation of a legacy SOAP service as a REST/JSON endpoint.

The operation is read from the service's WSDL (a local file: nothing is fetched) by
:func:`xchange.soap.docliteral.read_operation`.  A query's typed parameters become the child
elements of the document/literal request element, in the order the WSDL's schema declares
them; the answer's record elements (at a configured path below the response element) become
records whose declared fields are read from child elements and typed as declared.

* a SOAP fault: :class:`~xchange.errors.SoapFaultError` (``adapter.soap_fault``, 502) with
  the fault's code and string;
* no answer within the query's timeout: :class:`TimeoutError` (the layer above answers 504);
* a service that cannot be reached, answers an HTTP error without a fault, or answers what
  is not the operation's response: :class:`~xchange.errors.AdapterError` (502).

What it does not do: WS-Security, attachments, RPC/encoded services, or more than one
operation per service (declare one service per operation).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

import aiohttp

from adapters.base import ConfigValueError, FieldType, Operation, Parameter, Query, Result
from adapters.typed import TypedField, fields_from_config, from_text, to_text
from xchange.errors import AdapterError
from xchange.soap.docliteral import (
    MAX_RESPONSE_BYTES,
    DocLiteralOperation,
    WsdlError,
    read_operation,
    read_response,
    request_envelope,
)

__all__ = ["SoapBackend", "from_config"]

_XSD_TYPES: Final[Mapping[str, FieldType]] = {
    **dict.fromkeys(("string", "normalizedString", "token", "anyURI", "NMTOKEN", "Name",
                     "language", "ID"), "string"),
    **dict.fromkeys(("int", "integer", "long", "short", "byte", "nonNegativeInteger",
                     "positiveInteger", "unsignedInt", "unsignedLong", "unsignedShort"),
                    "integer"),
    **dict.fromkeys(("decimal", "double", "float"), "number"),
    "boolean": "boolean",
    "date": "date",
    "dateTime": "datetime",
}
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True, slots=True)
class SoapParameter:
    parameter: Parameter
    element: str
    """The request element's child that carries it."""


class SoapBackend:
    """See the module's docstring."""

    def __init__(self, code: str, soap: DocLiteralOperation, *, endpoint: str,
                 operation: Operation, parameters: Sequence[SoapParameter],
                 fields: Sequence[TypedField], record: Sequence[str],
                 ca_file: Path | None = None) -> None:
        self.code = code
        self.soap = soap
        self.endpoint = endpoint
        self.operation = operation
        self.parameters = tuple(parameters)
        self.fields = tuple(fields)
        self.record = tuple(record)
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def operations(self) -> Sequence[Operation]:
        return (self.operation,)

    async def start(self) -> None:
        tls: ssl.SSLContext | bool = True
        if self._ca_file is not None:
            tls = ssl.create_default_context(cafile=str(self._ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls), cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self) -> None:
        """The service answers HTTP at its address (any status: it is there)."""
        session = self._started()
        try:
            async with session.get(self.endpoint, timeout=aiohttp.ClientTimeout(total=5),
                                   allow_redirects=False) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    async def run(self, query: Query) -> Result:
        if query.operation.name != self.operation.name:
            raise ValueError(f"operation {query.operation.name!r} is not one of service "
                             f"{self.code!r}")
        values = []
        for p in self.parameters:
            value = query.params.get(p.parameter.name)
            values.append((p.element, None if value is None else
                           to_text(value, p.parameter.type)))
        status, body = await self._call(request_envelope(self.soap, values), query.timeout)
        fields = {f.name: f.source for f in self.fields}
        try:
            texts = read_response(self.soap, body, self.record, fields)
        except AdapterError as exc:
            if status != 200 and exc.code == "adapter.backend_failed":
                raise AdapterError(f"the SOAP service answered HTTP {status}: {exc.message}"
                                   ) from exc
            raise
        if not self.operation.many and len(texts) > 1:
            raise AdapterError(f"the SOAP service answered {len(texts)} records where one "
                               "was expected")
        records = [self._typed(t) for t in texts]
        if not self.operation.many:
            return Result(records)
        end = query.offset + query.limit
        return Result(records[query.offset:end], has_more=len(records) > end)

    def _typed(self, texts: Mapping[str, str | None]) -> dict[str, Any]:
        try:
            return {f.name: from_text(texts[f.name], f) for f in self.fields}
        except ValueError as exc:
            raise AdapterError(f"the SOAP service's response: {exc}") from exc

    async def _call(self, envelope: bytes, timeout: float) -> tuple[int, bytes]:
        session = self._started()
        headers = {"Content-Type": self.soap.content_type, "Accept": "text/xml, "
                   "application/soap+xml"}
        if self.soap.soap_version == "1.1":
            headers["SOAPAction"] = f'"{self.soap.soap_action}"'
        try:
            async with asyncio.timeout(timeout):
                async with session.post(self.endpoint, data=envelope, headers=headers,
                                        allow_redirects=False) as resp:
                    return resp.status, await _body(resp)
        except TimeoutError:
            raise
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc

    def _started(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise AdapterError(f"service {self.code!r}: the SOAP backend is not started")
        return self._session

    def _unreachable(self, exc: BaseException) -> AdapterError:
        return AdapterError(f"the SOAP service at {self.endpoint} cannot be reached: "
                            f"{type(exc).__name__}: {exc}")


async def _body(resp: aiohttp.ClientResponse) -> bytes:
    """The whole answer, refused past :data:`MAX_RESPONSE_BYTES`."""
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise AdapterError(f"the SOAP service's response is larger than "
                               f"{MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# -- configuration ---------------------------------------------------------------------------


def from_config(code: str, section: Mapping[str, Any], base_dir: Path) -> SoapBackend:
    """Build the backend of service ``code`` from its ``[services.soap]`` section
    (``schemas/adapter-soap.schema.json``); the WSDL path is relative to ``base_dir``."""
    wsdl_path = _path(section["wsdl"], base_dir)
    try:
        wsdl = wsdl_path.read_bytes()
    except OSError as exc:
        raise ConfigValueError(f"{wsdl_path} cannot be read: {exc.strerror}", ("wsdl",)
                               ) from exc
    name = str(section["operation"])
    try:
        soap = read_operation(wsdl, name)
    except WsdlError as exc:
        raise ConfigValueError(f"{wsdl_path.name}: {exc}", ("operation",)) from exc
    endpoint = section.get("endpoint") or soap.address
    if not endpoint:
        raise ConfigValueError("the WSDL names no address for the operation's port: give "
                               "endpoint", ("endpoint",))
    path = str(section.get("path", "/"))
    parameters = _parameters(section.get("parameters"), soap, path)
    fields = fields_from_config(section["fields"], source_key="element",
                                null_values=section.get("null_values", [""]))
    many = bool(section.get("many", False))
    operation = Operation(
        service=code, name=name, method="GET", path=path,
        parameters=tuple(p.parameter for p in parameters),
        fields=tuple(f.field for f in fields), many=many,
        summary=str(section.get("summary", f"The SOAP operation {name} of {wsdl_path.name}")))
    ca_file = section.get("ca_file")
    return SoapBackend(code, soap, endpoint=str(endpoint), operation=operation,
                       parameters=parameters, fields=fields,
                       record=tuple(str(s) for s in section.get("record", ())),
                       ca_file=_path(ca_file, base_dir) if ca_file else None)


def _path(value: Any, base_dir: Path) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else base_dir / path


def _parameters(entries: Sequence[Mapping[str, Any]] | None, soap: DocLiteralOperation,
                path: str) -> tuple[SoapParameter, ...]:
    """Declared parameters, or else one query parameter per child the WSDL declares."""
    in_path = _PLACEHOLDER.findall(path)
    declared = {c.name: c for c in soap.children}
    found: list[SoapParameter] = []
    if entries is None:
        for child in soap.children:
            kind = _XSD_TYPES.get(child.xsd_type or "string", "string")
            location: Literal["path", "query"] = "path" if child.name in in_path else "query"
            found.append(SoapParameter(Parameter(
                child.name, location, kind, required=child.required or location == "path"),
                child.name))
    else:
        for i, entry in enumerate(entries):
            name = str(entry["name"])
            element = str(entry.get("element", name))
            if declared and element not in declared:
                raise ConfigValueError(
                    f"{soap.request.localname} has no child element {element!r} (it has "
                    f"{', '.join(declared)})", ("parameters", i, "element"))
            location = cast(Literal["path", "query"],
                            entry.get("in", "path" if name in in_path else "query"))
            if (location == "path") != (name in in_path):
                raise ConfigValueError(
                    f"parameter {name!r} is declared in {location}, but the path {path!r} "
                    f"{'does not name' if location == 'path' else 'names'} it",
                    ("parameters", i, "in"))
            found.append(SoapParameter(Parameter(
                name, location, cast(FieldType, entry.get("type", "string")),
                required=bool(entry.get("required", True)) or location == "path",
                description=str(entry.get("description", ""))), element))
    names = {p.parameter.name for p in found}
    missing = [n for n in in_path if n not in names]
    if missing:
        raise ConfigValueError(f"the path {path!r} names {', '.join(missing)}, which no "
                               "parameter declares", ("path",))
    return tuple(found)
