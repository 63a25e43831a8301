"""The X-Road Message Protocol 4.0 (PR-MESS): SOAP 1.1 envelopes with the X-Road headers.

What this module does, all on bytes already received:

* :func:`parse_request` -- an information system's request, refused unless it is a SOAP 1.1
  envelope (parsed by :func:`xchange.soap.xml.parse_xml`: no DOCTYPE, entities, network,
  deep nesting) whose X-Road header fields (PR-MESS 2.2) each validate against
  ``schemas/xroad-soap-4.0.xsd``, appear at most once, include ``client``, ``service``,
  ``id`` and ``protocolVersion`` 4.x, and whose body holds exactly one element named after
  the service code (PR-MESS 2.3).  The result is a :class:`SoapRequest`, the typed form of
  those headers that travels between the security servers as the signed *header part*;
* :func:`check_request_body` -- the provider's check that the envelope it received says
  what the signed header part says;
* :func:`finish_response` -- the provider's treatment of its system's answer: a fault
  passes untouched; anything else must copy the request's X-Road header fields in order
  (PR-MESS 2.2) and gets ``requestHash`` with its ``algorithmId``;
* :func:`check_response` -- the consumer's check of that ``requestHash``;
* :func:`fault_envelope` -- an X-Road SOAP fault (PR-MESS 2.5, Annex D.1).

What it does not do: sockets, signing, access decisions, or central services.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Self, TypeVar

from lxml import etree

from schemas import schema_file
from xchange.canonical import canonical_json
from xchange.errors import (
    BadRequestError,
    ClientProxyError,
    InvalidSignatureError,
    ServerProxyError,
)
from xchange.identifiers import NS_XROAD, ClientId, SecurityServerId, ServiceId
from xchange.rest import _bad_part, _load_header_part, _opt_str, _str
from xchange.soap.mime import (
    OTHER,
    SOAP,
    SoapPartStream,
    parse_media_type,
    soap_part,
    soap_part_pieces,
)
from xchange.soap.xml import ElementSpans, XmlFeed, parse_xml

__all__ = [
    "HASH_ALGORITHMS",
    "MAX_REQUEST_HEAD",
    "MAX_RESPONSE_HEAD",
    "NS_REPRESENTATION",
    "NS_SOAP_ENV",
    "SHA512",
    "ParsedEnvelope",
    "RequestEcho",
    "ResponseStream",
    "SoapRequest",
    "check_request_body",
    "check_response",
    "check_soap_action",
    "fault_envelope",
    "finish_response",
    "parse_envelope",
    "parse_hashed_request",
    "parse_request",
    "soap_request_hash",
    "stamp_response",
]

NS_SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
NS_SOAP12_ENV: Final = "http://www.w3.org/2003/05/soap-envelope"
NS_REPRESENTATION: Final = "http://x-road.eu/xsd/representation.xsd"
SHA512: Final = "http://www.w3.org/2001/04/xmlenc#sha512"
HASH_ALGORITHMS: Final = {
    SHA512: "sha512",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
}
"""XML-DSIG URIs of the hash algorithms a ``requestHash/@algorithmId`` may name."""

_T = TypeVar("_T")
_TYPE: Final = "xchange-soap-request"
_KEYS: Final = frozenset({"type", "v", "id", "client", "service", "service_version",
                          "user_id", "issue",
                          "security_server", "represented_party", "content_type",
                          "soap_action"})
_FIELDS: Final = {
    NS_XROAD: ("client", "service", "centralService", "id", "userId", "issue",
               "protocolVersion", "requestHash", "securityServer"),
    NS_REPRESENTATION: ("representedParty",),
}
_MANDATORY: Final = ("client", "service", "id", "protocolVersion")
_PROTOCOL: Final = re.compile(r"4\.[0-9]+")
_SOAP_ACTION: Final = re.compile(r'"[^"\\\x00-\x1f\x7f]{0,1024}"')


@cache
def _schema() -> etree.XMLSchema:
    """The X-Road header schema (with its imports), from ``schemas/`` only."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(schema_file("xroad-soap-4.0.xsd")), parser))


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


@dataclass(frozen=True, slots=True)
class ParsedEnvelope:
    """A SOAP 1.1 envelope: its root, optional header and the body's single element or fault."""

    root: etree._Element
    header: etree._Element | None
    body: etree._Element
    content: etree._Element
    """The body's one element: the wrapper of a request or response, or ``Fault``."""

    @property
    def is_fault(self) -> bool:
        return self.content.tag == _q(NS_SOAP_ENV, "Fault")

    def xroad_fields(self) -> list[etree._Element]:
        """The X-Road header fields, in document order."""
        return [] if self.header is None else _xroad_children(self.header)


MAX_REQUEST_HEAD: Final = 1024 * 1024
"""The most of a SOAP request given in pieces that may come before its Body's element
(1 MiB, checked as each piece passes): the Header, which is kept in memory."""


def parse_envelope(data: bytes | Iterable[bytes], *, max_bytes: int,
                   code: str = "client.invalid_soap") -> ParsedEnvelope:
    """Parse ``data`` as a SOAP 1.1 envelope: ``Envelope``, optional ``Header``, ``Body``
    with exactly one element.  Given in pieces, the envelope is parsed as they pass
    (:class:`xchange.soap.xml.XmlFeed`) and only the Header -- which must end, and the Body's
    element begin, within :data:`MAX_REQUEST_HEAD` bytes -- and the name of the Body's
    element are kept."""
    if isinstance(data, bytes):
        return _envelope_of(parse_xml(data, max_bytes=max_bytes, code=code,
                                      what="SOAP message"), code)
    feed = XmlFeed(max_bytes=max_bytes, code=code, what="SOAP message",
                   prune=_q(NS_SOAP_ENV, "Body"))
    begun = False
    for piece in data:
        feed.feed(piece)
        begun = begun or _body_element(feed.root) is not None
        if not begun and feed.size > MAX_REQUEST_HEAD:
            raise BadRequestError("the SOAP message's Body does not begin within its first "
                                  f"{MAX_REQUEST_HEAD} bytes", code=code)
    return _envelope_of(feed.close(), code)


def _body_element(root: etree._Element | None) -> etree._Element | None:
    """The element of the envelope's Body (as far as it was parsed), once its start tag was
    read."""
    for child in () if root is None else root:
        if child.tag == _q(NS_SOAP_ENV, "Body"):
            return next((c for c in child if isinstance(c.tag, str)), None)
    return None


def _envelope_of(root: etree._Element, code: str) -> ParsedEnvelope:
    """``root`` as a SOAP 1.1 envelope (:func:`parse_envelope`), or refused with ``code``."""
    if root.tag == _q(NS_SOAP12_ENV, "Envelope"):
        raise BadRequestError("SOAP 1.2 is not supported: send a SOAP 1.1 envelope",
                              code=code)
    if root.tag != _q(NS_SOAP_ENV, "Envelope"):
        raise BadRequestError(f"the root element {root.tag} is not a SOAP 1.1 Envelope",
                              code=code)
    children = [c for c in root if isinstance(c.tag, str)]
    header = children[0] if children and children[0].tag == _q(NS_SOAP_ENV, "Header") \
        else None
    rest = children[1:] if header is not None else children
    if len(rest) != 1 or rest[0].tag != _q(NS_SOAP_ENV, "Body"):
        raise BadRequestError("the Envelope must hold an optional Header, then one Body and "
                              "nothing else", code=code)
    body = rest[0]
    content = [c for c in body if isinstance(c.tag, str)]
    if len(content) != 1:
        held = "no element" if not content else "more than one element"
        raise BadRequestError(f"the SOAP Body holds {held}, not one",
                              code="client.invalid_body" if code.startswith("client.")
                              else code)
    return ParsedEnvelope(root, header, body, content[0])


def _fields(env: ParsedEnvelope, *, validate: bool = True) -> dict[str, etree._Element]:
    """The X-Road header fields by local name: each validated against the XSD (unless not
    ``validate``: then only as the identifiers are read), none twice."""
    if env.header is None:
        raise BadRequestError("the SOAP message has no Header with the X-Road fields",
                              code="client.missing_header")
    schema = _schema() if validate else None
    found: dict[str, etree._Element] = {}
    for elem in env.xroad_fields():
        qname = etree.QName(elem)
        name = qname.localname
        if name not in _FIELDS[qname.namespace or ""]:
            raise BadRequestError(f"unknown X-Road header field {name}",
                                  code="client.invalid_header")
        if name in found:
            raise BadRequestError(f"the X-Road header field {name} appears twice",
                                  code="client.duplicate_header")
        try:
            if schema is not None:
                schema.assertValid(etree.ElementTree(_detached(elem)))
        except etree.DocumentInvalid as exc:
            why = str(exc)
            if name == "protocolVersion":
                raise BadRequestError(f"protocolVersion must be 4.x: {why}",
                                      code="client.invalid_protocol_version") from exc
            raise BadRequestError(f"X-Road header field {name}: {why}",
                                  code="client.invalid_header") from exc
        found[name] = elem
    for name in _MANDATORY:
        if name not in found:
            if name == "service" and "centralService" in found:
                raise BadRequestError("central services are not supported: name the service",
                                      code="client.invalid_header")
            raise BadRequestError(f"the X-Road header field {name} is missing",
                                  code="client.missing_header")
    if "centralService" in found:
        raise BadRequestError("central services are not supported", code="client.invalid_header")
    return found


def _detached(elem: etree._Element) -> etree._Element:
    """A copy of ``elem`` as the root of its own document (for schema validation)."""
    copy = etree.fromstring(etree.tostring(elem),
                            etree.XMLParser(resolve_entities=False, no_network=True))
    return copy


def _text(elem: etree._Element | None) -> str | None:
    return None if elem is None else (elem.text or "").strip()


def _represented_party(elem: etree._Element | None) -> str | None:
    """``partyClass/partyCode`` (or ``partyCode`` alone) of the representedParty field."""
    if elem is None:
        return None
    code = _text(elem.find(_q(NS_REPRESENTATION, "partyCode")))
    klass = _text(elem.find(_q(NS_REPRESENTATION, "partyClass")))
    return f"{klass}/{code}" if klass else code


def check_soap_action(value: str | None) -> str | None:
    """The SOAPAction header as received: absent, or a quoted string (SOAP 1.1 6.1.1)."""
    if value is None:
        return None
    if not _SOAP_ACTION.fullmatch(value.strip()):
        raise BadRequestError(f"malformed SOAPAction header {value[:80]!r}: it must be quoted",
                              code="client.invalid_soap_action")
    return value.strip()


@dataclass(frozen=True, slots=True)
class SoapRequest:
    """One X-Road SOAP request as the security servers see it: the typed X-Road headers and
    the HTTP headers that are passed on (PR-MESS 2.2: ``Content-Type`` and ``SOAPAction``).
    The message itself (envelope and attachments) is the body that travels with it."""

    message_id: str
    client: ClientId
    service: ServiceId
    content_type: str
    soap_action: str | None = None
    user_id: str | None = None
    issue: str | None = None
    security_server: SecurityServerId | None = None
    represented_party: str | None = None

    method = "POST"
    """What access rules see: a SOAP service is granted as a whole."""
    path = ""

    def header_part(self) -> bytes:
        """The canonical bytes signed and logged for this request (docs/protocol.md)."""
        return canonical_json({
            "type": _TYPE, "v": 1, "id": self.message_id, "client": str(self.client),
            "service": str(self.service), "service_version": self.service.version,
            "user_id": self.user_id, "issue": self.issue,
            "security_server": None if self.security_server is None
            else str(self.security_server),
            "represented_party": self.represented_party, "content_type": self.content_type,
            "soap_action": self.soap_action,
        })

    @classmethod
    def from_header_part(cls, data: bytes, *, parsed: object = None) -> Self:
        """Parse a header part received from a peer security server (``parsed``: its
        :func:`~xchange.canonical.parse_json`, if the caller has it already)."""
        doc = _load_header_part(data, _TYPE, _KEYS, parsed)
        try:
            ss = doc["security_server"]
            service = ServiceId.parse(_str(doc, "service"))
            version = _opt_str(doc, "service_version")
            req = cls(
                message_id=_str(doc, "id"), client=ClientId.parse(_str(doc, "client")),
                service=service if version is None
                else ServiceId(service.provider, service.code, version),
                content_type=_str(doc, "content_type"),
                soap_action=_opt_str(doc, "soap_action"), user_id=_opt_str(doc, "user_id"),
                issue=_opt_str(doc, "issue"),
                security_server=None if ss is None else SecurityServerId.parse(ss),
                represented_party=_opt_str(doc, "represented_party"),
            )
            check_soap_action(req.soap_action)
            parse_media_type(req.content_type)
        except TypeError as exc:
            raise _bad_part(f"request header part: {exc}") from exc
        except BadRequestError as exc:
            raise _bad_part(f"request header part: {exc.message}") from exc
        return req


def parse_request(body: bytes | Iterable[bytes], content_type: str | None,
                  soap_action: str | None, *, max_bytes: int) -> SoapRequest:
    """Parse and check an information system's SOAP request (module docstring).  A message
    may be given in pieces: its SOAP part is parsed as they pass (:func:`parse_envelope`),
    its attachments are not read (:func:`xchange.soap.mime.soap_part_pieces`)."""
    return _parse_request(body, content_type, soap_action, max_bytes=max_bytes)[0]


class _Hashed:
    """Pieces passed on as they come, hashed: the ``requestHash`` (SHA-512) of them all."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces, self._sha512 = pieces, hashlib.sha512()

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._pieces:
            self._sha512.update(piece)
            yield piece

    @property
    def request_hash(self) -> str:
        return base64.b64encode(self._sha512.digest()).decode("ascii")


def _parse_request(body: bytes | Iterable[bytes], content_type: str | None,
                   soap_action: str | None, *, max_bytes: int, hashed: bool = False
                   ) -> tuple[SoapRequest, ParsedEnvelope, bytes | _Hashed | None]:
    """:func:`parse_request`, with the envelope and the SOAP part's bytes (given as bytes)
    or (given in pieces, ``hashed``) their hash."""
    action = check_soap_action(soap_action)
    part: bytes | _Hashed | None
    if isinstance(body, bytes):
        part = soap_part(body, content_type).envelope
        envelope: bytes | Iterable[bytes] = part or b""
    else:
        pieces = soap_part_pieces(body, content_type)
        part = _Hashed(pieces) if hashed else None
        envelope = pieces if part is None else part
    env = parse_envelope(envelope, max_bytes=max_bytes)
    if env.is_fault:
        raise BadRequestError("a request must not be a SOAP Fault", code="client.invalid_body")
    assert content_type is not None  # soap_part refused a message without one
    req = _request_from_fields(_fields(env), content_type.strip(), action)
    wrapper = etree.QName(env.content).localname
    if wrapper != req.service.code:
        raise BadRequestError(
            f"the body's wrapper element {wrapper} is not named after the service code "
            f"{req.service.code}", code="client.invalid_body")
    return req, env, part


def _request_from_fields(fields: dict[str, etree._Element], content_type: str,
                         soap_action: str | None) -> SoapRequest:
    client = ClientId.from_xml(fields["client"])
    service = ServiceId.from_xml(fields["service"])
    if service.provider.subsystem is None:
        raise BadRequestError("a service's provider must be a subsystem",
                              code="client.invalid_service_identifier")
    server = fields.get("securityServer")
    return SoapRequest(
        message_id=_text(fields["id"]) or "", client=client, service=service,
        content_type=content_type, soap_action=soap_action,
        user_id=_text(fields.get("userId")), issue=_text(fields.get("issue")),
        security_server=None if server is None else SecurityServerId.from_xml(server),
        represented_party=_represented_party(fields.get("representedParty")),
    )


@dataclass(frozen=True, slots=True)
class RequestEcho:
    """What the provider's answer to a request must carry: the request's X-Road header
    fields (to be copied, PR-MESS 2.2) and its ``requestHash`` (SHA-512, base64)."""

    fields: tuple[tuple[object, ...], ...]
    request_hash: str


def check_request_body(req: SoapRequest, body: bytes | Iterable[bytes], *, max_bytes: int,
                       request_hash: str | None = None) -> RequestEcho:
    """The provider's check that the SOAP message it received is the one the signed header
    part describes; raise ``server.serverproxy.bad_request`` otherwise.  Returns what the
    answer must echo.  A message given in pieces may come with its ``request_hash``
    (SHA-512: a ``text/xml`` message's, taken as it arrived); else its SOAP part is hashed
    as it is parsed."""
    try:
        seen, env, part = _parse_request(body, req.content_type, req.soap_action,
                                         max_bytes=max_bytes, hashed=request_hash is None)
    except BadRequestError as exc:
        raise _bad_part(f"the SOAP message is not acceptable: {exc.message}") from exc
    if seen != req:
        raise _bad_part("the SOAP message's X-Road headers differ from the signed header part")
    if isinstance(part, bytes):
        request_hash = soap_request_hash(part)
    elif part is not None:
        request_hash = part.request_hash
    assert request_hash is not None
    return RequestEcho(tuple(_echoed(env.xroad_fields())), request_hash)


def parse_hashed_request(message: Iterable[bytes], content_type: str | None,
                         soap_action: str | None, *, max_bytes: int) -> tuple[SoapRequest, str]:
    """:func:`parse_request` of a message given in pieces, and its ``requestHash``
    (SHA-512): the SOAP part's bytes, hashed as they are parsed -- one read of them (the
    attachments are not read, :func:`xchange.soap.mime.soap_part_pieces`)."""
    req, _env, part = _parse_request(message, content_type, soap_action,
                                     max_bytes=max_bytes, hashed=True)
    assert isinstance(part, _Hashed)  # the parse read the SOAP part to its end
    return req, part.request_hash


def soap_request_hash(envelope: bytes, algorithm: str = SHA512) -> str:
    """``requestHash``: the base64 hash of the request's SOAP part bytes (PR-MESS 2.2)."""
    return base64.b64encode(hashlib.new(HASH_ALGORITHMS[algorithm], envelope).digest()
                            ).decode("ascii")


def _shape(elem: etree._Element) -> tuple[object, ...]:
    """A header field's content with namespace prefixes abstracted away."""
    return (elem.tag, tuple(sorted(elem.attrib.items())), (elem.text or "").strip(),
            tuple(_shape(c) for c in elem if isinstance(c.tag, str)))


def _echoed(fields: Iterable[etree._Element]) -> list[tuple[object, ...]]:
    return [_shape(f) for f in fields if etree.QName(f).localname != "requestHash"]


_INCONSISTENT: Final = "server.serverproxy.inconsistent_response"


def _inconsistent(why: str) -> ServerProxyError:
    return ServerProxyError(f"the provider system's SOAP response {why}", code=_INCONSISTENT)


MAX_RESPONSE_HEAD: Final = 1024 * 1024
"""The most of a SOAP answer's SOAP part that may come before its Body's element (1 MiB):
what the provider's security server holds to rewrite the Header (:class:`ResponseStream`)."""


class ResponseStream:
    """A SOAP answer given piece by piece, never held whole: checked as it passes and, at the
    provider (``echo`` given), stamped with ``requestHash`` -- :meth:`feed` and
    :meth:`close` return the bytes to sign and send.

    * Its ``Content-Type`` and MIME structure as :func:`soap_part` requires
      (:class:`xchange.soap.mime.SoapPartStream`); attachments pass untouched.
    * The SOAP part through the hardened parser (:class:`xchange.soap.xml.XmlFeed`: no
      DOCTYPE, entities, processing instructions, deep nesting; at most ``max_bytes``); of
      its Body only the name of its element is kept; then the envelope's structure
      (:func:`parse_envelope`).
    * At the provider, everything up to the start of the Body's element (at most
      :data:`MAX_RESPONSE_HEAD` bytes) is held back: a fault then passes untouched; else
      the X-Road header fields must copy the request's (``server.serverproxy.
      inconsistent_response``), every ``requestHash`` in them is cut out and one is
      inserted after the last field (:class:`xchange.soap.xml.ElementSpans` says where) --
      every other byte as the provider system sent it.  The rest then passes as it comes.

    Anything refused is a :class:`~xchange.errors.BadRequestError` with ``code`` (or, at
    the provider, the ``ServerProxyError`` above).  After :meth:`close`, :attr:`envelope`
    is the (pruned) envelope."""

    def __init__(self, content_type: str | None, *, max_bytes: int,
                 code: str = _INCONSISTENT, echo: RequestEcho | None = None,
                 head_limit: int = MAX_RESPONSE_HEAD) -> None:
        self._code, self._echo, self._head_limit = code, echo, head_limit
        self._parts = self._guard(SoapPartStream, content_type, code=code)
        self._xml = XmlFeed(max_bytes=max_bytes, code=code, what="SOAP message",
                            prune=_q(NS_SOAP_ENV, "Body"))
        self._held: bytearray | None = bytearray() if echo is not None else None
        self._spans = ElementSpans(3)
        self._decided = False
        self.envelope: ParsedEnvelope | None = None

    @property
    def passing(self) -> bool:
        """Everything further is passed on unchanged, unread (attachments)."""
        return self._parts.passing and self.envelope is not None

    def feed(self, data: bytes) -> bytes:
        return self._guard(self._run, self._parts.feed, data)

    def close(self) -> bytes:
        out = self._guard(self._run, self._parts.close)
        assert self.envelope is not None
        return out

    def _guard(self, step: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``step``; at the provider, a refusal is the provider system's inconsistency."""
        try:
            return step(*args, **kwargs)
        except BadRequestError as exc:
            if self._echo is None:
                raise
            raise _inconsistent(f"is not a SOAP 1.1 message: {exc.message}") from exc

    def _run(self, split: Callable[..., list[tuple[str, bytes]]], *args: bytes) -> bytes:
        out: list[bytes] = []
        for kind, piece in split(*args):
            if kind == SOAP:
                piece = self._soap(piece)
            elif kind != OTHER:
                piece = self._end()
            if self._echo is not None:
                out.append(piece)
        return b"".join(out)

    def _soap(self, piece: bytes) -> bytes:
        self._xml.feed(piece)
        if self._decided:
            return piece
        if self._held is not None:
            self._held += piece
            self._scan()
        if _body_element(self._xml.root) is not None:
            return self._decide()
        if self._xml.size > self._head_limit:
            raise BadRequestError("the SOAP message's Body does not begin within its first "
                                  f"{self._head_limit} bytes", code=self._code)
        return b""

    def _scan(self) -> None:
        assert self._held is not None
        try:
            self._spans.scan(self._held)
        except ValueError as exc:
            raise BadRequestError(f"SOAP message: {exc}", code=self._code) from exc

    def _end(self) -> bytes:
        env = _envelope_of(self._xml.close(), self._code)
        out = b"" if self._decided else self._decide()
        self.envelope = env
        return out

    def _decide(self) -> bytes:
        """The held bytes, passed on as they are (a fault; the consumer's check: nothing)
        or with the Header stamped."""
        self._decided = True
        held, self._held = self._held, None
        content = _body_element(self._xml.root)
        if held is None or content is None:  # checking only; or _end refuses it
            return b"" if held is None else bytes(held)
        if content.tag == _q(NS_SOAP_ENV, "Fault"):
            return bytes(held)  # faults pass untouched
        assert self._echo is not None
        root = self._xml.root
        assert root is not None
        first = next((c for c in root if isinstance(c.tag, str)), None)
        header = first if first is not None and first.tag == _q(NS_SOAP_ENV, "Header") \
            else None
        fields = [] if header is None else _xroad_children(header)
        if header is None or _echoed(fields) != list(self._echo.fields):
            raise _inconsistent("does not copy the request's X-Road header fields in order")
        return self._stamp(bytes(held), header)

    def _stamp(self, held: bytes, header: etree._Element) -> bytes:
        """``held`` with every ``requestHash`` of the Header cut out and ours inserted after
        the last X-Road field."""
        kids = [c for c in header if isinstance(c.tag, str)]
        outer = next((s for s in self._spans.spans if s.depth == 2), None)  # the Header
        spans = [] if outer is None else [s for s in self._spans.spans
                                          if s.depth == 3 and outer.start < s.start < outer.end]
        if (outer is None or len(spans) != len(kids)
                or any(s.name.rsplit(":", 1)[-1] != etree.QName(k).localname
                       for s, k in zip(spans, kids, strict=True))):
            raise _inconsistent("could not be read: its Header's elements were not found")
        edits: list[tuple[int, int, bytes]] = []
        last: int | None = None
        indent = b""
        for span, kid in zip(spans, kids, strict=True):
            if etree.QName(kid).namespace not in _FIELDS:
                continue
            if etree.QName(kid).localname == "requestHash":
                edits.append((span.start, span.end, b""))
            else:
                last = span.end
                before = held.rfind(b">", 0, span.start) + 1
                indent = held[before:span.start] if not held[before:span.start].strip() \
                    else b""
        assert last is not None  # the request's fields are mandatory, so echoed
        assert self._echo is not None
        edits.append((last, last, indent + _stamp_element(header, self._echo.request_hash)))
        out, pos = [], 0
        for start, end, text in sorted(edits):
            out += [held[pos:start], text]
            pos = end
        out.append(held[pos:])
        return b"".join(out)


def _xroad_children(header: etree._Element) -> list[etree._Element]:
    return [c for c in header
            if isinstance(c.tag, str) and etree.QName(c).namespace in _FIELDS]


def _stamp_element(header: etree._Element, request_hash: str) -> bytes:
    """``requestHash`` with its ``algorithmId``, under a prefix the Header has in scope for
    the X-Road namespace, or declaring one."""
    prefix = next((p for p, uri in header.nsmap.items() if uri == NS_XROAD), "")
    if prefix == "":
        name, declare = "xrd:requestHash", f' xmlns:xrd="{NS_XROAD}"'
    else:
        name, declare = ("requestHash" if prefix is None else f"{prefix}:requestHash"), ""
    return (f'<{name}{declare} algorithmId="{SHA512}">{request_hash}</{name}>'
            ).encode("ascii")


def finish_response(request_body: bytes | Iterable[bytes], request_content_type: str,
                    response_body: bytes, response_content_type: str | None, *,
                    max_bytes: int, request_hash: str | None = None) -> bytes:
    """The provider side's treatment of a SOAP answer in memory (:class:`ResponseStream`,
    which streams it): return the bytes to sign and send, or raise
    ``server.serverproxy.inconsistent_response``.  A ``text/xml`` request may be given in
    pieces, with its ``request_hash`` (SHA-512)."""
    if isinstance(request_body, bytes):
        asked = soap_part(request_body, request_content_type).envelope
        request_hash = soap_request_hash(asked)
        env = parse_envelope(asked, max_bytes=max_bytes)
    else:
        assert request_hash is not None, "a request given in pieces comes with its hash"
        env = parse_envelope(request_body, max_bytes=max_bytes)
    echo = RequestEcho(tuple(_echoed(env.xroad_fields())), request_hash)
    return stamp_response(echo, response_body, response_content_type, max_bytes=max_bytes)


def stamp_response(echo: RequestEcho, response_body: bytes,
                   response_content_type: str | None, *, max_bytes: int) -> bytes:
    """:class:`ResponseStream` over an answer in memory: the bytes to sign and send (a fault:
    ``response_body`` itself)."""
    stream = ResponseStream(response_content_type, max_bytes=max_bytes, echo=echo)
    out = stream.feed(response_body) + stream.close()
    return response_body if out == response_body else out


def check_response(req: SoapRequest, request_body: bytes | None,
                   response_body: bytes | Iterable[bytes],
                   response_content_type: str | None, *, max_bytes: int,
                   request_hash: str | None = None) -> None:
    """The consumer's check of a SOAP response, given whole or in pieces
    (:class:`ResponseStream`, not held whole): a fault passes; anything else must carry the
    ``requestHash`` of the request it sent (else ``server.clientproxy.
    invalid_request_hash``) and X-Road header fields that say what the request said (else
    ``server.clientproxy.inconsistent_response``).  Instead of the request, its
    ``request_hash`` (SHA-512) may be given: then only a SHA-512 ``requestHash`` is
    accepted."""
    code = "server.clientproxy.invalid_request_hash"
    try:
        if isinstance(response_body, bytes):  # in memory: parsed whole, as it is cheaper
            part = soap_part(response_body, response_content_type, code=code)
            env = parse_envelope(part.envelope, max_bytes=max_bytes, code=code)
        else:
            stream = ResponseStream(response_content_type, max_bytes=max_bytes, code=code)
            for piece in response_body:
                stream.feed(piece)
            stream.close()
            assert stream.envelope is not None
            env = stream.envelope
    except BadRequestError as exc:
        raise InvalidSignatureError(f"the SOAP response cannot be read: {exc.message}",
                                    code=code) from exc
    if env.is_fault:
        return
    stamps = [f for f in env.xroad_fields() if etree.QName(f).localname == "requestHash"]
    if len(stamps) != 1:
        raise InvalidSignatureError("the SOAP response carries no single requestHash", code=code)
    algorithm = stamps[0].get("algorithmId") or ""
    if algorithm not in HASH_ALGORITHMS:
        raise InvalidSignatureError(f"requestHash algorithm {algorithm!r} is not supported",
                                    code=code)
    got = "".join((stamps[0].text or "").split())
    if request_body is None:
        assert request_hash is not None, "the request or its hash"
        expected = request_hash if algorithm == SHA512 else None
    else:
        sent = soap_part(request_body, req.content_type).envelope
        expected = soap_request_hash(sent, algorithm)
    if got != expected:
        raise InvalidSignatureError("the SOAP response's requestHash is not the hash of the "
                                    "request sent", code=code)
    try:  # the provider's server validated them; read here as identifiers only
        seen = _request_from_fields(_fields(env, validate=False), req.content_type,
                                    req.soap_action)
    except BadRequestError as exc:
        raise _consumer_inconsistent(f"has X-Road header fields that cannot be read: "
                                     f"{exc.message}") from exc
    if seen != req:
        raise _consumer_inconsistent("has X-Road header fields that differ from the request's")


def _consumer_inconsistent(why: str) -> ClientProxyError:
    return ClientProxyError(f"the SOAP response {why}",
                            code="server.clientproxy.inconsistent_response")


def fault_envelope(code: str, message: str, detail_id: str) -> bytes:
    """An X-Road SOAP fault (PR-MESS Annex D.1): ``faultcode`` is the X-Road error code,
    ``faultactor`` empty, ``detail/faultDetail`` the id under which the fault was logged."""
    env = etree.Element(_q(NS_SOAP_ENV, "Envelope"), nsmap={"SOAP-ENV": NS_SOAP_ENV})
    fault = etree.SubElement(etree.SubElement(env, _q(NS_SOAP_ENV, "Body")),
                             _q(NS_SOAP_ENV, "Fault"))
    for name, text in (("faultcode", code), ("faultstring", message), ("faultactor", "")):
        etree.SubElement(fault, name).text = text
    etree.SubElement(etree.SubElement(fault, "detail"), "faultDetail").text = detail_id
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))

