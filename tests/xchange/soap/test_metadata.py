"""listMethods, allowedMethods and getWsdl answers over SOAP (PR-META 3 and 4)."""

from __future__ import annotations

import pytest
from lxml import etree

from tests.xchange.soap.test_envelope import CTYPE, MAX, REQUEST, envelope
from xchange.errors import BadRequestError
from xchange.identifiers import NS_ID, NS_XROAD, ClientId, ServiceId
from xchange.soap.envelope import NS_SOAP_ENV, finish_response
from xchange.soap.metadata import (
    HIDDEN_ENDPOINT,
    get_wsdl_request,
    hide_endpoints,
    method_list_response,
    wsdl_response,
)
from xchange.soap.mime import soap_part

PROVIDER = ClientId("EE", "GOV", "MEMBER2", "SUBSYSTEM2")
WSDL = b"""<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" name="t" targetNamespace="urn:t">
  <wsdl:service name="s"><wsdl:port name="p" binding="b">
    <soap:address location="http://10.0.0.7:8080/secret/endpoint"/>
  </wsdl:port></wsdl:service>
</wsdl:definitions>"""


def test_method_list_copies_the_header_and_lists_services() -> None:
    services = [ServiceId(PROVIDER, "a"), ServiceId(PROVIDER, "b")]
    out = method_list_response(REQUEST, "listMethodsResponse", services, max_bytes=MAX)
    tree = etree.fromstring(out)
    listed = tree.find(f"{{{NS_SOAP_ENV}}}Body/{{{NS_XROAD}}}listMethodsResponse")
    assert listed is not None
    assert [s.findtext(f"{{{NS_ID}}}serviceCode") for s in listed] == ["a", "b"]
    assert all(s.get(f"{{{NS_ID}}}objectType") == "SERVICE" for s in listed)
    # the answer passes the provider's own echo check and gets its requestHash
    finish_response(REQUEST, CTYPE, out, "text/xml", max_bytes=MAX)


def test_get_wsdl_request_and_response() -> None:
    asked = envelope(body="<xrd:getWsdl><xrd:serviceCode>getRandom</xrd:serviceCode>"
                          "<xrd:serviceVersion>v1</xrd:serviceVersion></xrd:getWsdl>")
    assert get_wsdl_request(asked, max_bytes=MAX) == ("getRandom", "v1")
    ctype, body = wsdl_response(asked, "getRandom", "v1", WSDL, boundary="B", max_bytes=MAX)
    part = soap_part(body, ctype)
    [attachment] = part.attachments
    assert attachment.header("Content-ID") == "<wsdl>"
    assert b"10.0.0.7" not in attachment.body and HIDDEN_ENDPOINT.encode() in attachment.body
    answer = etree.fromstring(part.envelope)
    assert answer.findtext(f".//{{{NS_XROAD}}}getWsdlResponse/{{{NS_XROAD}}}serviceCode") == \
        "getRandom"
    # with the requestHash inserted, the package keeps its attachment
    final = finish_response(asked, CTYPE, body, ctype, max_bytes=MAX)
    assert soap_part(final, ctype).attachments[0].body == attachment.body


def test_get_wsdl_needs_a_service_code() -> None:
    with pytest.raises(BadRequestError) as info:
        get_wsdl_request(envelope(body="<xrd:getWsdl/>"), max_bytes=MAX)
    assert info.value.code == "server.serverproxy.bad_request"


def test_hide_endpoints_refuses_a_doctype() -> None:
    with pytest.raises(BadRequestError):
        hide_endpoints(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>')
