"""The REST message model: X-Road Message Protocol for REST 1.0 on the IS side, and the
signed *header part* that travels between security servers.

What this module does:

* parses the IS-facing request target ``/r1/{serviceId}[/path][?query]`` (PR-REST 4.1, 4.2)
  and the X-Road headers (PR-REST 4.3) into a :class:`RestRequest`;
* builds the canonical header part of a request or response -- the bytes that are signed,
  logged and hashed (see ``docs/protocol.md``);
* computes X-Road's request hash, ``base64(SHA-512(SHA-512(header part) || SHA-512(body)))``,
  or ``base64(SHA-512(header part))`` when there is no body (PR-REST 4.3).

What it does not do: no sockets, no signing (``xchange.signing``), no access decisions.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self
from urllib.parse import unquote

from xchange.body import BodyDigest, MessageBody
from xchange.canonical import canonical_json, parse_json
from xchange.errors import BadRequestError, InvalidSignatureError
from xchange.identifiers import ClientId, SecurityServerId, ServiceId

__all__ = [
    "DATA_SUBJECTS_HEADER",
    "FILTERED_HEADERS",
    "MAX_TARGET_LENGTH",
    "PROTOCOL_PREFIX",
    "Addressed",
    "RestRequest",
    "RestResponse",
    "data_subjects_of",
    "digest_payload",
    "filter_headers",
    "request_hash",
    "request_hash_of",
]

PROTOCOL_PREFIX = "/r1/"
DATA_SUBJECTS_HEADER = "X-Xchange-Data-Subjects"
"""A provider system's response header naming the data subjects of its answer (personal
codes, ...): percent-encoded values, comma-separated.  Adapters set it (docs/adapters.md);
it passes like any user header, so the provider's security server signs and logs it."""
MAX_TARGET_LENGTH = 4096
_MAX_HEADER_VALUE = 1024

# PR-REST 4.3 "Filtered headers": hop-by-hop and host-revealing headers never cross, plus
# the headers the security servers set themselves.  Compared lower-cased.
FILTERED_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "user-agent", "server",
        "content-length", "expect", "date",
        "x-road-client", "x-road-service", "x-road-id", "x-road-userid", "x-road-issue",
        "x-road-request-hash", "x-road-request-id", "x-road-error",
        "x-road-security-server", "x-road-represented-party",
    }
)

_REQUEST_TYPE = "xchange-rest-request"
_RESPONSE_TYPE = "xchange-rest-response"
_REQUEST_KEYS = frozenset({"type", "v", "id", "client", "service", "method", "path", "query",
                           "user_id", "issue", "security_server", "headers"})
_RESPONSE_KEYS = frozenset({"type", "v", "id", "client", "service", "request_hash", "status",
                            "headers"})
_HEADER_PART_VERSION = 1


def filter_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """User headers that pass through unmodified (names lower-cased, order kept)."""
    return tuple(
        (name.lower(), value) for name, value in headers if name.lower() not in FILTERED_HEADERS
    )


def digest_payload(header_part: bytes, body: MessageBody | BodyDigest) -> bytes:
    """The bytes a message signature covers: ``SHA-512(header part) [|| SHA-512(body)]``.

    The body digest is left out when there is no body, as in X-Road's request hash; the length
    of the payload (64 or 128 bytes) tells which case it is.  A body taken as it streamed
    past is given by its digest (:mod:`xchange.body`).
    """
    head = hashlib.sha512(header_part).digest()
    if isinstance(body, bytes):
        return head + hashlib.sha512(body).digest() if body else head
    digest = body if isinstance(body, BodyDigest) else body.digest
    return head + digest.sha512 if digest.size else head


def request_hash(header_part: bytes, body: MessageBody) -> str:
    """X-Road's ``X-Road-Request-Hash`` of a request (PR-REST 4.3)."""
    return request_hash_of(digest_payload(header_part, body))


def request_hash_of(payload: bytes) -> str:
    """:func:`request_hash` from the request's :func:`digest_payload`, already computed."""
    if len(payload) == hashlib.sha512().digest_size:
        return base64.b64encode(payload).decode("ascii")
    return base64.b64encode(hashlib.sha512(payload).digest()).decode("ascii")


def _opt_header(first: Mapping[str, str], name: str) -> str | None:
    """Header ``name``'s value (``first``: the first value of each lower-cased name)."""
    value = first.get(name.lower())
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > _MAX_HEADER_VALUE or not value.isprintable():
        raise BadRequestError(f"header {name} is too long or not printable")
    return value


_METHOD = re.compile(r"[A-Z]{1,16}")


def _check_path(path: str) -> None:
    """The service-relative path: empty or ``/...``, percent-encoded, no dot segments.

    Dot segments would let a caller climb out of the service's base URL on the provider's
    side (PR-REST 4.2 warns of SSRF); they are refused, encoded or not.
    """
    if path and not path.startswith("/"):
        raise BadRequestError("the service path must start with '/'")
    if "?" in path or "#" in path or not path.isprintable() or " " in path:
        raise BadRequestError("the service path holds characters that must be encoded")
    if any(unquote(seg) in (".", "..") for seg in path.split("/")):
        raise BadRequestError("the service path must not contain '.' or '..' segments")


def _split_target(target: str) -> tuple[str, str]:
    path, sep, query = target.partition("?")
    return path, query if sep else ""


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One X-Road REST request as the security servers see it."""

    message_id: str
    client: ClientId
    service: ServiceId
    method: str
    path: str
    """The service-relative path as received (still percent-encoded), ``""`` or ``/...``."""
    query: str
    """The raw query string without ``?`` (passed unmodified, PR-REST 4.5)."""
    headers: tuple[tuple[str, str], ...]
    user_id: str | None = None
    issue: str | None = None
    security_server: SecurityServerId | None = None

    def __post_init__(self) -> None:
        # Checked here, not only where the IS's request is parsed, so that a request read
        # from a peer's header part meets exactly the same rules.
        if not _METHOD.fullmatch(self.method):
            raise BadRequestError(f"bad HTTP method {self.method!r}",
                                  code="client.unsupported_method")
        _check_path(self.path)
        if "#" in self.query or not self.query.isprintable() or " " in self.query:
            raise BadRequestError("the query string holds characters that must be encoded")
        for name, value in (("X-Road-Id", self.message_id), ("X-Road-UserId", self.user_id),
                            ("X-Road-Issue", self.issue)):
            if value is not None and (
                not value or len(value) > _MAX_HEADER_VALUE or not value.isprintable()
            ):
                raise BadRequestError(f"{name} is empty, too long or not printable")

    @classmethod
    def from_is(
        cls,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        *,
        new_id: str | None = None,
    ) -> Self:
        """Parse a request from the client information system.

        ``target`` is the raw request target (path and query, percent-encoded as sent);
        ``headers`` all header fields in order, names in any case (the first of a name
        counts for the X-Road headers).
        """
        header_items = tuple(headers)
        first: dict[str, str] = {}
        for name, value in header_items:
            first.setdefault(name.lower(), value)
        if len(target) > MAX_TARGET_LENGTH:
            raise BadRequestError(f"request target longer than {MAX_TARGET_LENGTH} characters")
        raw_path, query = _split_target(target)
        if not raw_path.startswith(PROTOCOL_PREFIX):
            raise BadRequestError(
                f"request path must start with {PROTOCOL_PREFIX}{{serviceId}}",
                detail="X-Road Message Protocol for REST r1",
            )
        segments = raw_path[len(PROTOCOL_PREFIX):].split("/")
        if len(segments) < 5 or not all(segments[:5]):
            raise BadRequestError(
                "service identifier must be INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE",
                code="client.invalid_service_identifier",
            )
        service = ServiceId.parse("/".join(segments[:5]))
        rest = segments[5:]
        path = "/" + "/".join(rest) if rest else ""

        client_header = first.get("x-road-client")
        if client_header is None or not client_header.strip():
            raise BadRequestError("X-Road-Client header is missing", code="client.missing_header")
        client = ClientId.parse(client_header.strip())

        message_id = _opt_header(first, "X-Road-Id") or new_id or str(uuid.uuid4())
        security_server = None
        if (ss := _opt_header(first, "X-Road-Security-Server")) is not None:
            security_server = SecurityServerId.parse(ss)
        return cls(
            message_id=message_id,
            client=client,
            service=service,
            method=method,
            path=path,
            query=query,
            headers=filter_headers(header_items),
            user_id=_opt_header(first, "X-Road-UserId"),
            issue=_opt_header(first, "X-Road-Issue"),
            security_server=security_server,
        )

    @property
    def target(self) -> str:
        """Path and query to send to the provider system (relative to its base URL)."""
        return self.path + (f"?{self.query}" if self.query else "")

    def header_part(self) -> bytes:
        """The canonical bytes signed and logged for this request (docs/protocol.md)."""
        return canonical_json(
            {
                "type": _REQUEST_TYPE,
                "v": _HEADER_PART_VERSION,
                "id": self.message_id,
                "client": str(self.client),
                "service": str(self.service),
                "method": self.method,
                "path": self.path,
                "query": self.query,
                "user_id": self.user_id,
                "issue": self.issue,
                "security_server": None if self.security_server is None
                else str(self.security_server),
                "headers": [list(h) for h in self.headers],
            }
        )

    @classmethod
    def from_header_part(cls, data: bytes, *, parsed: object = None) -> Self:
        """Parse a header part received from a peer security server (``parsed``: its
        :func:`~xchange.canonical.parse_json`, if the caller has it already)."""
        doc = _load_header_part(data, _REQUEST_TYPE, _REQUEST_KEYS, parsed)
        try:
            ss = doc["security_server"]
            return cls(
                message_id=_str(doc, "id"),
                client=ClientId.parse(_str(doc, "client")),
                service=ServiceId.parse(_str(doc, "service")),
                method=_str(doc, "method"),
                path=_str(doc, "path"),
                query=_str(doc, "query"),
                headers=_headers(doc),
                user_id=_opt_str(doc, "user_id"),
                issue=_opt_str(doc, "issue"),
                security_server=None if ss is None else SecurityServerId.parse(ss),
            )
        except TypeError as exc:
            raise _bad_part(f"request header part: {exc}") from exc
        except BadRequestError as exc:
            raise _bad_part(f"request header part: {exc.message}") from exc


class Addressed(Protocol):
    """What binds a response to its request, REST or SOAP: the message id and the parties."""

    @property
    def message_id(self) -> str: ...

    @property
    def client(self) -> ClientId: ...

    @property
    def service(self) -> ServiceId: ...


@dataclass(frozen=True, slots=True)
class RestResponse:
    """The provider system's response as the security servers see and sign it."""

    message_id: str
    client: ClientId
    service: ServiceId
    request_hash: str
    status: int
    headers: tuple[tuple[str, str], ...]

    def header_part(self) -> bytes:
        return canonical_json(
            {
                "type": _RESPONSE_TYPE,
                "v": _HEADER_PART_VERSION,
                "id": self.message_id,
                "client": str(self.client),
                "service": str(self.service),
                "request_hash": self.request_hash,
                "status": self.status,
                "headers": [list(h) for h in self.headers],
            }
        )

    @classmethod
    def from_header_part(cls, data: bytes) -> Self:
        doc = _load_header_part(data, _RESPONSE_TYPE, _RESPONSE_KEYS)
        try:
            status = doc["status"]
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise _bad_part(f"bad status {status!r}")
            return cls(
                message_id=_str(doc, "id"),
                client=ClientId.parse(_str(doc, "client")),
                service=ServiceId.parse(_str(doc, "service")),
                request_hash=_str(doc, "request_hash"),
                status=status,
                headers=_headers(doc),
            )
        except TypeError as exc:
            raise _bad_part(f"response header part: {exc}") from exc
        except BadRequestError as exc:
            raise _bad_part(f"response header part: {exc.message}") from exc

    def check_binding(self, request: Addressed, expected_hash: str) -> None:
        """Raise unless this response answers ``request`` (same id, parties, request hash)."""
        if self.request_hash != expected_hash:
            raise InvalidSignatureError(
                "response is not bound to the request: request hash differs",
                code="server.clientproxy.invalid_request_hash",
            )
        if (self.message_id, self.client, self.service) != (
            request.message_id, request.client, request.service,
        ):
            raise InvalidSignatureError(
                "response names another message id, client or service than the request",
                code="server.clientproxy.invalid_request_hash",
            )


# -- header-part parsing helpers -----------------------------------------------------------


def _bad_part(message: str) -> BadRequestError:
    return BadRequestError(message, code="server.serverproxy.bad_request")


def _load_header_part(data: bytes, kind: str, keys: frozenset[str],
                      parsed: object = None) -> dict[str, Any]:
    """The checked document of a header part; ``parsed`` is ``parse_json(data)`` if the
    caller has it (``None``: parse here)."""
    try:
        # parse_json, not json.loads: deep nesting, NaN and floats are the peer's errors.
        doc = parse_json(data) if parsed is None else parsed
        canonical = canonical_json(doc)
    except BadRequestError as exc:
        raise _bad_part(f"header part is not canonical UTF-8 JSON: {exc.message}") from exc
    if not isinstance(doc, dict) or doc.get("type") != kind or doc.get("v") != 1 \
            or isinstance(doc.get("v"), bool):
        raise _bad_part(f"header part is not an {kind} v1 document")
    if set(doc) != keys:
        # Every field is signed and meaningful: a missing or an extra one is not tolerated.
        raise _bad_part(f"header part fields differ from {kind} v1: "
                        f"missing {sorted(keys - set(doc))}, unknown {sorted(set(doc) - keys)}")
    if canonical != data:
        raise _bad_part("header part is not in canonical form")
    return doc


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string or null")
    return value


def _headers(doc: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = doc["headers"]
    if not isinstance(raw, list):
        raise TypeError("headers must be a list")
    out: list[tuple[str, str]] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, str) for x in item)
        ):
            raise TypeError("each header must be a [name, value] pair of strings")
        out.append((item[0], item[1]))
    return tuple(out)


def data_subjects_of(response: RestResponse) -> tuple[str, ...]:
    """The data subjects a response names in its :data:`DATA_SUBJECTS_HEADER` (decoded)."""
    name = DATA_SUBJECTS_HEADER.lower()
    return tuple(unquote(v) for n, value in response.headers if n.lower() == name
                 for v in value.split(",") if v)
