"""multipart/related packages: the SOAP part first, attachments carried as they are."""

from __future__ import annotations

import pytest

from xchange.errors import BadRequestError
from xchange.soap.mime import (
    END,
    SOAP,
    MimePart,
    SoapPartStream,
    join_multipart,
    parse_media_type,
    soap_part,
)

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


def test_head_only_finds_the_soap_part_in_the_first_bytes_of_a_message() -> None:
    """A large message's attachments stay in the spool: only its head is looked at."""
    head = package()[:-len(ATTACHMENT) // 2]  # cut inside the attachment
    part = soap_part(head, CTYPE, head_only=True)
    assert part.envelope == ENVELOPE
    assert part.is_multipart and part.attachments == ()
    with pytest.raises(BadRequestError, match="not closed"):
        soap_part(head, CTYPE)  # the whole message must be closed


@pytest.mark.parametrize(("head", "ctype"), [
    (b"--BOUNDARY\r\nContent-Type: text/xml\r\n\r\n<e>" + b"x" * 100, CTYPE),
    (b"<e>" + b"x" * 100, "text/xml"),
])
def test_head_only_refuses_a_soap_part_that_does_not_end_in_it(head: bytes,
                                                                ctype: str) -> None:
    with pytest.raises(BadRequestError) as info:
        soap_part(head, ctype, head_only=True)
    assert info.value.code == "client.invalid_content_type"
    assert f"larger than the {len(head)} bytes accepted" in info.value.message


def _split(message: bytes, content_type: str, piece: int) -> list[tuple[str, bytes]]:
    stream = SoapPartStream(content_type)
    out: list[tuple[str, bytes]] = []
    for i in range(0, len(message), piece):
        out += stream.feed(message[i:i + piece])
    return out + stream.close()


@pytest.mark.parametrize("piece", [1, 3, 16, 100_000])
@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_a_stream_tells_the_soap_part_from_the_rest_whatever_the_pieces(
        piece: int, newline: bytes) -> None:
    message = b"preamble\r\n" + package(newline=newline) + b"epilogue"
    out = _split(message, CTYPE, piece)
    assert b"".join(p for kind, p in out if kind == SOAP) == ENVELOPE
    assert b"".join(p for _, p in out) == message  # nothing lost, nothing added
    assert [kind for kind, _ in out].count(END) == 1
    end = [kind for kind, _ in out].index(END)
    assert all(kind != SOAP for kind, _ in out[end:])


def test_a_stream_of_text_xml_is_all_soap_part() -> None:
    out = _split(b"<e>" + b"x" * 100 + b"</e>", "text/xml; charset=utf-8", 7)
    assert {kind for kind, _ in out[:-1]} == {SOAP} and out[-1] == (END, b"")


def test_a_stream_keeps_a_cut_off_boundary_until_it_knows() -> None:
    """A piece may end in what may be the start of the boundary: held back, not lost."""
    soap = b"<e>--BOUNDAR\r\n--BOUNDARX</e>"
    message = (b"--BOUNDARY\r\nContent-Type: text/xml\r\n\r\n" + soap +
               b"\r\n--BOUNDARY\r\n\r\ndata\r\n--BOUNDARY--\r\n")
    for piece in range(1, 40):
        out = _split(message, CTYPE.replace('start="<root>"; ', ""), piece)
        assert b"".join(p for kind, p in out if kind == SOAP) == soap


@pytest.mark.parametrize(("message", "ctype", "why"), [
    (package(), "application/soap+xml", "not text/xml or multipart/related"),
    (package(), "multipart/related", "without a boundary"),
    (package(first_type="application/octet-stream"), CTYPE, "not the SOAP envelope"),
    (package(encoding="base64"), CTYPE, "sent 8bit"),
    (package(), CTYPE.replace("<root>", "<other>"), "must be the first part"),
    (package()[:110], CTYPE, "not closed"),
    (package()[:60], CTYPE, "holds no SOAP part"),
    (b"no boundary at all", CTYPE, "holds no SOAP part"),
    (b"--BOUNDARY\r\n" + b"X-Long: " + b"x" * 70_000, CTYPE, "within the first"),
    (b"--BOUNDARY junk\r\n\r\n<e/>\r\n--BOUNDARY--", CTYPE, "malformed multipart boundary"),
])
def test_a_stream_refuses_what_soap_part_refuses(message: bytes, ctype: str, why: str) -> None:
    with pytest.raises(BadRequestError) as info:
        _split(message, ctype, 1000)
    assert info.value.code == "client.invalid_content_type"
    assert why in info.value.message
