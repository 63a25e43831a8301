"""The global configuration: its typed model, its signed envelope and the trust rules for it.

The registry publishes the federation's members, subsystems, security servers, global groups
and trust services as one JSON document (``schemas/globalconf.schema.json``) wrapped in a
TUF-style signed envelope (style.md point 3; python-tuf ``tuf/api/metadata.py``)::

    {"signed": <payload>,
     "signatures": [{"keyid": "<hex SHA-256 of the signer certificate's DER>",
                     "alg": "ES256" | "PS256",
                     "sig": "<base64url, no padding>"}]}

The signature is over :func:`xchange.canonical.canonical_json` of the payload, never over the
wire bytes.  Signature encodings follow JWS (RFC 7518): ES256 is ECDSA P-256/SHA-256 written
as the raw 64-byte ``r || s`` (section 3.4), not DER, so that every signature in xchange has
the same form as in its detached JWS; PS256 is RSASSA-PSS with SHA-256, MGF1-SHA-256 and a
32-byte salt (section 3.5).

What is here:

* the frozen model (:class:`GlobalConf` and its parts) with ``from_payload``/``to_payload``
  and the O(1) queries a security server makes on every message;
* :func:`sign_envelope` / :func:`sign_envelope_by` (used by the registry) and
  :func:`verify_envelope`;
* :class:`ConfigurationAnchor`, what a security server trusts before any configuration
  (``schemas/anchor.schema.json``);
* :class:`TrustedGlobalConf`, the state machine that accepts a new document only if it is
  signed by an anchor key, of the anchor's instance, not expired, and not a rollback, and
  otherwise keeps the last good copy (TUF ``TrustedMetadataSet``).

Configuration-signing key rotation: a payload may list ``signing_keys``, the certificates of
the keys the registry signs with now or will sign with next.  A document is accepted only if
a key trusted *before* it verifies it; once accepted, its list becomes the trusted set (the
anchor's keys when it lists none).  So a new key is trusted only after a configuration signed
by an already trusted key announced it, and a key the registry drops is no longer trusted.

What is not here: downloading, file handling and the refresh loop (the security server's
configuration client), building the payload from the registry's data (``registry/``), and
checking the approved CAs' certificates themselves (X.509 path validation happens where
certificates are used).  No clock is read: time is passed in as an aware ``datetime``.

Failures of a document are :class:`InvalidGlobalConfError`; having no usable document at a
given time is :class:`~xchange.errors.GlobalConfOutdatedError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final, TypeVar

import jsonschema
import jsonschema.exceptions
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from schemas import load_json_schema
from xchange.canonical import canonical_json, parse_json
from xchange.certificates import cert_sha256
from xchange.errors import BadRequestError, GlobalConfOutdatedError, InvalidGlobalConfError
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId, check_part

__all__ = [
    "ANCHOR_TYPE",
    "CONF_TYPE",
    "SPEC_VERSION",
    "ApprovedCA",
    "ApprovedTSA",
    "ConfigurationAnchor",
    "FederationSettings",
    "GlobalConf",
    "GlobalGroupInfo",
    "InvalidGlobalConfError",
    "MemberInfo",
    "SecurityServerInfo",
    "TrustedGlobalConf",
    "sign_envelope",
    "sign_envelope_by",
    "verify_envelope",
]

CONF_TYPE: Final = "xchange-global-conf"
ANCHOR_TYPE: Final = "xchange-configuration-anchor"
SPEC_VERSION: Final = 1

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PSS_SALT_LENGTH = 32  # RFC 7518 3.5: the salt is as long as the hash output

_T = TypeVar("_T")


# -- small helpers ---------------------------------------------------------------------------


def _require_aware(t: datetime, what: str) -> None:
    # A naive datetime is a programming error, not bad data.
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


def _format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime(_TIME_FORMAT)


def _parse_time(text: str, what: str) -> datetime:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidGlobalConfError(f"{what} {text!r} is not an RFC 3339 UTC time") from exc


def _cert_from_b64(text: str, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidGlobalConfError(f"{what}: not a base64 DER X.509 certificate") from exc


def _cert_to_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


@cache
def _validator(schema_name: str, definition: str | None = None) -> jsonschema.Validator:
    schema = load_json_schema(schema_name)
    if definition is not None:
        # Only self-contained definitions (no $ref) are validated on their own.
        schema = schema["$defs"][definition]
    return jsonschema.Draft202012Validator(schema)


def _check_schema(doc: Any, schema_name: str, what: str, definition: str | None = None) -> None:
    error = jsonschema.exceptions.best_match(_validator(schema_name, definition).iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        raise InvalidGlobalConfError(
            f"{what} does not match its schema at {where}: {message}", detail=where
        )


def _parse_id(parse: Callable[[str], _T], text: str, what: str) -> _T:
    try:
        return parse(text)
    except BadRequestError as exc:
        raise InvalidGlobalConfError(f"{what} {text!r}: {exc.message}") from exc


# -- the model -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FederationSettings:
    """Federation-wide parameters, all in seconds."""

    ocsp_freshness_seconds: int = 3600
    """Oldest OCSP response a security server accepts."""
    timestamping_interval_seconds: int = 60
    """Longest a message-log batch waits for its time-stamp."""
    conf_expiry_seconds: int = 600
    """How long a published global configuration stays valid."""
    conf_refresh_seconds: int = 60
    """How often the registry re-signs the configuration (unless its own
    ``regenerate_seconds`` says otherwise).  Security servers download on their own schedule,
    ``[globalconf] refresh_seconds``, which should not be longer."""

    def __post_init__(self) -> None:
        for name, value in self.to_payload().items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidGlobalConfError(f"settings.{name} must be a positive integer")

    def to_payload(self) -> dict[str, int]:
        return {
            "ocsp_freshness_seconds": self.ocsp_freshness_seconds,
            "timestamping_interval_seconds": self.timestamping_interval_seconds,
            "conf_expiry_seconds": self.conf_expiry_seconds,
            "conf_refresh_seconds": self.conf_refresh_seconds,
        }


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member and the codes of its registered subsystems."""

    id: ClientId
    name: str
    subsystems: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.id.subsystem is not None:
            raise InvalidGlobalConfError(f"member id {self.id} names a subsystem")
        for code in self.subsystems:
            try:
                check_part(code, "subsystem code")
            except BadRequestError as exc:
                raise InvalidGlobalConfError(f"member {self.id}: {exc.message}") from exc


@dataclass(frozen=True, slots=True)
class SecurityServerInfo:
    """A registered security server: where it listens, its auth certificates, its clients."""

    id: SecurityServerId
    address: str
    """``host:port`` of its server proxy (``[v6addr]:port`` for IPv6)."""
    auth_cert_hashes: tuple[str, ...]
    """Hex SHA-256 of the DER of each registered TLS authentication certificate."""
    clients: tuple[ClientId, ...] = ()

    def __post_init__(self) -> None:
        for h in self.auth_cert_hashes:
            if not _SHA256_HEX.fullmatch(h):
                raise InvalidGlobalConfError(f"server {self.id}: bad auth cert hash {h!r}")
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidGlobalConfError(f"server {self.id}: bad address {self.address!r}")

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


@dataclass(frozen=True, slots=True)
class GlobalGroupInfo:
    id: GlobalGroupId
    description: str
    members: tuple[ClientId, ...] = ()


@dataclass(frozen=True, slots=True)
class ApprovedCA:
    """A certification authority whose auth and sign certificates the federation accepts."""

    name: str
    certificate: x509.Certificate
    ocsp_url: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovedTSA:
    """An RFC 3161 time-stamping authority the federation accepts."""

    name: str
    url: str
    certificate: x509.Certificate


def _unique(ids: Iterable[object], what: str) -> None:
    seen: set[object] = set()
    for i in ids:
        if i in seen:
            raise InvalidGlobalConfError(f"{what} {i} is listed twice")
        seen.add(i)


@dataclass(frozen=True, slots=True)
class GlobalConf:
    """One verified global configuration.  Build it with :meth:`from_payload` or directly.

    Construction checks what the schema cannot: identifiers belong to ``instance``, nothing is
    listed twice, no auth certificate is registered for two servers, and every server client
    and group member is a registered member or subsystem.
    """

    instance: str
    version: int
    generated_at: datetime
    expires_at: datetime
    members: tuple[MemberInfo, ...] = ()
    security_servers: tuple[SecurityServerInfo, ...] = ()
    global_groups: tuple[GlobalGroupInfo, ...] = ()
    approved_cas: tuple[ApprovedCA, ...] = ()
    approved_tsas: tuple[ApprovedTSA, ...] = ()
    settings: FederationSettings = field(default_factory=FederationSettings)
    signing_keys: tuple[x509.Certificate, ...] = ()
    """Certificates of the configuration-signing keys security servers are to trust from
    this version on (key rotation); empty: the anchor's keys."""

    # Lookup tables for the per-message queries, built once in __post_init__.
    _registered: frozenset[ClientId] = field(init=False, repr=False, compare=False)
    _names: dict[ClientId, str] = field(init=False, repr=False, compare=False)
    _servers: dict[SecurityServerId, SecurityServerInfo] = field(
        init=False, repr=False, compare=False
    )
    _by_hash: dict[str, SecurityServerInfo] = field(init=False, repr=False, compare=False)
    _hosting: dict[ClientId, tuple[SecurityServerInfo, ...]] = field(
        init=False, repr=False, compare=False
    )
    _groups: dict[GlobalGroupId, frozenset[ClientId]] = field(
        init=False, repr=False, compare=False
    )
    _anchors: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            check_part(self.instance, "instance")
        except BadRequestError as exc:
            raise InvalidGlobalConfError(exc.message) from exc
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise InvalidGlobalConfError("version must be an integer")
        if self.version < 1:
            raise InvalidGlobalConfError("version must be at least 1")
        for name in ("generated_at", "expires_at"):
            t: datetime = getattr(self, name)
            _require_aware(t, name)
            if t.microsecond:
                # The wire form has whole seconds; a fraction would not survive a round trip.
                raise ValueError(f"{name} must have whole seconds")
        if self.expires_at <= self.generated_at:
            raise InvalidGlobalConfError("expires_at is not after generated_at")

        _unique((m.id for m in self.members), "member")
        _unique((s.id for s in self.security_servers), "security server")
        _unique((g.id for g in self.global_groups), "global group")
        _unique((cert_sha256(c) for c in self.signing_keys), "signing key")

        registered: set[ClientId] = set()
        names: dict[ClientId, str] = {}
        for m in self.members:
            self._check_instance(m.id.instance, f"member {m.id}")
            _unique(m.subsystems, f"subsystem of {m.id}")
            names[m.id] = m.name
            registered.add(m.id)
            registered.update(m.id.subsystem_of(code) for code in m.subsystems)

        servers: dict[SecurityServerId, SecurityServerInfo] = {}
        by_hash: dict[str, SecurityServerInfo] = {}
        hosting: dict[ClientId, list[SecurityServerInfo]] = {}
        for s in self.security_servers:
            if s.id.owner not in registered:
                raise InvalidGlobalConfError(f"owner of security server {s.id} is not a member")
            servers[s.id] = s
            for h in s.auth_cert_hashes:
                if h in by_hash:
                    raise InvalidGlobalConfError(f"auth certificate {h} is registered twice")
                by_hash[h] = s
            _unique(s.clients, f"client of {s.id}")
            for c in s.clients:
                if c not in registered:
                    raise InvalidGlobalConfError(f"client {c} of {s.id} is not registered")
                hosting.setdefault(c, []).append(s)
            if s.id.owner not in s.clients:
                # A server's owner member is always one of its clients (as in X-Road).
                hosting.setdefault(s.id.owner, []).append(s)

        groups: dict[GlobalGroupId, frozenset[ClientId]] = {}
        for g in self.global_groups:
            self._check_instance(g.id.instance, f"global group {g.id}")
            _unique(g.members, f"member of {g.id}")
            for c in g.members:
                if c not in registered:
                    raise InvalidGlobalConfError(f"member {c} of {g.id} is not registered")
            groups[g.id] = frozenset(g.members)

        object.__setattr__(self, "_registered", frozenset(registered))
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_servers", servers)
        object.__setattr__(self, "_by_hash", by_hash)
        object.__setattr__(self, "_hosting", {c: tuple(v) for c, v in hosting.items()})
        object.__setattr__(self, "_groups", groups)
        object.__setattr__(self, "_anchors", tuple(ca.certificate for ca in self.approved_cas))

    def _check_instance(self, instance: str, what: str) -> None:
        # Each instance publishes its own configuration; federation partners' come separately.
        if instance != self.instance:
            raise InvalidGlobalConfError(f"{what} is not of instance {self.instance}")

    # -- queries (O(1); called on every message) --

    def is_registered(self, client: ClientId) -> bool:
        """Is ``client`` a registered member (or, with a subsystem, a registered subsystem)?"""
        return client in self._registered

    def servers_hosting(self, client: ClientId) -> tuple[SecurityServerInfo, ...]:
        """The security servers on which ``client`` is registered as a client."""
        return self._hosting.get(client, ())

    def is_hosted_on(self, client: ClientId, server_id: SecurityServerId) -> bool:
        """Is ``client`` a client of (or the owner of) security server ``server_id``?"""
        return any(s.id == server_id for s in self.servers_hosting(client))

    def server(self, server_id: SecurityServerId) -> SecurityServerInfo | None:
        return self._servers.get(server_id)

    def server_by_auth_cert_hash(self, cert_hash: str) -> SecurityServerInfo | None:
        """The server whose TLS auth certificate has this hex SHA-256 (of its DER)."""
        return self._by_hash.get(cert_hash.lower())

    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        """The approved CAs' certificates, as roots for X.509 path validation."""
        return self._anchors

    def members_of_group(self, group: GlobalGroupId) -> frozenset[ClientId]:
        """The group's members; empty for an unknown group (which then grants nothing)."""
        return self._groups.get(group, frozenset())

    def member_name(self, client: ClientId) -> str | None:
        """The registered name of ``client``'s member."""
        return self._names.get(client.member)

    def is_expired(self, now: datetime) -> bool:
        _require_aware(now, "now")
        return now >= self.expires_at

    # -- (de)serialisation --

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> GlobalConf:
        """Validate ``payload`` against the schema and build the typed model."""
        _check_schema(payload, "globalconf.schema.json", "global configuration")
        p = payload
        members = tuple(
            MemberInfo(
                _parse_id(ClientId.parse, m["id"], "member id"),
                m["name"],
                tuple(m["subsystems"]),
            )
            for m in p["members"]
        )
        servers = tuple(
            SecurityServerInfo(
                _parse_id(SecurityServerId.parse, s["id"], "security server id"),
                s["address"],
                tuple(s["auth_cert_hashes"]),
                tuple(_parse_id(ClientId.parse, c, "client id") for c in s["clients"]),
            )
            for s in p["security_servers"]
        )
        groups = tuple(
            GlobalGroupInfo(
                _parse_id(GlobalGroupId.parse, g["id"], "global group id"),
                g["description"],
                tuple(_parse_id(ClientId.parse, c, "group member id") for c in g["members"]),
            )
            for g in p["global_groups"]
        )
        cas = tuple(
            ApprovedCA(ca["name"], _cert_from_b64(ca["certificate"], ca["name"]), ca["ocsp_url"])
            for ca in p["approved_cas"]
        )
        tsas = tuple(
            ApprovedTSA(t["name"], t["url"], _cert_from_b64(t["certificate"], t["name"]))
            for t in p["approved_tsas"]
        )
        return cls(
            instance=p["instance"],
            version=p["version"],
            generated_at=_parse_time(p["generated_at"], "generated_at"),
            expires_at=_parse_time(p["expires_at"], "expires_at"),
            members=members,
            security_servers=servers,
            global_groups=groups,
            approved_cas=cas,
            approved_tsas=tsas,
            settings=FederationSettings(**p["settings"]),
            signing_keys=tuple(
                _cert_from_b64(c, "signing key") for c in p.get("signing_keys", ())
            ),
        )

    def to_payload(self) -> dict[str, Any]:
        """The JSON payload (the ``signed`` part); ``from_payload`` of it gives ``self`` back."""
        payload = self._payload_without_keys()
        if self.signing_keys:  # absent rather than empty: documents without rotation unchanged
            payload["signing_keys"] = [_cert_to_b64(c) for c in self.signing_keys]
        return payload

    def _payload_without_keys(self) -> dict[str, Any]:
        return {
            "type": CONF_TYPE,
            "spec_version": SPEC_VERSION,
            "instance": self.instance,
            "version": self.version,
            "generated_at": _format_time(self.generated_at),
            "expires_at": _format_time(self.expires_at),
            "members": [
                {"id": str(m.id), "name": m.name, "subsystems": list(m.subsystems)}
                for m in self.members
            ],
            "security_servers": [
                {
                    "id": str(s.id),
                    "address": s.address,
                    "auth_cert_hashes": list(s.auth_cert_hashes),
                    "clients": [str(c) for c in s.clients],
                }
                for s in self.security_servers
            ],
            "global_groups": [
                {"id": str(g.id), "description": g.description,
                 "members": [str(c) for c in g.members]}
                for g in self.global_groups
            ],
            "approved_cas": [
                {"name": ca.name, "certificate": _cert_to_b64(ca.certificate),
                 "ocsp_url": ca.ocsp_url}
                for ca in self.approved_cas
            ],
            "approved_tsas": [
                {"name": t.name, "url": t.url, "certificate": _cert_to_b64(t.certificate)}
                for t in self.approved_tsas
            ],
            "settings": self.settings.to_payload(),
        }


# -- the signed envelope ---------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


ConfSigner = tuple[ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, x509.Certificate]
"""A configuration-signing key and its certificate."""


def sign_envelope(
    payload: Mapping[str, Any],
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    cert: x509.Certificate,
) -> bytes:
    """Sign a global configuration payload with one key (see :func:`sign_envelope_by`)."""
    return sign_envelope_by(payload, [(key, cert)])


def _signature(message: bytes, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
               cert: x509.Certificate) -> dict[str, str]:
    if key.public_key() != cert.public_key():
        raise ValueError("the signing key does not match the signing certificate")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"ES256 needs a P-256 key, not {key.curve.name}")
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        alg, sig = "ES256", r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_PSS_SALT_LENGTH)
        alg, sig = "PS256", key.sign(message, pss, hashes.SHA256())
    return {"keyid": cert_sha256(cert), "alg": alg, "sig": _b64url(sig)}


def sign_envelope_by(payload: Mapping[str, Any], signers: Sequence[ConfSigner]) -> bytes:
    """Sign a global configuration payload with every signer; return the envelope's bytes.

    The payload is checked first (schema and consistency), so that the registry can never
    publish a document security servers would refuse.  EC P-256 keys sign ES256, RSA keys
    PS256.  Several signers let a registry sign with an old and a new key during a rotation:
    each security server verifies the signature of the key it trusts.  A key that does not
    match its certificate, or no signer at all, is a programming error (``ValueError``).
    """
    if not signers or len(signers) > 16:
        raise ValueError("an envelope needs 1 to 16 signers")
    GlobalConf.from_payload(payload)
    message = canonical_json(payload)
    envelope = {
        "signed": dict(payload),
        "signatures": [_signature(message, key, cert) for key, cert in signers],
    }
    return canonical_json(envelope)


def _signature_valid(cert: x509.Certificate, alg: str, sig_text: str, message: bytes) -> bool:
    # A malformed signature is just an invalid one: the caller decides what that means.
    try:
        sig = _b64url_decode(sig_text)
    except (binascii.Error, ValueError):
        return False
    public_key = cert.public_key()
    try:
        if alg == "ES256":
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                return False
            if not isinstance(public_key.curve, ec.SECP256R1) or len(sig) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
            public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
            return True
        if alg == "PS256":
            if not isinstance(public_key, rsa.RSAPublicKey):
                return False
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_PSS_SALT_LENGTH)
            public_key.verify(sig, message, pss, hashes.SHA256())
            return True
    except InvalidSignature:
        return False
    return False


def _verified_payload(data: bytes, trusted_certs: Sequence[x509.Certificate]) -> dict[str, Any]:
    """Steps 1-4 of envelope verification; the payload's own schema is left to the caller."""
    if not trusted_certs:
        raise ValueError("no trusted certificates given: nothing could ever verify")
    # 1. Parse strictly and check the envelope's shape (not yet the payload's).
    try:
        envelope = parse_json(data)
    except BadRequestError as exc:
        raise InvalidGlobalConfError(f"global configuration: {exc.message}") from exc
    _check_schema(envelope, "globalconf.schema.json", "signed envelope", "envelope")
    payload: dict[str, Any] = envelope["signed"]
    # 2. Recompute the signed bytes from the parsed payload, never from the wire.
    try:
        message = canonical_json(payload)
    except BadRequestError as exc:
        raise InvalidGlobalConfError(f"global configuration: {exc.message}") from exc
    # 3. Keep only signatures by trusted keys; others (e.g. a key being rotated in) are ignored.
    trusted = {cert_sha256(c): c for c in trusted_certs}
    candidates = [s for s in envelope["signatures"] if s["keyid"] in trusted]
    if not candidates:
        raise InvalidGlobalConfError("global configuration is not signed by a trusted key")
    # 4. One valid signature by a trusted key is the threshold.
    if not any(_signature_valid(trusted[s["keyid"]], s["alg"], s["sig"], message)
               for s in candidates):
        raise InvalidGlobalConfError("global configuration signature does not verify")
    return payload


def verify_envelope(data: bytes, trusted_certs: Sequence[x509.Certificate]) -> dict[str, Any]:
    """Verify a signed envelope and return its payload, schema-checked.

    Raises :class:`InvalidGlobalConfError` on malformed JSON, a malformed envelope, no
    signature by a key of ``trusted_certs``, a signature that does not verify, or a payload
    that does not match the schema.  ``trusted_certs`` are pinned keys: their validity dates
    are not looked at.  Expiry, instance and version are :class:`TrustedGlobalConf`'s business.
    """
    payload = _verified_payload(data, trusted_certs)
    _check_schema(payload, "globalconf.schema.json", "global configuration")
    return payload


# -- the anchor and the trusted state ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigurationAnchor:
    """The out-of-band trust root: instance, download URL, configuration-verification certs."""

    instance: str
    certificates: tuple[x509.Certificate, ...]
    download_url: str
    generated_at: datetime

    def __post_init__(self) -> None:
        if not self.certificates:
            raise InvalidGlobalConfError("configuration anchor has no certificates")
        try:
            check_part(self.instance, "instance")
        except BadRequestError as exc:
            raise InvalidGlobalConfError(f"configuration anchor: {exc.message}") from exc
        _require_aware(self.generated_at, "generated_at")

    def to_json(self) -> bytes:
        doc = {
            "type": ANCHOR_TYPE,
            "spec_version": SPEC_VERSION,
            "instance": self.instance,
            "generated_at": _format_time(self.generated_at),
            "download_url": self.download_url,
            "certificates": [_cert_to_b64(c) for c in self.certificates],
        }
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> ConfigurationAnchor:
        try:
            doc = parse_json(data)
        except BadRequestError as exc:
            raise InvalidGlobalConfError(f"configuration anchor: {exc.message}") from exc
        _check_schema(doc, "anchor.schema.json", "configuration anchor")
        return cls(
            instance=doc["instance"],
            certificates=tuple(
                _cert_from_b64(c, "anchor certificate") for c in doc["certificates"]
            ),
            download_url=doc["download_url"],
            generated_at=_parse_time(doc["generated_at"], "generated_at"),
        )


class TrustedGlobalConf:
    """The last good global configuration of one instance, and the rules for replacing it.

    Built from a :class:`ConfigurationAnchor`.  :meth:`update` is fed each downloaded
    document; only a document that passes every check replaces the current one, so a bad
    download never costs the good copy.  :meth:`current` answers for a given time.

    Transitions of :meth:`update`, given the current version ``v`` (none at first)::

        bad JSON / envelope / signature / schema / instance  -> refused
        expired at ``now``                                    -> refused
        version <  v                                          -> refused (rollback)
        version == v, same payload                            -> no change
        version == v, other payload                           -> refused
        version >  v (or nothing loaded)                      -> accepted; its
                                                                 signing_keys become the
                                                                 trusted keys
    """

    def __init__(self, anchor: ConfigurationAnchor,
                 learned_keys: Sequence[x509.Certificate] = ()) -> None:
        """``learned_keys``: signing keys announced by a configuration this server verified
        before (its caller keeps them across restarts); trusted alongside the anchor's until
        the next accepted document says which keys to trust."""
        self._anchor = anchor
        self._conf: GlobalConf | None = None
        self._signed_bytes = b""
        unique = {cert_sha256(c): c for c in (*anchor.certificates, *learned_keys)}
        self._keys: tuple[x509.Certificate, ...] = tuple(unique.values())

    @property
    def anchor(self) -> ConfigurationAnchor:
        return self._anchor

    @property
    def expires_at(self) -> datetime | None:
        """When the current copy expires; ``None`` before the first successful update."""
        return None if self._conf is None else self._conf.expires_at

    @property
    def trusted_keys(self) -> tuple[x509.Certificate, ...]:
        """The configuration-signing certificates a next document may be signed by."""
        return self._keys

    def update(self, data: bytes, *, now: datetime) -> GlobalConf:
        """Verify ``data`` (a signed envelope) and make it current; return the current conf.

        Raises :class:`InvalidGlobalConfError` (keeping the previous copy) when refused.
        """
        _require_aware(now, "now")
        # 1. Signature by a key the anchor trusts, over the canonical payload.
        payload = _verified_payload(data, self._keys)
        # 2. Schema and consistency of the payload.
        conf = GlobalConf.from_payload(payload)
        # 3. The document is for our instance.
        if conf.instance != self._anchor.instance:
            raise InvalidGlobalConfError(
                f"global configuration is for instance {conf.instance!r}, "
                f"the anchor is for {self._anchor.instance!r}"
            )
        # 4. Not already expired: accepting it would only make current() fail later.
        if conf.is_expired(now):
            raise InvalidGlobalConfError(
                f"global configuration version {conf.version} expired at "
                f"{_format_time(conf.expires_at)}"
            )
        # 5. No rollback; an equal version must be the very same document.
        signed_bytes = canonical_json(payload)
        old = self._conf
        if old is not None:
            if conf.version < old.version:
                raise InvalidGlobalConfError(
                    f"global configuration version {conf.version} is older than the "
                    f"current version {old.version} (rollback refused)"
                )
            if conf.version == old.version:
                if signed_bytes != self._signed_bytes:
                    raise InvalidGlobalConfError(
                        f"global configuration version {conf.version} differs from the "
                        "current document of the same version"
                    )
                return old
        # 6. Trust what it announces from now on (key rotation); see the module docstring.
        self._conf, self._signed_bytes = conf, signed_bytes
        self._keys = conf.signing_keys or self._anchor.certificates
        return conf

    def current(self, *, now: datetime) -> GlobalConf:
        """The current configuration; raises GlobalConfOutdatedError if none or expired."""
        _require_aware(now, "now")
        conf = self._conf
        if conf is None:
            raise GlobalConfOutdatedError("no global configuration has been loaded yet")
        if conf.is_expired(now):
            raise GlobalConfOutdatedError(
                f"global configuration version {conf.version} expired at "
                f"{_format_time(conf.expires_at)}"
            )
        return conf
