"""The client proxy's reading of an IS's SOAP message (step 1): parsed and checked, and what
its answer is checked against kept -- a spooled message read once."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from security_server.body import MEMORY_THRESHOLD, Body, spool
from security_server.client_proxy import read_soap_request
from tests.xchange.soap.test_envelope import envelope
from xchange.errors import BadRequestError, XRoadError
from xchange.soap.envelope import parse_request, soap_request_hash

TOO_LARGE = XRoadError("too large", code="client.payload_too_large")
LIMIT = 64 * 1024 * 1024
MULTIPART = 'multipart/related; type="text/xml"; boundary="B"'
TEXT_XML = "text/xml; charset=UTF-8"
# a SOAP part of about 2.5 MiB: many small elements in the service's wrapper
SOAP_PART = envelope(body="<ns1:exampleService>" + "<in>0123456789abcdef</in>" * 100_000
                     + "</ns1:exampleService>")
ATTACHMENT = bytes(range(256)) * 4096  # 1 MiB


def multipart(soap_part: bytes = SOAP_PART, attachment: bytes = ATTACHMENT) -> bytes:
    return (b"--B\r\nContent-Type: text/xml\r\n\r\n" + soap_part +
            b"\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\n" + attachment +
            b"\r\n--B--\r\n")


async def _spooled(data: bytes, directory: Path) -> Body:
    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start:start + 65536]
    return await spool(pieces(), directory, limit=LIMIT, too_large=TOO_LARGE)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes read back from every spool, per read."""
    read: list[int] = []
    chunks = Body.chunks

    def counted(self: Body) -> Iterator[bytes]:
        for piece in chunks(self):
            read.append(len(piece))
            yield piece

    monkeypatch.setattr(Body, "chunks", counted)
    return read


async def test_a_spooled_multipart_message_is_read_once(tmp_path: Path,
                                                        reads: list[int]) -> None:
    body = await _spooled(multipart(), tmp_path)
    try:
        assert body.data is None
        req, message = await read_soap_request(body, MULTIPART, None, max_bytes=LIMIT)
        whole = parse_request(SOAP_PART, TEXT_XML, None, max_bytes=LIMIT)
        assert req == dataclasses.replace(whole, content_type=MULTIPART)
        assert message.request_hash == soap_request_hash(SOAP_PART)
        # one pass over the SOAP part, in 1 MiB reads; the attachment's read at most in part
        assert sum(reads) < len(SOAP_PART) + MEMORY_THRESHOLD
        assert sum(reads) < len(multipart())
    finally:
        body.close()


async def test_a_spooled_text_xml_message_is_hashed_as_it_arrived(tmp_path: Path,
                                                                  reads: list[int]) -> None:
    body = await _spooled(SOAP_PART, tmp_path)
    try:
        req, message = await read_soap_request(body, TEXT_XML, None, max_bytes=LIMIT)
        assert req.content_type == TEXT_XML
        assert message.request_hash == soap_request_hash(SOAP_PART)
        assert sum(reads) == len(SOAP_PART)
    finally:
        body.close()


async def test_a_message_in_memory_is_kept_whole(tmp_path: Path) -> None:
    small = multipart(envelope(), b"attached")
    body = await _spooled(small, tmp_path)
    req, message = await read_soap_request(body, MULTIPART, None, max_bytes=LIMIT)
    assert message.data == small and message.request_hash is None
    assert req.service.code == "exampleService"


async def test_a_spooled_message_that_is_not_soap_is_refused(tmp_path: Path) -> None:
    broken = multipart(SOAP_PART.replace(b"</ns1:exampleService>", b""))
    body = await _spooled(broken, tmp_path)
    try:
        with pytest.raises(BadRequestError) as info:
            await read_soap_request(body, MULTIPART, None, max_bytes=LIMIT)
        assert info.value.code == "client.invalid_soap"
    finally:
        body.close()

