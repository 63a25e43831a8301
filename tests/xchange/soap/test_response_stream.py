"""SOAP answers checked and stamped piece by piece (xchange.soap.envelope.ResponseStream):
the provider's requestHash spliced into the Header, every other byte as the service sent it;
the consumer's check of the same, never holding the answer whole."""

from __future__ import annotations

import re

import pytest
from lxml import etree

from tests.xchange.soap.test_envelope import CTYPE, HEADER, REQUEST, envelope, response_to
from xchange.errors import (
    BadRequestError,
    ClientProxyError,
    InvalidSignatureError,
    ServerProxyError,
)
from xchange.identifiers import NS_XROAD
from xchange.soap.envelope import (
    SHA512,
    RequestEcho,
    ResponseStream,
    check_request_body,
    check_response,
    parse_request,
    soap_request_hash,
)
from xchange.soap.xml import UTF8_BOM

MAX = 1024 * 1024
REQ = parse_request(REQUEST, CTYPE, None, max_bytes=MAX)
ECHO = check_request_body(REQ, REQUEST, max_bytes=MAX)
STAMP = re.compile(rb"\s*<([\w:]*)requestHash[^>]*>[^<]*</\1requestHash>")


def _stamped(answer: bytes, piece: int, ctype: str = "text/xml",
             echo: RequestEcho = ECHO, head_limit: int = MAX) -> bytes:
    stream = ResponseStream(ctype, max_bytes=MAX, echo=echo, head_limit=head_limit)
    out = [stream.feed(answer[i:i + piece]) for i in range(0, len(answer), piece)]
    return b"".join(out) + stream.close()


def _pieces(data: bytes, piece: int) -> list[bytes]:
    return [data[i:i + piece] for i in range(0, len(data), piece)]


def test_the_echo_is_the_requests_fields_and_hash() -> None:
    assert ECHO.request_hash == soap_request_hash(REQUEST)
    assert len(ECHO.fields) == 6  # client, service, id, userId, issue, protocolVersion


@pytest.mark.parametrize("piece", [1, 2, 3, 50, 4097, MAX])
def test_only_the_request_hash_is_added_whatever_the_pieces(piece: int) -> None:
    answer = UTF8_BOM + response_to() + b"<!-- after -->"
    out = _stamped(answer, piece)
    assert out == _stamped(answer, MAX)
    assert STAMP.sub(b"", out, count=1) == answer  # every other byte as sent, BOM included
    stamp = etree.fromstring(out[len(UTF8_BOM):]).find(f".//{{{NS_XROAD}}}requestHash")
    assert stamp is not None and stamp.get("algorithmId") == SHA512
    assert stamp.text == soap_request_hash(REQUEST)
    # after the last field, with the indentation the fields have
    assert b"<xrd:protocolVersion>4.0</xrd:protocolVersion>\n<xrd:requestHash " in out
    check_response(REQ, REQUEST, _pieces(out[len(UTF8_BOM):], piece), "text/xml",
                   max_bytes=MAX)


@pytest.mark.parametrize(("answer", "name"), [
    # the X-Road namespace bound to another prefix on the Envelope
    (response_to().replace(b"xrd:", b"x-road:").replace(b"xmlns:xrd", b"xmlns:x-road"),
     b"x-road:requestHash"),
    # the default namespace of the Header
    (response_to().replace(b"<s:Header>", f'<s:Header xmlns="{NS_XROAD}">'.encode())
     .replace(b"xrd:", b""), b"requestHash"),
    # declared on each field only: the stamp declares it too
    (response_to().replace(b' xmlns:xrd="http://x-road.eu/xsd/xroad.xsd"', b"")
     .replace(b"<xrd:client ", f'<xrd:client xmlns:xrd="{NS_XROAD}" '.encode())
     .replace(b"<xrd:service ", f'<xrd:service xmlns:xrd="{NS_XROAD}" '.encode())
     .replace(b"<xrd:id>", f'<xrd:id xmlns:xrd="{NS_XROAD}">'.encode())
     .replace(b"<xrd:userId>", f'<xrd:userId xmlns:xrd="{NS_XROAD}">'.encode())
     .replace(b"<xrd:issue>", f'<xrd:issue xmlns:xrd="{NS_XROAD}">'.encode())
     .replace(b"<xrd:protocolVersion>", f'<xrd:protocolVersion xmlns:xrd="{NS_XROAD}">'
              .encode()), b'xrd:requestHash xmlns:xrd="http://x-road.eu/xsd/xroad.xsd"'),
])
def test_the_stamp_takes_a_prefix_in_scope_or_declares_one(answer: bytes, name: bytes) -> None:
    out = _stamped(answer, 13)
    assert b"<" + name + b' algorithmId="' in out
    check_response(REQ, REQUEST, out, "text/xml", max_bytes=MAX)


def test_forged_hashes_are_cut_out_wherever_they_are() -> None:
    forged = b'<xrd:requestHash algorithmId="x">forged</xrd:requestHash>'
    answer = response_to().replace(b"<xrd:id>", forged + b"<xrd:id>").replace(
        b"</s:Header>", forged + b"</s:Header>")
    out = _stamped(answer, 5)
    assert b"forged" not in out and out.count(b"requestHash algorithmId") == 1
    check_response(REQ, REQUEST, out, "text/xml", max_bytes=MAX)


def test_a_multipart_answer_keeps_its_attachments_byte_for_byte() -> None:
    attachment = bytes(range(256)) * 300 + b"\r\n--B"  # ends in what begins a boundary
    body = (b"--B\r\nContent-Type: application/xop+xml; type=\"text/xml\"\r\n\r\n" +
            response_to() + b"\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\n" +
            attachment + b"X\r\n--B--\r\n")
    ctype = 'multipart/related; type="application/xop+xml"; boundary=B'
    for piece in (1, 7, 1000, MAX):
        out = _stamped(body, piece, ctype)
        assert STAMP.sub(b"", out, count=1) == body
        check_response(REQ, REQUEST, _pieces(out, piece), ctype, max_bytes=MAX)


def test_a_fault_passes_untouched_even_with_a_header() -> None:
    fault = envelope("<other>not echoed</other>",
                     "<SOAP-ENV:Fault><faultcode>SOAP-ENV:Server</faultcode>"
                     "<faultstring>down</faultstring></SOAP-ENV:Fault>")
    for piece in (1, 64, MAX):
        assert _stamped(fault, piece) == fault
    check_response(REQ, REQUEST, _pieces(fault, 9), "text/xml", max_bytes=MAX)


def _refused(answer: bytes, ctype: str = "text/xml", head_limit: int = MAX) -> str:
    with pytest.raises(ServerProxyError) as info:
        _stamped(answer, 100, ctype, head_limit=head_limit)
    assert info.value.code == "server.serverproxy.inconsistent_response"
    return info.value.message


@pytest.mark.parametrize(("answer", "why"), [
    (response_to().replace(b">12345<", b">54321<"), "does not copy"),
    (response_to().replace(b"<xrd:issue>12345</xrd:issue>", b"<xrd:issue>12345</xrd:issue>"
                           b"<xrd:issue>12345</xrd:issue>"), "does not copy"),  # twice
    (response_to().replace(b"http://x-road.eu/xsd/xroad.xsd", b"urn:other"), "does not copy"),
    (envelope("", "<ns1:exampleServiceResponse/>"), "does not copy"),
    (b'<!DOCTYPE s:Envelope [<!ENTITY e "x">]>' + response_to(), "DOCTYPE"),
    (response_to().replace(b"<in>foo</in>", b"<in>&e;</in>"), "well-formed"),
    (response_to().replace(b"<in>foo</in>", b"<in>" + b"<a>" * 70 + b"</a>" * 70 + b"</in>"),
     "deeper"),
    (response_to().replace(b"<in>foo</in>", b"<in><?pi x?></in>"), "processing"),
    (response_to().replace(b"</s:Body>", b"<ns1:more/></s:Body>"), "more than one"),
    (response_to().replace(b"</s:Envelope>", b"<s:Body/></s:Envelope>"), "nothing else"),
    (response_to()[:-30], "well-formed"),
    (b"<html>Internal Server Error</html>", "not a SOAP 1.1 Envelope"),
])
def test_refused_answers(answer: bytes, why: str) -> None:
    assert why in _refused(answer)


def test_hostile_content_long_after_the_header_is_still_refused() -> None:
    """The Header was passed on long before: the whole answer is still refused (the caller
    drops what was passed on; nothing of it is signed or sent)."""
    rows = b"<row>x</row>" * 50_000
    answer = response_to().replace(b"<in>foo</in>", b"<in>" + rows + b"<?pi x?></in>")
    assert "processing" in _refused(answer)


@pytest.mark.parametrize(("ctype", "why"), [
    ("text/plain", "not text/xml or multipart/related"),
    ("application/soap+xml", "not text/xml or multipart/related"),
    ("text/xml; charset=iso-8859-1", "charset"),
    (None, "no Content-Type"),
])
def test_an_answer_that_is_not_soap_1_1_is_refused(ctype: str | None, why: str) -> None:
    with pytest.raises(ServerProxyError) as info:
        ResponseStream(ctype, max_bytes=MAX, echo=ECHO)
    assert info.value.code == "server.serverproxy.inconsistent_response"
    assert why in info.value.message


def test_the_part_before_the_body_is_bounded() -> None:
    big = "<other>" + "x" * 5000 + "</other>"
    assert "does not begin within its first 4096 bytes" in _refused(
        envelope(HEADER + big, "<ns1:exampleServiceResponse/>"), head_limit=4096)


def test_the_soap_part_is_bounded() -> None:
    stream = ResponseStream("text/xml", max_bytes=2000, echo=ECHO)
    with pytest.raises(ServerProxyError) as info:
        stream.feed(response_to() * 3)
    assert "larger than 2000" in info.value.message


def test_the_consumer_refuses_an_answer_whose_headers_are_not_the_requests() -> None:
    out = _stamped(response_to(), 50)
    other = REQUEST.replace(b"EE12345678901", b"EE99999999999")
    other_req = parse_request(other, CTYPE, None, max_bytes=MAX)
    # the hash is of the request sent, the headers are another request's
    with pytest.raises(ClientProxyError) as info:
        check_response(other_req, None, _pieces(out, 50), "text/xml", max_bytes=MAX,
                       request_hash=soap_request_hash(REQUEST))
    assert info.value.code == "server.clientproxy.inconsistent_response"


def test_the_consumer_check_reads_pieces_and_refuses_hostile_answers() -> None:
    with pytest.raises(BadRequestError):  # the consumer's own code, then wrapped
        ResponseStream("text/xml", max_bytes=MAX, code="client.invalid_soap").feed(
            b'<!DOCTYPE a [<!ENTITY e "x">]>' + b" " * 5000)
    with pytest.raises(InvalidSignatureError) as info:
        check_response(REQ, REQUEST, _pieces(b"<!DOCTYPE a>" + response_to(), 10), "text/xml",
                       max_bytes=MAX)
    assert info.value.code == "server.clientproxy.invalid_request_hash"
