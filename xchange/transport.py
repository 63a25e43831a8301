"""The framing of signed messages between security servers (docs/protocol.md, "Frame").

A frame is the HTTP body of every message one security server sends another::

    magic      4 bytes   b"XCH1"
    sections   repeated  type (1 byte) | length (4 bytes, big-endian) | value
    body       type 0x00, no length: the message body runs to the end of the frame

Section types: ``0x01`` header part (canonical JSON, exactly one), ``0x02`` signature
(compact detached JWS, ASCII, exactly one), ``0x03`` OCSP response (DER, zero or more; stapled
by the sender for its certificates).  Unknown section types are refused: a peer speaking a
newer frame version must use another magic.

The body section comes last and has no length, so a frame is written and read as a stream:
the sender writes the sections (:func:`encode_frame_head`) and then the body as it reads it
from its spool; the receiver feeds what arrives to a :class:`FrameDecoder`, which parses the
sections (each at most 1 MiB) and hands back the body's bytes as they come, to be hashed and
spooled.  The signature covers the body's digest, so a sender has the whole body before it
writes the first byte, and a receiver trusts nothing before the last.

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
    "FrameDecoder",
    "FrameHead",
    "SignedMessage",
    "decode_frame",
    "encode_frame",
    "encode_frame_head",
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
class FrameHead:
    """Everything of a signed message but its body."""

    header_part: bytes
    signature: str
    ocsp_responses: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class SignedMessage:
    header_part: bytes
    signature: str
    body: bytes
    ocsp_responses: tuple[bytes, ...] = ()

    @property
    def head(self) -> FrameHead:
        return FrameHead(self.header_part, self.signature, self.ocsp_responses)


def encode_frame_head(head: FrameHead) -> bytes:
    """The frame up to and including the body section's type byte: the body follows."""
    sig = head.signature.encode("ascii")
    parts = [MAGIC, _LEN.pack(_HEADER_PART, len(head.header_part)), head.header_part]
    parts += [_LEN.pack(_SIGNATURE, len(sig)), sig]
    for resp in head.ocsp_responses:
        parts += [_LEN.pack(_OCSP, len(resp)), resp]
    parts.append(bytes([_BODY]))
    return b"".join(parts)


def encode_frame(message: SignedMessage) -> bytes:
    return encode_frame_head(message.head) + message.body


class FrameDecoder:
    """Decode a frame as it arrives (the h11 way: bytes in, events out, no I/O).

    :meth:`feed` takes the next bytes received and returns those of them that belong to the
    body (none until the sections are complete); :attr:`head` is set once they are.  At the
    end of the input, :meth:`finish` returns the head, or raises if the frame ended before
    its body section.  Malformed input raises :class:`BadRequestError` with ``code``, as soon
    as it is seen; section lengths are checked before their bytes are buffered, so a peer
    cannot make the decoder hold more than one section (1 MiB) at a time.
    """

    __slots__ = ("_buffer", "_code", "_header_part", "_ocsp", "_signature", "head")

    def __init__(self, *, code: str = "server.serverproxy.bad_request") -> None:
        self._code = code
        self._buffer = bytearray()
        self._header_part: bytes | None = None
        self._signature: str | None = None
        self._ocsp: list[bytes] = []
        self.head: FrameHead | None = None

    def feed(self, data: bytes) -> bytes:
        if self.head is not None:
            return data
        self._buffer += data
        return self._parse()

    def finish(self) -> FrameHead:
        if self.head is not None:
            return self.head
        rest = len(self._buffer) - len(MAGIC)  # what _parse left: one incomplete section
        if rest < 0:
            raise self._bad("wrong magic")
        if rest == 0:
            raise self._bad("no body section")
        if rest < _LEN.size:
            raise self._bad("truncated section header")
        raise self._bad("section length out of range")

    def _bad(self, why: str) -> BadRequestError:
        return BadRequestError(f"malformed message frame: {why}", code=self._code)

    def _parse(self) -> bytes:
        buf = self._buffer
        if len(buf) < len(MAGIC):
            if not MAGIC.startswith(bytes(buf)):
                raise self._bad("wrong magic")
            return b""
        if buf[:4] != MAGIC:
            raise self._bad("wrong magic")
        pos = 4
        while pos < len(buf):
            if buf[pos] == _BODY:
                if self._header_part is None or self._signature is None:
                    raise self._bad("header part or signature missing")
                self.head = FrameHead(self._header_part, self._signature, tuple(self._ocsp))
                body = bytes(buf[pos + 1:])
                self._buffer = bytearray()
                return body
            if pos + _LEN.size > len(buf):
                break
            kind, length = _LEN.unpack_from(buf, pos)
            if kind not in (_HEADER_PART, _SIGNATURE, _OCSP):
                raise self._bad(f"unknown section type {kind}")
            if length > _MAX_SECTION:
                raise self._bad("section length out of range")
            if pos + _LEN.size + length > len(buf):
                break
            start = pos + _LEN.size
            self._section(kind, bytes(buf[start:start + length]))
            pos = start + length
        del buf[4:pos]  # keep the magic: the next call parses from the same place
        return b""

    def _section(self, kind: int, value: bytes) -> None:
        if kind == _HEADER_PART:
            if self._header_part is not None:
                raise self._bad("two header parts")
            self._header_part = value
        elif kind == _SIGNATURE:
            if self._signature is not None:
                raise self._bad("two signatures")
            try:
                self._signature = value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise self._bad("signature is not ASCII") from exc
        else:
            self._ocsp.append(value)


def decode_frame(data: bytes, *, code: str = "server.serverproxy.bad_request") -> SignedMessage:
    """Decode a whole frame; malformed input raises BadRequestError with ``code``."""
    decoder = FrameDecoder(code=code)
    body = decoder.feed(data)
    head = decoder.finish()
    return SignedMessage(head.header_part, head.signature, body, head.ocsp_responses)
