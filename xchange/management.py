"""Management requests: what a security server asks of the registry, signed.

A request is one canonical JSON object (``schemas/management-request.schema.json``)::

    {"type": "xchange-management-request", "request_id": "<16-128 ASCII>",
     "kind": "auth_cert_register", "server": "INSTANCE/CLASS/CODE/SERVER",
     "created_at": "2025-03-01T12:00:00Z", ...kind-specific fields...}

sent in an envelope ``{"request": {...}, "signature": "<JWS>", "auth_signature": "<JWS>"}``.
Both signatures are detached JWS (:mod:`xchange.signing`) over
``"xchange-management-request" || 0x00 || SHA-512(canonical request)``: the prefix keeps a
management signature from ever passing for a message signature, and the canonical form makes
the signed bytes independent of the wire formatting.

Who must sign (as in X-Road, the member whose data changes):

========================  ========================  =================================
kind                      fields                    member signature by
========================  ========================  =================================
auth_cert_register        auth_cert, address        the server's owner, *and* the
                                                    auth key itself (proof of
                                                    possession)
auth_cert_delete          cert_hash                 the server's owner
address_change            address                   the server's owner
client_register           client (a subsystem)      the client's member
client_delete             client                    the client's member
client_enable             client                    the client's member
client_disable            client                    the client's member
owner_change              new_owner (a member)      the new owner
service_catalogue_update  client, services          the client's member
========================  ========================  =================================

``service_catalogue_update`` carries the *whole* list of a hosted subsystem's services
(:mod:`xchange.catalogue`), so the registry can replace that provider's catalogue entries
with it; its ``services`` field is the only one that is not a string.

:func:`verify_request` checks, in order: shape, freshness, the member signature (chain to an
approved CA, signing profile), that the signer is the member the kind requires (otherwise
``registry.management.not_allowed``: nobody may ask for another member's subsystem), and
for an auth certificate that it names the server, chains to an approved CA with the
authentication profile, and that its own key signed the request.  Replay (a request id seen
before) is the registry's to check, since it needs the database.  No clock is read.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Final

import jsonschema
import jsonschema.exceptions
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from schemas import load_json_schema
from xchange.canonical import canonical_json, parse_json
from xchange.catalogue import CatalogueEntry, parse_catalogue
from xchange.certificates import (
    cert_from_b64der,
    cert_to_b64der,
    member_of_sign_cert,
    server_of_auth_cert,
    verify_chain,
)
from xchange.errors import BadRequestError, InvalidSignatureError, ManagementRequestError
from xchange.identifiers import ClientId, SecurityServerId
from xchange.signing import SigningIdentity, sign_payload, verify_payload

__all__ = [
    "KINDS",
    "MAX_AGE",
    "MAX_SKEW",
    "REQUEST_TYPE",
    "ManagementRequest",
    "VerifiedRequest",
    "cert_text",
    "new_request",
    "request_payload",
    "seal_request",
    "sign_request",
    "verify_request",
]

REQUEST_TYPE: Final = "xchange-management-request"
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
MAX_AGE: Final = timedelta(minutes=10)
MAX_SKEW: Final = timedelta(minutes=1)

KINDS: Final = {
    "auth_cert_register": ("auth_cert", "address"),
    "auth_cert_delete": ("cert_hash",),
    "address_change": ("address",),
    "client_register": ("client",),
    "client_delete": ("client",),
    "client_enable": ("client",),
    "client_disable": ("client",),
    "owner_change": ("new_owner",),
    "service_catalogue_update": ("client", "services"),
}
"""Each kind and its own fields."""

_SIGNATURE_CODE = "registry.management.invalid_signature"


def _bad(message: str) -> ManagementRequestError:
    return ManagementRequestError(message, code="registry.management.bad_request")


@dataclass(frozen=True, slots=True)
class ManagementRequest:
    """A parsed request.  ``fields`` holds the kind's own fields, as sent."""

    request_id: str
    kind: str
    server: SecurityServerId
    created_at: datetime
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def client(self) -> ClientId | None:
        text = self.fields.get("client")
        return None if text is None else ClientId.parse(text)

    @property
    def services(self) -> tuple[CatalogueEntry, ...] | None:
        docs = self.fields.get("services")
        return None if docs is None else parse_catalogue(docs)

    @property
    def auth_cert(self) -> x509.Certificate | None:
        text = self.fields.get("auth_cert")
        return None if text is None else cert_from_b64der(text)

    def required_signer(self) -> ClientId:
        """The member whose signature this request needs."""
        if self.kind.startswith("client_") or self.kind == "service_catalogue_update":
            client = self.client
            assert client is not None
            return client.member
        if self.kind == "owner_change":
            return ClientId.parse(self.fields["new_owner"])
        return self.server.owner

    def to_payload(self) -> dict[str, Any]:
        return {"type": REQUEST_TYPE, "request_id": self.request_id, "kind": self.kind,
                "server": str(self.server),
                "created_at": self.created_at.astimezone(UTC).strftime(_TIME_FORMAT),
                **self.fields}


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    request: ManagementRequest
    signer: ClientId
    document: bytes
    """The envelope as received, kept as evidence."""


def new_request(kind: str, server: SecurityServerId, *, now: datetime,
                **fields: Any) -> ManagementRequest:
    """A request with a fresh random id; ``fields`` must be exactly the kind's fields
    (strings, but ``services``: the list :func:`xchange.catalogue.catalogue_json` makes)."""
    if kind not in KINDS:
        raise ValueError(f"unknown management request kind {kind!r}")
    if set(fields) != set(KINDS[kind]):
        raise ValueError(f"{kind} needs exactly: {', '.join(KINDS[kind])}")
    return ManagementRequest(secrets.token_hex(24), kind, server,
                             now.astimezone(UTC).replace(microsecond=0), dict(fields))


def request_payload(request: ManagementRequest) -> bytes:
    """The bytes both signatures are made over."""
    digest = hashlib.sha512(canonical_json(request.to_payload())).digest()
    return REQUEST_TYPE.encode("ascii") + b"\x00" + digest


def _auth_sign(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, payload: bytes) -> str:
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "PS256"
    return jwt.PyJWS().encode(payload, key, algorithm=alg, is_payload_detached=True,
                              headers={"typ": REQUEST_TYPE + "+jws"})


def sign_request(request: ManagementRequest, member: SigningIdentity,
                 auth_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None) -> bytes:
    """The envelope to send: signed by ``member`` (and by ``auth_key`` for a registration of
    that key's certificate)."""
    payload = request_payload(request)
    auth_signature = None if auth_key is None else _auth_sign(auth_key, payload)
    return seal_request(request, sign_payload(member, payload), auth_signature)


def seal_request(request: ManagementRequest, signature: str,
                 auth_signature: str | None = None) -> bytes:
    """The envelope of ``request`` with a member ``signature`` over its
    :func:`request_payload` made elsewhere (a key in a token signs in the token's thread)."""
    envelope: dict[str, Any] = {"request": request.to_payload(), "signature": signature}
    if auth_signature is not None:
        envelope["auth_signature"] = auth_signature
    return canonical_json(envelope)


@cache
def _validator() -> jsonschema.Validator:
    return jsonschema.Draft202012Validator(load_json_schema("management-request.schema.json"))


def _parse(data: bytes) -> tuple[ManagementRequest, dict[str, Any]]:
    try:
        envelope = parse_json(data)
    except BadRequestError as exc:
        raise _bad(f"management request: {exc.message}") from exc
    error = jsonschema.exceptions.best_match(_validator().iter_errors(envelope))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise _bad(f"management request at {where}: {error.message[:200]}")
    doc = envelope["request"]
    kind = doc["kind"]
    extra = set(doc) - {"type", "request_id", "kind", "server", "created_at"}
    if extra != set(KINDS[kind]):
        raise _bad(f"{kind} needs exactly the fields {', '.join(KINDS[kind])}")
    try:
        request = ManagementRequest(
            doc["request_id"], kind, SecurityServerId.parse(doc["server"]),
            datetime.strptime(doc["created_at"], _TIME_FORMAT).replace(tzinfo=UTC),
            {k: doc[k] for k in KINDS[kind]})
        for name in ("client", "new_owner"):
            if name in request.fields:
                ClientId.parse(request.fields[name])
        if request.fields.get("client") and request.client.subsystem is None:  # type: ignore[union-attr]
            raise _bad("client must be a subsystem")
        if "new_owner" in request.fields and ClientId.parse(
                request.fields["new_owner"]).subsystem is not None:
            raise _bad("new_owner must be a member")
        if "auth_cert" in request.fields:
            request.auth_cert  # noqa: B018 (parse it now: a bad one is a bad request)
        if "services" in request.fields:
            request.services  # noqa: B018 (likewise)
    except (BadRequestError, ValueError) as exc:
        message = exc.message if isinstance(exc, BadRequestError) else str(exc)
        raise _bad(f"management request: {message}") from exc
    if canonical_json(request.to_payload()) != canonical_json(doc):
        raise _bad("management request is not in canonical form")
    return request, envelope


def _signer_of(signature: str) -> ClientId:
    # Who claims to have signed (from x5c); verify_payload then proves it.
    try:
        header = jwt.PyJWS().get_unverified_header(signature)
        return member_of_sign_cert(cert_from_b64der(header["x5c"][0]))
    except (jwt.PyJWTError, KeyError, IndexError, TypeError, BadRequestError,
            InvalidSignatureError) as exc:
        raise ManagementRequestError("the request's signature has no usable signing "
                                     "certificate", code=_SIGNATURE_CODE) from exc


def verify_request(data: bytes, *, anchors: Sequence[x509.Certificate],
                   now: datetime) -> VerifiedRequest:
    """Parse and verify a management request envelope (plan in the module docstring).

    Raises :class:`ManagementRequestError`: ``bad_request``, ``stale_request``,
    ``invalid_signature`` or ``not_allowed``.
    """
    # 1. Shape.
    request, envelope = _parse(data)
    # 2. Freshness: an old request is refused even before its id could be forgotten.
    if not now - MAX_AGE <= request.created_at <= now + MAX_SKEW:
        raise ManagementRequestError(
            f"request made at {request.to_payload()['created_at']} is outside the accepted "
            "window", code="registry.management.stale_request")
    payload = request_payload(request)
    # 3. The member signature, whoever made it.
    signature = envelope.get("signature")
    if not isinstance(signature, str):
        raise ManagementRequestError("the request is not signed", code=_SIGNATURE_CODE)
    claimed = _signer_of(signature)
    try:
        verified = verify_payload(signature, payload, expected_signer=claimed, anchors=anchors,
                                  at=now, code=_SIGNATURE_CODE)
    except InvalidSignatureError as exc:
        raise ManagementRequestError(exc.message, code=_SIGNATURE_CODE) from exc
    # 4. The signer must be the member whose data the request changes.
    required = request.required_signer()
    if verified.signer != required:
        raise ManagementRequestError(
            f"{request.kind} for {request.fields.get('client') or request.server} must be "
            f"signed by {required}, not by {verified.signer}",
            code="registry.management.not_allowed")
    # 5. An auth certificate: for this server, from an approved CA, and its key signed too.
    if request.kind == "auth_cert_register":
        _check_auth_cert(request, envelope.get("auth_signature"), payload, anchors, now)
    return VerifiedRequest(request, verified.signer, data)


def _check_auth_cert(request: ManagementRequest, auth_signature: object, payload: bytes,
                     anchors: Sequence[x509.Certificate], now: datetime) -> None:
    cert = request.auth_cert
    assert cert is not None
    try:
        named = server_of_auth_cert(cert)
        verify_chain(cert, [], anchors, at=now, purpose="auth")
    except InvalidSignatureError as exc:
        raise ManagementRequestError(f"auth certificate: {exc.message}",
                                     code=_SIGNATURE_CODE) from exc
    if named != request.server:
        raise ManagementRequestError(f"the auth certificate is for {named}, not {request.server}",
                                     code="registry.management.not_allowed")
    if not isinstance(auth_signature, str):
        raise ManagementRequestError("an auth certificate registration must also be signed by "
                                     "the auth key (auth_signature)", code=_SIGNATURE_CODE)
    key = cert.public_key()
    alg = "ES256" if isinstance(key, ec.EllipticCurvePublicKey) else "PS256"
    try:
        header = jwt.PyJWS().get_unverified_header(auth_signature)
        if header.get("alg") != alg or header.get("typ") != REQUEST_TYPE + "+jws":
            raise ManagementRequestError("auth_signature has the wrong alg or typ",
                                         code=_SIGNATURE_CODE)
        jwt.PyJWS().decode_complete(auth_signature, key=key,  # type: ignore[arg-type]
                                    algorithms=[alg], detached_payload=payload)
    except jwt.PyJWTError as exc:
        raise ManagementRequestError("auth_signature does not verify with the auth "
                                     "certificate's key", code=_SIGNATURE_CODE) from exc


def cert_text(cert: x509.Certificate) -> str:
    """An auth certificate as a request field (base64 DER)."""
    return cert_to_b64der(cert)
