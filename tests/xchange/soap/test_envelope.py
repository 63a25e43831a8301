"""X-Road Message Protocol 4.0 envelopes: headers, body, requestHash and faults."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import uuid
from collections.abc import Iterator

import pytest
from lxml import etree

from xchange.errors import BadRequestError, InvalidSignatureError, ServerProxyError
from xchange.identifiers import ClientId, SecurityServerId, ServiceId
from xchange.soap.envelope import (
    NS_SOAP_ENV,
    SHA512,
    SoapRequest,
    check_request_body,
    check_response,
    check_soap_action,
    fault_envelope,
    finish_response,
    parse_hashed_request,
    parse_request,
    soap_request_hash,
)
from xchange.soap.mime import MimePart, join_multipart

MAX = 1024 * 1024
CTYPE = "text/xml; charset=UTF-8"
HEADER = """
<xrd:client id:objectType="SUBSYSTEM"><id:xRoadInstance>EE</id:xRoadInstance>
  <id:memberClass>GOV</id:memberClass><id:memberCode>MEMBER1</id:memberCode>
  <id:subsystemCode>SUBSYSTEM1</id:subsystemCode></xrd:client>
<xrd:service id:objectType="SERVICE"><id:xRoadInstance>EE</id:xRoadInstance>
  <id:memberClass>GOV</id:memberClass><id:memberCode>MEMBER2</id:memberCode>
  <id:subsystemCode>SUBSYSTEM2</id:subsystemCode><id:serviceCode>exampleService</id:serviceCode>
  <id:serviceVersion>v1</id:serviceVersion></xrd:service>
<xrd:id>4894e35d-bf0f-44a6-867a-8e51f1daa7e0</xrd:id>
<xrd:userId>EE12345678901</xrd:userId>
<xrd:issue>12345</xrd:issue>
<xrd:protocolVersion>4.0</xrd:protocolVersion>"""


def envelope(header: str = HEADER, body: str = "<ns1:exampleService><in>foo</in>"
             "</ns1:exampleService>", *, prefix: str = "SOAP-ENV") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<{prefix}:Envelope xmlns:{prefix}="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:ns1="http://producer.x-road.eu" xmlns:xrd="http://x-road.eu/xsd/xroad.xsd"
    xmlns:id="http://x-road.eu/xsd/identifiers"
    xmlns:repr="http://x-road.eu/xsd/representation.xsd">
<{prefix}:Header>{header}</{prefix}:Header>
<{prefix}:Body>{body}</{prefix}:Body></{prefix}:Envelope>""".encode()


REQUEST = envelope()


def response_to(request: bytes = REQUEST) -> bytes:
    """What a well-behaved service answers: the header copied, another prefix."""
    return request.replace(b"SOAP-ENV", b"s").replace(b"exampleService>",
                                                       b"exampleServiceResponse>")


def test_the_annex_e_request_parses() -> None:
    req = parse_request(REQUEST, CTYPE, '"exampleService"', max_bytes=MAX)
    assert req == SoapRequest(
        message_id="4894e35d-bf0f-44a6-867a-8e51f1daa7e0",
        client=ClientId("EE", "GOV", "MEMBER1", "SUBSYSTEM1"),
        service=ServiceId(ClientId("EE", "GOV", "MEMBER2", "SUBSYSTEM2"), "exampleService",
                          "v1"),
        content_type=CTYPE, soap_action='"exampleService"', user_id="EE12345678901",
        issue="12345")
    assert SoapRequest.from_header_part(req.header_part()) == req


def test_optional_headers_security_server_and_represented_party() -> None:
    extra = """<xrd:securityServer id:objectType="SERVER"><id:xRoadInstance>EE</id:xRoadInstance>
      <id:memberClass>GOV</id:memberClass><id:memberCode>MEMBER2</id:memberCode>
      <id:serverCode>ss1</id:serverCode></xrd:securityServer>
      <repr:representedParty><repr:partyClass>COM</repr:partyClass>
      <repr:partyCode>777</repr:partyCode></repr:representedParty>"""
    req = parse_request(envelope(HEADER + extra), CTYPE, None, max_bytes=MAX)
    assert req.security_server == SecurityServerId(ClientId("EE", "GOV", "MEMBER2"), "ss1")
    assert req.represented_party == "COM/777"
    assert SoapRequest.from_header_part(req.header_part()) == req


def _without(name: str) -> str:
    lines = HEADER.split("\n")
    return "\n".join(line for line in lines if f"<xrd:{name}>" not in line)


@pytest.mark.parametrize(("data", "code"), [
    (envelope(_without("id")), "client.missing_header"),
    (envelope(_without("protocolVersion")), "client.missing_header"),
    (envelope(""), "client.missing_header"),
    (REQUEST.replace(b"<SOAP-ENV:Header>", b"<x/><SOAP-ENV:Header>"), "client.invalid_soap"),
    (envelope(HEADER + "<xrd:issue>again</xrd:issue>"), "client.duplicate_header"),
    (envelope(HEADER.replace(">4.0<", ">5.0<")), "client.invalid_protocol_version"),
    (envelope(HEADER.replace(">4.0<", "><")), "client.invalid_protocol_version"),
    (envelope(HEADER.replace("<id:memberClass>GOV</id:memberClass><id:memberCode>MEMBER1",
                             "<id:memberCode>MEMBER1")), "client.invalid_header"),
    (envelope(HEADER.replace('objectType="SERVICE"', 'objectType="SERVER"')),
     "client.invalid_service_identifier"),
    (envelope(HEADER.replace('id:objectType="SERVICE"', 'id:objectType="THING"')),
     "client.invalid_header"),
    (envelope(HEADER + "<xrd:centralService id:objectType='CENTRALSERVICE'>"
              "<id:xRoadInstance>EE</id:xRoadInstance><id:serviceCode>x</id:serviceCode>"
              "</xrd:centralService>"), "client.invalid_header"),
    (envelope(HEADER.replace("<xrd:id>4894e35d-bf0f-44a6-867a-8e51f1daa7e0",
                             "<xrd:id>" + "x" * 2000)), "client.invalid_header"),
    (envelope(body="<ns1:otherService/>"), "client.invalid_body"),
    (envelope(body=""), "client.invalid_body"),
    (envelope(body="<ns1:exampleService/><ns1:exampleService/>"), "client.invalid_body"),
    (envelope(body="<SOAP-ENV:Fault><faultcode>x</faultcode></SOAP-ENV:Fault>"),
     "client.invalid_body"),
    (REQUEST.replace(NS_SOAP_ENV.encode(), b"http://www.w3.org/2003/05/soap-envelope"),
     "client.invalid_soap"),
    (REQUEST.replace(b"http://x-road.eu/xsd/xroad.xsd", b"urn:other"),
     "client.missing_header"),
])
def test_refused(data: bytes, code: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_request(data, CTYPE, None, max_bytes=MAX)
    assert info.value.code == code, info.value.message


def test_a_member_level_provider_is_refused() -> None:
    data = envelope(HEADER.replace(
        "<id:subsystemCode>SUBSYSTEM2</id:subsystemCode>", ""))
    with pytest.raises(BadRequestError) as info:
        parse_request(data, CTYPE, None, max_bytes=MAX)
    assert info.value.code == "client.invalid_service_identifier"


@pytest.mark.parametrize("value", ['""', '"urn:x#op"', None, ' "a" '])
def test_soap_action_quoted_or_absent(value: str | None) -> None:
    assert check_soap_action(value) == (None if value is None else value.strip())


@pytest.mark.parametrize("value", ["op", "", '"a"b"', '"unterminated', '"\x01"'])
def test_soap_action_malformed(value: str) -> None:
    with pytest.raises(BadRequestError) as info:
        check_soap_action(value)
    assert info.value.code == "client.invalid_soap_action"


def test_provider_checks_the_body_against_the_signed_header_part() -> None:
    req = parse_request(REQUEST, CTYPE, None, max_bytes=MAX)
    check_request_body(req, REQUEST, max_bytes=MAX)
    other = REQUEST.replace(b"EE12345678901", b"EE99999999999")
    with pytest.raises(BadRequestError) as info:
        check_request_body(req, other, max_bytes=MAX)
    assert info.value.code == "server.serverproxy.bad_request"
    with pytest.raises(BadRequestError):
        check_request_body(req, b"<not-soap/>", max_bytes=MAX)


def _hash_of(data: bytes) -> str:
    tree = etree.fromstring(data)
    return tree.findtext(".//{http://x-road.eu/xsd/xroad.xsd}requestHash") or ""


def test_response_gets_the_request_hash_and_the_consumer_checks_it() -> None:
    req = parse_request(REQUEST, CTYPE, None, max_bytes=MAX)
    out = finish_response(REQUEST, CTYPE, response_to(), "text/xml", max_bytes=MAX)
    expected = base64.b64encode(hashlib.sha512(REQUEST).digest()).decode()
    assert _hash_of(out) == expected == soap_request_hash(REQUEST)
    check_response(req, REQUEST, out, "text/xml", max_bytes=MAX)
    # another request's hash does not pass
    other = REQUEST.replace(b"foo", b"bar")
    with pytest.raises(InvalidSignatureError) as info:
        check_response(req, other, out, "text/xml", max_bytes=MAX)
    assert info.value.code == "server.clientproxy.invalid_request_hash"


def test_a_request_hash_sent_by_the_service_is_replaced() -> None:
    forged = response_to().replace(b"</s:Header>",
                                   b'<xrd:requestHash algorithmId="x">forged</xrd:requestHash>'
                                   b"</s:Header>")
    out = finish_response(REQUEST, CTYPE, forged, "text/xml", max_bytes=MAX)
    assert out.count(b"<xrd:requestHash") == 1 and b"forged" not in out
    assert _hash_of(out) == soap_request_hash(REQUEST)


@pytest.mark.parametrize("answer", [
    response_to().replace(b"<xrd:issue>12345</xrd:issue>", b""),  # a field dropped
    response_to().replace(b">12345<", b">54321<"),  # a value changed
    response_to().replace(b"<xrd:userId>EE12345678901</xrd:userId>", b"").replace(
        b"</s:Header>", b"<xrd:userId>EE12345678901</xrd:userId></s:Header>"),  # reordered
    envelope("", "<ns1:exampleServiceResponse/>"),  # no header at all
    b"<html>Internal Server Error</html>",
])
def test_a_response_that_does_not_echo_the_headers_is_refused(answer: bytes) -> None:
    with pytest.raises(ServerProxyError) as info:
        finish_response(REQUEST, CTYPE, answer, "text/xml", max_bytes=MAX)
    assert info.value.code == "server.serverproxy.inconsistent_response"


def test_a_non_soap_content_type_is_refused() -> None:
    with pytest.raises(ServerProxyError) as info:
        finish_response(REQUEST, CTYPE, b"oops", "text/plain", max_bytes=MAX)
    assert info.value.code == "server.serverproxy.inconsistent_response"


def test_faults_pass_untouched_and_need_no_hash() -> None:
    fault = b"""<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
      <s:Fault><faultcode>s:Server</faultcode><faultstring>down</faultstring></s:Fault>
      </s:Body></s:Envelope>"""
    assert finish_response(REQUEST, CTYPE, fault, "text/xml", max_bytes=MAX) is fault
    req = parse_request(REQUEST, CTYPE, None, max_bytes=MAX)
    check_response(req, REQUEST, fault, "text/xml", max_bytes=MAX)


def test_a_multipart_response_keeps_its_attachments() -> None:
    attachment = MimePart((("Content-ID", "<a>"),), b"\x00binary\x01")
    first = MimePart((("Content-Type", "text/xml"),), response_to())
    body = join_multipart((first, attachment), "B")
    ctype = 'multipart/related; type="text/xml"; boundary=B'
    out = finish_response(REQUEST, CTYPE, body, ctype, max_bytes=MAX)
    assert out.endswith(b"\x00binary\x01\r\n--B--\r\n")
    req = parse_request(REQUEST, CTYPE, None, max_bytes=MAX)
    check_response(req, REQUEST, out, ctype, max_bytes=MAX)


@pytest.mark.parametrize(("mangle", "why"), [
    (lambda b: b.replace(b"requestHash", b"otherHash"), "no single requestHash"),
    (lambda b: b.replace(SHA512.encode(), b"urn:md5"), "not supported"),
])
def test_consumer_refuses_a_missing_or_odd_hash(mangle: object, why: str) -> None:
    req = parse_request(REQUEST, CTYPE, None, max_bytes=MAX)
    out = finish_response(REQUEST, CTYPE, response_to(), "text/xml", max_bytes=MAX)
    assert callable(mangle)
    with pytest.raises(InvalidSignatureError) as info:
        check_response(req, REQUEST, mangle(out), "text/xml", max_bytes=MAX)
    assert why in info.value.message


def test_fault_envelope_follows_annex_d() -> None:
    fault_id = str(uuid.uuid4())
    tree = etree.fromstring(fault_envelope("server.serverproxy.access_denied", "no <access>",
                                           fault_id))
    fault = tree.find(f"{{{NS_SOAP_ENV}}}Body/{{{NS_SOAP_ENV}}}Fault")
    assert fault is not None
    assert [c.tag for c in fault] == ["faultcode", "faultstring", "faultactor", "detail"]
    assert fault.findtext("faultcode") == "server.serverproxy.access_denied"
    assert fault.findtext("faultstring") == "no <access>"
    assert fault.findtext("detail/faultDetail") == fault_id


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 1000, 1 << 20])
def test_a_multipart_request_in_pieces_is_checked_and_hashed_from_its_soap_part(
        size: int) -> None:
    """A spooled message (security_server.body): its SOAP part is parsed and hashed as the
    pieces pass; the attachments are not read."""
    ctype = 'multipart/related; type="text/xml"; boundary="B"'
    attachment = bytes(range(256)) * 80
    message = (b"--B\r\nContent-Type: text/xml\r\n\r\n" + REQUEST +
               b"\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\n" + attachment +
               b"\r\n--B--\r\n")
    read: list[int] = []

    def chunks() -> Iterator[bytes]:
        for piece in _pieces(message, size):
            read.append(len(piece))
            yield piece

    req = parse_request(chunks(), ctype, None, max_bytes=MAX)
    if size < len(attachment):  # the attachment was not read
        assert sum(read) < len(message)
    whole = parse_request(REQUEST, CTYPE, None, max_bytes=MAX)
    assert req == dataclasses.replace(whole, content_type=ctype)
    echo = check_request_body(req, chunks(), max_bytes=MAX)
    assert echo.request_hash == soap_request_hash(REQUEST)
    assert echo == check_request_body(req, message, max_bytes=MAX)
    assert parse_hashed_request(chunks(), ctype, None, max_bytes=MAX) == (
        req, soap_request_hash(REQUEST))
    # a message that is not what the signed header part says is refused in pieces too
    other = message.replace(b"<in>foo</in>", b"<in>bar</in>").replace(b"4894e35d", b"5894e35d")
    with pytest.raises(BadRequestError) as info:
        check_request_body(req, _pieces(other, size), max_bytes=MAX)
    assert info.value.code == "server.serverproxy.bad_request"


@pytest.mark.parametrize(("message", "code", "why"), [
    (b"--B\r\nContent-Type: text/xml\r\n\r\n" + REQUEST, "client.invalid_content_type",
     "not closed"),
    (b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B--",
     "client.invalid_content_type", "not the SOAP envelope"),
    (b"--B\r\nContent-Type: text/xml\r\n\r\n" + REQUEST.replace(b"<in>", b"<!DOCTYPE x><in>")
     + b"\r\n--B--", "client.invalid_soap", "well-formed"),
    (b"--B\r\nContent-Type: text/xml\r\n\r\n" + envelope(
        HEADER + "<other>" + " " * (2 << 20) + "</other>") + b"\r\n--B--",
     "client.invalid_soap", "does not begin within"),
])
def test_a_multipart_request_in_pieces_is_refused(message: bytes, code: str,
                                                  why: str) -> None:
    ctype = 'multipart/related; type="text/xml"; boundary="B"'
    with pytest.raises(BadRequestError) as info:
        parse_request(_pieces(message, 4096), ctype, None, max_bytes=4 * MAX)
    assert info.value.code == code
    assert why in info.value.message
