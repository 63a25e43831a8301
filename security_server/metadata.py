"""Metadata services answered by this security server itself (PR-MREST; over SOAP, PR-META).

* ``listMethods`` and ``allowedMethods`` (``GET /r1/{provider}/listMethods``...) and
  ``getOpenAPI?serviceCode=`` reach the *provider's* security server through the federation
  like any request -- signed, logged, verified -- and are answered here from the
  configuration store instead of by a provider system: :func:`metadata_service` gives the
  server proxy a :class:`~security_server.directory.LocalService` whose handler builds the
  answer.  Every client may call them (X-Road does not restrict metadata services);
  ``allowedMethods`` lists only what the calling client may call.
* ``GET /listClients`` is answered by the *consumer's* client proxy from global
  configuration (:func:`list_clients`); it needs no provider.

Disabled services are listed by neither; metadata services never list themselves.

Over SOAP they are answered from the request's SOAP part, read whole (its Header is copied
into the answer, as X-Road does).  A message in memory has it already; of a spooled one
(over :data:`~security_server.body.MEMORY_THRESHOLD`), only the SOAP part is read back from
the spool -- a multipart request's attachments are not -- and a SOAP part over that size is
refused with ``client.payload_too_large`` (no metadata request needs one).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from security_server.body import MEMORY_THRESHOLD, Body, SoapMessage
from security_server.directory import LocalService, ProviderAnswer, Snapshot
from security_server.httpserver import ServerRequest, ServerResponse
from xchange.access import EndpointPattern
from xchange.errors import (
    BadRequestError,
    ServerProxyError,
    UnknownServiceError,
    XRoadError,
)
from xchange.globalconf import GlobalConf
from xchange.identifiers import ServiceId
from xchange.messages import Request
from xchange.metadata import (
    ServiceEntry,
    client_entries,
    client_list_json,
    client_list_xml,
    service_list_json,
)
from xchange.rest import RestRequest
from xchange.soap.envelope import SoapRequest
from xchange.soap.metadata import get_wsdl_request, method_list_response, wsdl_response
from xchange.soap.mime import soap_part, soap_part_pieces

__all__ = ["list_clients", "metadata_service"]

_JSON = (("content-type", "application/json"),)
SoapHandler = Callable[[SoapRequest, bytes, GlobalConf], Awaitable[ProviderAnswer]]
"""A SOAP metadata service: given the request and its SOAP part."""


def _entries(snapshot: Snapshot, req: Request, conf: GlobalConf,
             *, allowed_only: bool) -> list[ServiceEntry]:
    out = []
    for svc in snapshot.services_of(req.service.provider):
        if not svc.enabled or (isinstance(req, SoapRequest) and svc.kind != "WSDL"):
            continue
        endpoints: tuple[EndpointPattern, ...] = svc.endpoints
        if allowed_only:
            granted = snapshot.rules.allowed_endpoints(req.client, svc.id,
                                                       conf.members_of_group,
                                                       snapshot.local_members)
            if not granted:
                continue
            whole = any(e.is_whole_service for e in granted)
            endpoints = svc.endpoints if whole else tuple(
                e for e in svc.endpoints if e in granted)
        out.append(ServiceEntry(svc.id, svc.kind, endpoints))
    return out


def metadata_service(snapshot: Snapshot, service: ServiceId) -> LocalService | None:
    """The local handler for a metadata service code, bound to ``snapshot``."""

    async def list_methods(req: RestRequest, conf: GlobalConf) -> ProviderAnswer:
        body = service_list_json(_entries(snapshot, req, conf, allowed_only=False))
        return 200, _JSON, json.dumps(body).encode("utf-8")

    async def allowed_methods(req: RestRequest, conf: GlobalConf) -> ProviderAnswer:
        body = service_list_json(_entries(snapshot, req, conf, allowed_only=True))
        return 200, _JSON, json.dumps(body).encode("utf-8")

    async def get_openapi(req: RestRequest, conf: GlobalConf) -> ProviderAnswer:
        codes = parse_qs(req.query).get("serviceCode", [])
        if len(codes) != 1:
            raise BadRequestError("getOpenAPI needs exactly one serviceCode parameter",
                                  code="server.serverproxy.bad_request")
        svc = snapshot.services.get(ServiceId(req.service.provider, codes[0]))
        if svc is None or not svc.enabled:
            raise UnknownServiceError(f"no service {codes[0]!r} of {req.service.provider}")
        if svc.kind != "OPENAPI3" or svc.description is None:
            raise ServerProxyError(f"service {svc.id} has no OpenAPI description",
                                   code="server.serverproxy.unknown_service")
        text = svc.description
        ctype = "application/json" if text.lstrip().startswith("{") else "text/yaml"
        return 200, (("content-type", ctype),), text.encode("utf-8")

    rest = {"listMethods": list_methods, "allowedMethods": allowed_methods,
            "getOpenAPI": get_openapi}
    soap = {"listMethods": _soap_method_list(snapshot, allowed_only=False),
            "allowedMethods": _soap_method_list(snapshot, allowed_only=True),
            "getWsdl": _soap_get_wsdl(snapshot)}
    if service.code not in rest and service.code not in soap:
        return None

    async def handler(req: Request, message: SoapMessage | None,
                      conf: GlobalConf) -> ProviderAnswer:
        if isinstance(req, SoapRequest):
            soap_handler = soap.get(service.code)
            if soap_handler is None:
                raise UnknownServiceError(f"{service.code} is a REST metadata service")
            assert message is not None  # the server proxy reads every SOAP request's
            return await soap_handler(req, await _envelope(req, message), conf)
        rest_handler = rest.get(service.code)
        if rest_handler is None:
            raise UnknownServiceError(f"{service.code} is a SOAP metadata service")
        return await rest_handler(req, conf)

    return LocalService(service, url="", kind="METADATA", local_handler=handler)


_XML = "text/xml; charset=UTF-8"


async def _envelope(req: SoapRequest, message: SoapMessage) -> bytes:
    """The request's SOAP part (module docstring)."""
    if message.data is not None:
        return soap_part(message.data, req.content_type).envelope
    return await asyncio.to_thread(_spooled_envelope, message.body, req.content_type)


def _spooled_envelope(body: Body, content_type: str | None) -> bytes:
    out = bytearray()
    for piece in soap_part_pieces(body.chunks(), content_type):
        out += piece
        if len(out) > MEMORY_THRESHOLD:
            raise XRoadError(f"the SOAP part of a metadata request exceeds "
                             f"{MEMORY_THRESHOLD} bytes", code="client.payload_too_large")
    return bytes(out)


def _soap_method_list(snapshot: Snapshot, *, allowed_only: bool) -> SoapHandler:
    """``listMethods`` / ``allowedMethods`` over SOAP: the provider's WSDL services."""

    async def answer(req: SoapRequest, envelope: bytes, conf: GlobalConf) -> ProviderAnswer:
        entries = _entries(snapshot, req, conf, allowed_only=allowed_only)
        wrapper = f"{req.service.code}Response"
        out = method_list_response(envelope, wrapper, (e.id for e in entries),
                                   max_bytes=len(envelope))
        return 200, (("content-type", _XML),), out

    return answer


def _soap_get_wsdl(snapshot: Snapshot) -> SoapHandler:
    """``getWsdl`` over SOAP: the WSDL a service was registered from, as an attachment."""

    async def answer(req: SoapRequest, envelope: bytes, conf: GlobalConf) -> ProviderAnswer:
        code, version = get_wsdl_request(envelope, max_bytes=len(envelope))
        svc = snapshot.services.get(ServiceId(req.service.provider, code))
        if svc is None or not svc.enabled or svc.kind != "WSDL":
            raise UnknownServiceError(f"no SOAP service {code!r} of {req.service.provider}")
        if svc.description is None:
            raise ServerProxyError(f"service {svc.id} has no WSDL",
                                   code="server.serverproxy.unknown_service")
        ctype, out = wsdl_response(envelope, code, version, svc.description.encode("utf-8"),
                                   boundary=f"xchange-{uuid.uuid4().hex}",
                                   max_bytes=len(envelope))
        return 200, (("content-type", ctype),), out

    return answer


def list_clients(conf: GlobalConf, request: ServerRequest) -> ServerResponse:
    """``GET /listClients[?xRoadInstance=]``: XML ``clientList``, or JSON on request."""
    instances = parse_qs(request.query, keep_blank_values=True).get("xRoadInstance")
    entries = client_entries(conf, instances[0] if instances else None)
    if "application/json" in (request.header("Accept") or ""):
        return ServerResponse(200, [("Content-Type", "application/json; charset=utf-8")],
                              json.dumps(client_list_json(entries)).encode())
    return ServerResponse(200, [("Content-Type", "text/xml; charset=utf-8")],
                          client_list_xml(entries))
