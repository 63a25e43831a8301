"""Metadata services over SOAP (PR-META sections 3 and 4): ``listMethods``,
``allowedMethods`` and ``getWsdl`` answered by the provider's security server.

Each answer copies the request's SOAP header (the X-Road fields, in order, as a service
must: PR-MESS 2.2), so that the provider side treats it like any provider system's answer
and adds ``requestHash``.  ``getWsdl`` answers with the WSDL as an attachment, every
``soap:address/@location`` replaced by ``http://example.org/xroad-endpoint`` (PR-META 4:
the provider system's address stays hidden).

Pure: the caller says which services to list and which WSDL to send.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Final

from lxml import etree

from xchange.errors import BadRequestError
from xchange.identifiers import NS_ID, NS_XROAD, ServiceId
from xchange.soap.envelope import NS_SOAP_ENV, parse_envelope
from xchange.soap.mime import MimePart, join_multipart
from xchange.soap.xml import parse_xml

__all__ = [
    "HIDDEN_ENDPOINT",
    "get_wsdl_request",
    "hide_endpoints",
    "method_list_response",
    "wsdl_response",
]

HIDDEN_ENDPOINT: Final = "http://example.org/xroad-endpoint"
_NS_WSDL_SOAP: Final = ("http://schemas.xmlsoap.org/wsdl/soap/",
                        "http://schemas.xmlsoap.org/wsdl/soap12/")
_MAX_WSDL: Final = 4 * 1024 * 1024


def _answer(request_envelope: bytes, wrapper: str, *, max_bytes: int
            ) -> tuple[etree._Element, etree._Element]:
    """A response envelope with the request's header copied and an empty ``xrd:wrapper``."""
    asked = parse_envelope(request_envelope, max_bytes=max_bytes)
    env = etree.Element(f"{{{NS_SOAP_ENV}}}Envelope",
                        nsmap={"SOAP-ENV": NS_SOAP_ENV, "xrd": NS_XROAD, "id": NS_ID})
    if asked.header is not None:
        env.append(copy.deepcopy(asked.header))
    body = etree.SubElement(env, f"{{{NS_SOAP_ENV}}}Body")
    return env, etree.SubElement(body, f"{{{NS_XROAD}}}{wrapper}")


def method_list_response(request_envelope: bytes, wrapper: str,
                         services: Iterable[ServiceId], *, max_bytes: int) -> bytes:
    """``listMethodsResponse`` or ``allowedMethodsResponse`` listing ``services``."""
    env, content = _answer(request_envelope, wrapper, max_bytes=max_bytes)
    for service in services:
        content.append(service.to_xml(f"{{{NS_XROAD}}}service"))
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


def get_wsdl_request(request_envelope: bytes, *, max_bytes: int) -> tuple[str, str | None]:
    """The ``serviceCode`` (and ``serviceVersion``, if any) a ``getWsdl`` request asks for."""
    env = parse_envelope(request_envelope, max_bytes=max_bytes)
    values: dict[str, str] = {}
    for child in env.content:
        if isinstance(child.tag, str):
            values[etree.QName(child).localname] = (child.text or "").strip()
    code = values.get("serviceCode")
    if not code:
        raise BadRequestError("getWsdl needs a serviceCode element",
                              code="server.serverproxy.bad_request")
    return code, values.get("serviceVersion") or None


def hide_endpoints(wsdl: bytes) -> bytes:
    """The WSDL with every SOAP address location replaced by :data:`HIDDEN_ENDPOINT`."""
    root = parse_xml(wsdl, max_bytes=_MAX_WSDL, code="server.serverproxy.internal_error",
                     what="WSDL")
    for ns in _NS_WSDL_SOAP:
        for address in root.iter(f"{{{ns}}}address"):
            address.set("location", HIDDEN_ENDPOINT)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def wsdl_response(request_envelope: bytes, code: str, version: str | None, wsdl: bytes, *,
                  boundary: str, max_bytes: int) -> tuple[str, bytes]:
    """``getWsdlResponse`` with the WSDL attached: (Content-Type, body)."""
    env, content = _answer(request_envelope, "getWsdlResponse", max_bytes=max_bytes)
    etree.SubElement(content, f"{{{NS_XROAD}}}serviceCode").text = code
    if version is not None:
        etree.SubElement(content, f"{{{NS_XROAD}}}serviceVersion").text = version
    soap = bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))
    parts = (
        MimePart((("Content-Type", "text/xml; charset=UTF-8"),
                  ("Content-Transfer-Encoding", "8bit"), ("Content-ID", "<rootpart>")), soap),
        MimePart((("Content-Type", "text/xml; charset=UTF-8"),
                  ("Content-Transfer-Encoding", "8bit"), ("Content-ID", "<wsdl>")),
                 hide_endpoints(wsdl)),
    )
    ctype = (f'multipart/related; type="text/xml"; start="<rootpart>"; '
             f'boundary="{boundary}"')
    return ctype, join_multipart(parts, boundary)
