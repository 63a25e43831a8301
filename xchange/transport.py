"""The framing of signed messages between security servers (docs/protocol.md, "Frame").

A frame is the HTTP body of every message one security server sends another::

    magic      4 bytes   b"XCH1"
    sections   repeated  type (1 byte) | length (4 bytes, big-endian) | value
    body       type 0x00, no length: the message body runs to the end of the frame

Section types: ``0x01`` header part (canonical JSON, exactly one), ``0x02`` signature
(compact detached JWS, ASCII, exactly one), ``0x03`` OCSP response (DER, zero or more; stapled
by the sender for its certificates).  Unknown section types are refused: a peer speaking a
newer frame version must use another magic.

This module only encodes and decodes bytes; it verifies nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xchange.errors import BadRequestError

__all__ = [
    "FRAME_MEDIA_TYPE",
    "MAGIC",
    "OCSP_MEDIA_TYPE",
    "PEER_OCSP_PATH",
    "PEER_PATH",
    "SignedMessage",
    "decode_frame",
    "encode_frame",
]

MAGIC = b"XCH1"
FRAME_MEDIA_TYPE = "application/vnd.xchange.signed-message"
PEER_PATH = "/xchange/v1/message"
"""The server proxy's message endpoint; every frame is POSTed here over mutual TLS."""
PEER_OCSP_PATH = "/xchange/v1/ocsp"
"""GET: the server proxy's current OCSP response for its own TLS certificate."""
OCSP_MEDIA_TYPE = "application/ocsp-response"

_BODY, _HEADER_PART, _SIGNATURE, _OCSP = 0x00, 0x01, 0x02, 0x03
_MAX_SECTION = 1024 * 1024
_LEN = struct.Struct(">BI")


@dataclass(frozen=True, slots=True)
class SignedMessage:
    header_part: bytes
    signature: str
    body: bytes
    ocsp_responses: tuple[bytes, ...] = ()


def encode_frame(message: SignedMessage) -> bytes:
    sig = message.signature.encode("ascii")
    parts = [MAGIC, _LEN.pack(_HEADER_PART, len(message.header_part)), message.header_part]
    parts += [_LEN.pack(_SIGNATURE, len(sig)), sig]
    for resp in message.ocsp_responses:
        parts += [_LEN.pack(_OCSP, len(resp)), resp]
    parts += [bytes([_BODY]), message.body]
    return b"".join(parts)


def decode_frame(data: bytes, *, code: str = "server.serverproxy.bad_request") -> SignedMessage:
    """Decode a frame; malformed input raises BadRequestError with ``code``."""

    def bad(why: str) -> BadRequestError:
        return BadRequestError(f"malformed message frame: {why}", code=code)

    view = memoryview(data)
    if bytes(view[:4]) != MAGIC:
        raise bad("wrong magic")
    pos = 4
    header_part: bytes | None = None
    signature: str | None = None
    ocsp: list[bytes] = []
    while True:
        if pos >= len(view):
            raise bad("no body section")
        kind = view[pos]
        if kind == _BODY:
            body = bytes(view[pos + 1:])
            break
        if pos + _LEN.size > len(view):
            raise bad("truncated section header")
        kind, length = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if length > _MAX_SECTION or pos + length > len(view):
            raise bad("section length out of range")
        value = bytes(view[pos:pos + length])
        pos += length
        if kind == _HEADER_PART:
            if header_part is not None:
                raise bad("two header parts")
            header_part = value
        elif kind == _SIGNATURE:
            if signature is not None:
                raise bad("two signatures")
            try:
                signature = value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise bad("signature is not ASCII") from exc
        elif kind == _OCSP:
            ocsp.append(value)
        else:
            raise bad(f"unknown section type {kind}")
    if header_part is None or signature is None:
        raise bad("header part or signature missing")
    return SignedMessage(header_part, signature, body, tuple(ocsp))
