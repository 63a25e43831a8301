"""multipart/related packages: the SOAP part first, attachments carried as they are."""

from __future__ import annotations

import pytest

from xchange.errors import BadRequestError
from xchange.soap.mime import MimePart, join_multipart, parse_media_type, soap_part

ENVELOPE = b"<e/>"
ATTACHMENT = b"\x00\x01binary\r\n--not-the-boundary\r\n"


def package(*, first_type: str = "text/xml; charset=UTF-8", encoding: str = "8bit",
            newline: bytes = b"\r\n") -> bytes:
    parts = (MimePart((("Content-Type", first_type), ("Content-Transfer-Encoding", encoding),
                       ("Content-ID", "<root>")), ENVELOPE),
             MimePart((("Content-Type", "application/octet-stream"),
                       ("Content-ID", "<data.bin>")), ATTACHMENT))
    return join_multipart(parts, "BOUNDARY").replace(b"\r\n", newline)


CTYPE = 'multipart/related; type="text/xml"; start="<root>"; boundary="BOUNDARY"'


def test_plain_text_xml_is_its_own_soap_part() -> None:
    part = soap_part(b"<e/>", "text/xml; charset=utf-8")
    assert (part.envelope, part.is_multipart, part.attachments) == (b"<e/>", False, ())


def test_multipart_related_soap_part_first_attachments_untouched() -> None:
    part = soap_part(b"preamble\r\n" + package() + b"epilogue", CTYPE)
    assert part.envelope == ENVELOPE
    [attachment] = part.attachments
    assert attachment.body == ATTACHMENT
    assert attachment.header("content-id") == "<data.bin>"


def test_join_then_split_gives_the_same_bytes() -> None:
    body = package()
    part = soap_part(body, CTYPE)
    assert join_multipart(part.parts, "BOUNDARY") == body


def test_mtom_root_part_is_accepted() -> None:
    body = package(first_type='application/xop+xml; charset=UTF-8; type="text/xml"')
    ctype = ('multipart/related; type="application/xop+xml"; start="<root>"; '
             'start-info="text/xml"; boundary=BOUNDARY')
    assert soap_part(body, ctype).envelope == ENVELOPE


def test_bare_newlines_are_tolerated() -> None:
    assert soap_part(package(newline=b"\n"), CTYPE).envelope == ENVELOPE


@pytest.mark.parametrize(("body", "ctype", "why"), [
    (b"<e/>", None, "no Content-Type"),
    (b"<e/>", "application/soap+xml", "not text/xml"),
    (b"<e/>", "text/xml; charset=iso-8859-1", "charset"),
    (package(), "multipart/related; type=text/xml", "boundary"),
    (package(), CTYPE.replace("<root>", "<other>"), "first part"),
    (package(first_type="application/octet-stream"), CTYPE, "not the SOAP envelope"),
    (package(first_type='application/xop+xml; type="application/soap+xml"'), CTYPE, "MTOM"),
    (package(encoding="base64"), CTYPE, "8bit"),
    (b"--BOUNDARY\r\nContent-Type: text/xml\r\n\r\n<e/>", CTYPE, "not closed"),
    (b"no boundary here", CTYPE, "no boundary"),
    (b"--BOUNDARY--\r\n", CTYPE, "no parts"),
    (b"--BOUNDARY\r\nbad header line\r\n\r\n<e/>\r\n--BOUNDARY--", CTYPE, "header line"),
])
def test_refused(body: bytes, ctype: str | None, why: str) -> None:
    with pytest.raises(BadRequestError) as info:
        soap_part(body, ctype)
    assert info.value.code == "client.invalid_content_type"
    assert why in info.value.message


def test_media_type_parameters() -> None:
    media = parse_media_type('Multipart/Related; Boundary="a b"; start="<x>"')
    assert (media.value, media.param("boundary"), media.param("start")) == (
        "multipart/related", "a b", "<x>")
