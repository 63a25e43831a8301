"""Tests of the frame that carries signed messages between security servers."""

from __future__ import annotations

import struct

import pytest

from xchange.errors import BadRequestError
from xchange.transport import (
    MAGIC,
    FrameDecoder,
    FrameHead,
    SignedMessage,
    decode_frame,
    encode_frame,
    encode_frame_head,
)

HEADER = b'{"type":"xchange-rest-request","v":1}'
SIG = "eyJhbGciOiJFUzI1NiJ9..c2lnbmF0dXJl"
MAX_SECTION = 1024 * 1024


def section(kind: int, value: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BI", kind, len(value) if length is None else length) + value


def frame(*sections: bytes, body: bytes | None = b"body", magic: bytes = MAGIC) -> bytes:
    return magic + b"".join(sections) + (b"" if body is None else b"\x00" + body)


MESSAGES = [
        SignedMessage(HEADER, SIG, b'{"id": 1}'),
        SignedMessage(HEADER, SIG, b""),
        SignedMessage(HEADER, SIG, b"", (b"\x30\x03\x0a\x01\x00",)),
        SignedMessage(HEADER, SIG, b"payload", (b"ocsp-1", b"ocsp-2", b"")),
        SignedMessage(b"", "", b""),
        # a body that looks like a frame is still just the body
        SignedMessage(HEADER, SIG, MAGIC + section(0x01, b"x") + b"\x00tail"),
        SignedMessage(HEADER, SIG, bytes(range(256)) * 1000),
        SignedMessage(b"h" * MAX_SECTION, SIG, b"b", (b"o" * MAX_SECTION,)),
]


@pytest.mark.parametrize("message", MESSAGES)
def test_frame_round_trip(message: SignedMessage) -> None:
    data = encode_frame(message)
    assert data.startswith(MAGIC)
    assert decode_frame(data) == message


def test_frame_layout() -> None:
    data = encode_frame(SignedMessage(b"hp", "sig", b"body", (b"oc",)))
    assert data == (
        b"XCH1" + b"\x01\x00\x00\x00\x02hp" + b"\x02\x00\x00\x00\x03sig"
        + b"\x03\x00\x00\x00\x02oc" + b"\x00body"
    )


def test_sections_in_any_order_are_accepted() -> None:
    data = frame(section(0x03, b"o"), section(0x02, SIG.encode()), section(0x01, HEADER))
    assert decode_frame(data) == SignedMessage(HEADER, SIG, b"body", (b"o",))


_HP, _SG = section(0x01, HEADER), section(0x02, SIG.encode())


MALFORMED = [
        (b"", "wrong magic"),
        (b"XCH", "wrong magic"),
        (b"XCH2" + _HP + _SG + b"\x00", "wrong magic"),
        (b"xch1" + _HP + _SG + b"\x00", "wrong magic"),
        (b"\x00" + _HP + _SG, "wrong magic"),
        (MAGIC, "no body section"),
        (frame(_HP, _SG, body=None), "no body section"),
        (frame(_HP, _SG, section(0x03, b"ocsp"), body=None), "no body section"),
        # truncated: a section header cut short, or a value shorter than its length
        (MAGIC + b"\x01\x00\x00", "truncated section header"),
        (frame(_HP, _SG, body=None) + b"\x03\x00", "truncated section header"),
        (MAGIC + _HP[:-1], "section length out of range"),
        (MAGIC + section(0x01, HEADER, len(HEADER) + 1), "section length out of range"),
        (frame(_HP, section(0x02, b"sig", 0xFFFFFFFF)), "section length out of range"),
        # over-long: more than 1 MiB, even when the bytes are there
        (frame(section(0x01, b"h" * (MAX_SECTION + 1)), _SG), "section length out of range"),
        (frame(_HP, _SG, section(0x03, b"o" * (MAX_SECTION + 1))), "section length out of range"),
        # duplicated sections
        (frame(_HP, _HP, _SG), "two header parts"),
        (frame(_HP, _SG, section(0x01, b"other")), "two header parts"),
        (frame(_HP, _SG, _SG), "two signatures"),
        (frame(_SG, _HP, section(0x02, b"other")), "two signatures"),
        # unknown section types
        (frame(_HP, _SG, section(0x04, b"x")), "unknown section type 4"),
        (frame(section(0xFF, b""), _HP, _SG), "unknown section type 255"),
        (frame(_HP, section(0x7F, b"x"), _SG), "unknown section type 127"),
        # missing mandatory sections
        (frame(_HP), "header part or signature missing"),
        (frame(_SG), "header part or signature missing"),
        (frame(_HP, section(0x03, b"ocsp")), "header part or signature missing"),
        (frame(), "header part or signature missing"),
        (MAGIC + b"\x00", "header part or signature missing"),
        # the signature is compact JWS, ASCII only
        (frame(_HP, section(0x02, "sïg".encode())), "signature is not ASCII"),
        (frame(_HP, section(0x02, b"\xff")), "signature is not ASCII"),
]


@pytest.mark.parametrize(("data", "why"), MALFORMED)
def test_malformed_frames_refused(data: bytes, why: str) -> None:
    with pytest.raises(BadRequestError, match=why) as info:
        decode_frame(data)
    assert info.value.code == "server.serverproxy.bad_request"


@pytest.mark.parametrize(
    "code", ["server.clientproxy.invalid_signature", "server.serverproxy.bad_request"]
)
def test_the_caller_chooses_the_error_code(code: str) -> None:
    with pytest.raises(BadRequestError) as info:
        decode_frame(b"HTTP/1.1 200 OK", code=code)
    assert info.value.code == code
    with pytest.raises(BadRequestError) as info:
        decode_frame(frame(_HP, _SG, _SG), code=code)
    assert info.value.code == code


@pytest.mark.parametrize("cut", range(len(MAGIC) + 5 + len(HEADER) + 5 + len(SIG) + 1))
def test_every_truncation_before_the_body_is_refused(cut: int) -> None:
    data = encode_frame(SignedMessage(HEADER, SIG, b"body"))
    with pytest.raises(BadRequestError):
        decode_frame(data[:cut])


def _decode_in_pieces(data: bytes, size: int) -> SignedMessage:
    decoder = FrameDecoder()
    body = b"".join(decoder.feed(data[i:i + size]) for i in range(0, len(data), size))
    head = decoder.finish()
    return SignedMessage(head.header_part, head.signature, body, head.ocsp_responses)


@pytest.mark.parametrize("size", [1, 3, 5, 4096, 1 << 30])
@pytest.mark.parametrize("message", MESSAGES[:7])
def test_a_frame_decodes_the_same_however_it_arrives(message: SignedMessage, size: int) -> None:
    assert _decode_in_pieces(encode_frame(message), size) == message


@pytest.mark.parametrize("size", [1, 7, 1 << 30])
@pytest.mark.parametrize(("data", "why"), MALFORMED)
def test_malformed_frames_refused_however_they_arrive(data: bytes, why: str, size: int) -> None:
    with pytest.raises(BadRequestError, match=why):
        _decode_in_pieces(data, size)


def test_the_body_is_handed_back_as_it_arrives_and_the_sections_never_again() -> None:
    head = FrameHead(HEADER, SIG, (b"ocsp",))
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame_head(head)[:-1]) == b""
    assert decoder.head is None
    assert decoder.feed(b"\x00" + b"first") == b"first"
    assert decoder.head == head
    # once in the body, every byte is the body's, even one that looks like a section
    assert decoder.feed(b"\x01\x00\x00\x00\x01x") == b"\x01\x00\x00\x00\x01x"
    assert decoder.finish() == head


def test_an_over_long_section_is_refused_before_its_bytes_arrive() -> None:
    decoder = FrameDecoder(code="server.clientproxy.invalid_signature")
    with pytest.raises(BadRequestError, match="section length out of range") as info:
        decoder.feed(MAGIC + struct.pack(">BI", 0x01, MAX_SECTION + 1))
    assert info.value.code == "server.clientproxy.invalid_signature"
