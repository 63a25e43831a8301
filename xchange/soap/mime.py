"""MIME for SOAP messages: the ``Content-Type`` of a message and ``multipart/related``
packages of a SOAP part and its attachments (SOAP with Attachments; MTOM/XOP).

:func:`soap_part` finds the SOAP part of a message as PR-MESS 2.4 requires it: the whole body
for ``text/xml``; for ``multipart/related`` the *first* part (the ``start`` parameter, if
given, must name it), of type ``text/xml`` or -- MTOM -- ``application/xop+xml`` with
``type="text/xml"``, sent ``8bit`` (or ``7bit``/``binary``), never base64 or
quoted-printable.  Attachments are not decoded: the security servers carry the package as
received, byte for byte.

What it does not do: parse XML, decode attachments, or accept SOAP 1.2
(``application/soap+xml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import Final

from xchange.errors import BadRequestError

__all__ = [
    "END",
    "OTHER",
    "SOAP",
    "MediaType",
    "MimePart",
    "SoapPart",
    "SoapPartStream",
    "join_multipart",
    "parse_media_type",
    "soap_part",
    "split_multipart",
]

_CODE: Final = "client.invalid_content_type"
_MAX_HEADER: Final = 8 * 1024
_MAX_PARTS: Final = 1000
_SOAP_TYPES: Final = frozenset({"text/xml"})
_XOP: Final = "application/xop+xml"
_PLAIN_ENCODINGS: Final = frozenset({"", "8bit", "7bit", "binary"})


@dataclass(frozen=True, slots=True)
class MediaType:
    """A parsed ``Content-Type``: lower-cased media type and parameters (names lower-cased)."""

    value: str
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


def parse_media_type(header: str | None, *, code: str = _CODE) -> MediaType:
    if header is None or not header.strip():
        raise BadRequestError("the message has no Content-Type", code=code)
    if len(header) > _MAX_HEADER or not header.isprintable():
        raise BadRequestError("the Content-Type is too long or not printable", code=code)
    msg = Message()
    msg["content-type"] = header
    value = msg.get_content_type()
    if "/" not in header.split(";", 1)[0]:
        raise BadRequestError(f"malformed Content-Type {header!r}", code=code)
    params = tuple((str(k).lower(), str(v)) for k, v in msg.get_params(failobj=[])[1:])
    return MediaType(value, params)


@dataclass(frozen=True, slots=True)
class MimePart:
    headers: tuple[tuple[str, str], ...]
    """The part's MIME headers as received (names as sent)."""
    body: bytes

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)


_Span = tuple[tuple[tuple[str, str], ...], int, int]
"""A part of a multipart body: its headers and where its content starts and ends."""


@dataclass(frozen=True, slots=True)
class SoapPart:
    """Where the SOAP envelope of a message is.  Attachments are located, not copied: they
    are cut out of the message only when :attr:`parts` is asked for."""

    envelope: bytes
    """The bytes of the SOAP part (X-Road's request hash is computed over them)."""
    media_type: MediaType
    """The message's Content-Type."""
    message: bytes = b""
    spans: tuple[_Span, ...] = ()

    @property
    def is_multipart(self) -> bool:
        return bool(self.spans)

    @property
    def parts(self) -> tuple[MimePart, ...]:
        """For ``multipart/related``: every part, the SOAP part first; else empty."""
        return tuple(MimePart(h, self.message[s:e]) for h, s, e in self.spans)

    @property
    def attachments(self) -> tuple[MimePart, ...]:
        return self.parts[1:]


def _bad(message: str, code: str) -> BadRequestError:
    return BadRequestError(message, code=code)


def _parse_headers(block: bytes, code: str) -> tuple[tuple[str, str], ...]:
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError as exc:
        raise _bad("a MIME part header is not ASCII", code) from exc
    headers: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line[0] in " \t" and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise _bad(f"malformed MIME part header line {line[:80]!r}", code)
        headers.append((name.strip(), value.strip()))
    return tuple(headers)


def split_multipart(body: bytes, boundary: str, *, code: str = _CODE) -> tuple[MimePart, ...]:
    """The parts of a multipart body (RFC 2046 5.1); preamble and epilogue are ignored."""
    return tuple(MimePart(h, body[s:e]) for h, s, e in _spans(body, boundary, code))


def _spans(body: bytes, boundary: str, code: str, *,
           first_only: bool = False) -> tuple[_Span, ...]:
    if not 1 <= len(boundary) <= 70:
        raise _bad("the multipart boundary must be 1 to 70 characters", code)
    delim = b"--" + boundary.encode("ascii", "replace")
    # Every delimiter but a leading one is preceded by a line break, which belongs to it.
    if body.startswith(delim):
        pos = 0
    else:
        pos = body.find(b"\n" + delim)
        if pos < 0:
            raise _bad("the multipart body holds no boundary", code)
        pos += 1
    parts: list[_Span] = []
    while True:
        after = pos + len(delim)
        if body.startswith(b"--", after):
            break  # the close delimiter
        line_end = body.find(b"\n", after)
        if line_end < 0 or body[after:line_end].strip(b" \t\r"):
            raise _bad("malformed multipart boundary line", code)
        start = line_end + 1
        nxt = body.find(b"\n" + delim, start)
        if nxt < 0:
            raise _bad("the multipart body is not closed", code)
        end = nxt - 1 if nxt > start and body[nxt - 1:nxt] == b"\r" else nxt
        # Searched within the part's first bytes only: the content is never copied here.
        window = min(end, start + _MAX_HEADER + 4)
        head_end = body.find(b"\r\n\r\n", start, window)
        sep_len = 4
        if head_end < 0:
            head_end, sep_len = body.find(b"\n\n", start, window), 2
        if body.startswith((b"\r\n", b"\n"), start):  # a part without headers
            head_end, sep_len = start, 2 if body.startswith(b"\r\n", start) else 1
        if head_end < 0:
            raise _bad("a MIME part has no header block", code)
        parts.append((_parse_headers(body[start:head_end], code), head_end + sep_len, end))
        if len(parts) > _MAX_PARTS:
            raise _bad(f"more than {_MAX_PARTS} MIME parts", code)
        if first_only:
            break
        pos = nxt + 1
    if not parts:
        raise _bad("the multipart body has no parts", code)
    return tuple(parts)


def join_multipart(parts: tuple[MimePart, ...], boundary: str) -> bytes:
    """Serialise ``parts`` (headers as given) between ``boundary`` delimiters."""
    delim = b"--" + boundary.encode("ascii")
    out: list[bytes] = []
    for part in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in part.headers).encode("ascii")
        out += [delim, b"\r\n", head, b"\r\n", part.body, b"\r\n"]
    out += [delim, b"--\r\n"]
    return b"".join(out)


def _content_id(value: str | None) -> str | None:
    return None if value is None else value.strip().removeprefix("<").removesuffix(">")


def soap_part(body: bytes, content_type: str | None, *, code: str = _CODE,
              head_only: bool = False) -> SoapPart:
    """Find the SOAP part of a message with ``content_type`` (module docstring).

    ``head_only``: ``body`` is only the first bytes of a larger message (the rest stays in a
    spool).  A ``multipart/related`` message's SOAP part must then end within them (its
    attachments are neither located nor checked here: they are carried as received); a
    ``text/xml`` message is refused, as its envelope is not all here."""
    media = parse_media_type(content_type, code=code)
    _check_charset(media, code)
    if media.value in _SOAP_TYPES:
        if head_only:
            raise _bad(f"the SOAP envelope is larger than the {len(body)} bytes accepted",
                       code)
        return SoapPart(body, media)
    boundary = _boundary(media, code)
    try:
        spans = _spans(body, boundary, code, first_only=head_only)
    except BadRequestError as exc:
        if head_only and exc.message == "the multipart body is not closed":
            raise _bad(f"the SOAP part is larger than the {len(body)} bytes accepted",
                       code) from exc
        raise
    first = MimePart(spans[0][0], body[spans[0][1]:spans[0][2]])
    _check_first_part(media, first.headers, code)
    return SoapPart(first.body, media, body, spans)  # head_only: the first span alone


def _boundary(media: MediaType, code: str) -> str:
    """The boundary of a message that is not ``text/xml``: it must be multipart/related."""
    if media.value != "multipart/related":
        raise _bad(f"Content-Type {media.value} is not text/xml or multipart/related "
                   "(SOAP 1.1)", code)
    boundary = media.param("boundary")
    if not boundary:
        raise _bad("multipart/related without a boundary", code)
    return boundary


def _check_first_part(media: MediaType, headers: tuple[tuple[str, str], ...],
                      code: str) -> None:
    """The SOAP part of a ``multipart/related`` message (module docstring), by its headers."""
    first = MimePart(headers, b"")
    start = _content_id(media.param("start"))
    if start is not None and _content_id(first.header("Content-ID")) != start:
        raise _bad("the SOAP part must be the first part of the message", code)
    part_type = parse_media_type(first.header("Content-Type") or "text/xml", code=code)
    _check_charset(part_type, code)
    if part_type.value == _XOP:
        inner = (part_type.param("type") or media.param("start-info") or "text/xml").lower()
        if inner not in _SOAP_TYPES:
            raise _bad(f"the MTOM root part holds {inner}, not a SOAP 1.1 envelope", code)
    elif part_type.value not in _SOAP_TYPES:
        raise _bad(f"the first part is {part_type.value}, not the SOAP envelope", code)
    encoding = (first.header("Content-Transfer-Encoding") or "").strip().lower()
    if encoding not in _PLAIN_ENCODINGS:
        raise _bad(f"the SOAP part must be sent 8bit, not {encoding}", code)


SOAP: Final = "soap"
"""A piece of the SOAP part (:class:`SoapPartStream`)."""
OTHER: Final = "other"
"""A piece of the message outside the SOAP part: MIME headers, boundaries, attachments."""
END: Final = "end"
"""The SOAP part has ended (an empty piece)."""
_FRONT_LIMIT: Final = 64 * 1024


class SoapPartStream:
    """:func:`soap_part` for a message given piece by piece, never held whole: tells the
    bytes of its SOAP part from the rest, in order.  :meth:`feed` and :meth:`close` return
    ``(kind, bytes)`` pieces: :data:`SOAP`, :data:`OTHER` and once :data:`END`.

    The same rules as :func:`soap_part` for the message's and the SOAP part's types; the
    first boundary and the SOAP part's MIME headers must come within the first 64 KiB.  The
    SOAP part ends at the first boundary after it; what follows (the attachments) is passed
    on as it is, not checked further -- the security servers carry it byte for byte."""

    def __init__(self, content_type: str | None, *, code: str = _CODE) -> None:
        self._code = code
        self._media = media = parse_media_type(content_type, code=code)
        _check_charset(media, code)
        self._buf = b""
        self._delim = b""
        if media.value in _SOAP_TYPES:
            self._state = SOAP
            return
        boundary = _boundary(media, code)
        if not 1 <= len(boundary) <= 70:
            raise _bad("the multipart boundary must be 1 to 70 characters", code)
        self._delim = b"\n--" + boundary.encode("ascii", "replace")
        self._state = "front"

    @property
    def passing(self) -> bool:
        """Past the SOAP part: everything further is :data:`OTHER`."""
        return self._state == OTHER

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        if self._state == OTHER:
            return [(OTHER, data)] if data else []
        if not self._delim:  # text/xml: the whole message
            return [(SOAP, data)] if data else []
        self._buf += data
        out: list[tuple[str, bytes]] = []
        if self._state == "front":
            front = self._front()
            if front is None:
                if len(self._buf) > _FRONT_LIMIT:
                    raise _bad("the SOAP part's MIME headers do not end within the first "
                               f"{_FRONT_LIMIT} bytes", self._code)
                return out
            out.append((OTHER, front))
        end = self._buf.find(self._delim)
        if end < 0:  # the last bytes may begin the boundary (and the CR before it)
            keep = len(self._delim) + 1
            if len(self._buf) > keep:
                out.append((SOAP, self._buf[:-keep]))
                self._buf = self._buf[-keep:]
            return out
        cut = end - 1 if end > 0 and self._buf[end - 1:end] == b"\r" else end
        if cut:
            out.append((SOAP, self._buf[:cut]))
        out += [(END, b""), (OTHER, self._buf[cut:])]
        self._buf, self._state = b"", OTHER
        return out

    def close(self) -> list[tuple[str, bytes]]:
        if self._state == OTHER:
            return []
        if not self._delim:
            return [(END, b"")]
        if self._state == "front":
            raise _bad("the multipart body holds no SOAP part", self._code)
        raise _bad("the multipart body is not closed", self._code)

    def _front(self) -> bytes | None:
        """The bytes up to the SOAP part's content, once all here (its headers checked)."""
        buf, delim = self._buf, self._delim[1:]
        if buf.startswith(delim):
            pos = 0
        else:
            pos = buf.find(b"\n" + delim)
            if pos < 0:
                return None
            pos += 1
        after = pos + len(delim)
        line_end = buf.find(b"\n", after)
        if line_end < 0:
            return None
        if buf[after:line_end].strip(b" \t\r"):
            raise _bad("malformed multipart boundary line", self._code)
        start = line_end + 1
        if buf.startswith((b"\r\n", b"\n"), start):  # a part without headers
            head_end = start
            sep = 2 if buf.startswith(b"\r\n", start) else 1
        else:
            head_end, sep = buf.find(b"\r\n\r\n", start), 4
            if head_end < 0:
                head_end, sep = buf.find(b"\n\n", start), 2
            if head_end < 0:
                return None
        if head_end - start > _MAX_HEADER:
            raise _bad("a MIME part header is too long", self._code)
        _check_first_part(self._media, _parse_headers(buf[start:head_end], self._code),
                          self._code)
        self._state = SOAP
        front, self._buf = buf[:head_end + sep], buf[head_end + sep:]
        return front


def _check_charset(media: MediaType, code: str) -> None:
    charset = (media.param("charset") or "utf-8").lower()
    if charset not in ("utf-8", "utf8", "us-ascii"):
        raise _bad(f"charset {charset} is not supported: send UTF-8", code)
