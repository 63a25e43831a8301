"""Bearer tokens for the admin APIs (registry and security server): issue, verify, authorise.

An admin token is a JWT (RFC 7519) in JWS compact form (RFC 7515), signed by the server's own
admin-token key and verified by the same server; no third party is involved, so nothing here
fetches keys or reads the clock.  The rules:

* **Algorithms are an explicit allow-list tied to the key type**: ``ES256`` for an EC P-256
  key, ``EdDSA`` for an Ed25519 key.  ``none``, every ``HS*`` (which would turn a public key
  into an HMAC secret, RFC 8725 section 2.1) and any algorithm that does not match the key
  are refused before PyJWT is asked to verify anything.
* **Header**: ``typ`` must be ``xchange-admin+jwt`` (RFC 8725 section 3.11: explicit typing,
  so that no other JWT or JWS of xchange can pass for an admin token) and ``kid`` must name
  one of the verification keys (:func:`key_id`), which lets a server roll its key over.
* **Claims** ``sub``, ``roles``, ``iat``, ``exp`` and ``aud`` are required; ``nbf`` and
  ``jti`` are optional.  ``aud`` is per server (for example ``xchange-registry:DEMO``), so a
  token for one server is worthless at another.  Time checks use the ``now`` passed in, with
  a small leeway (30 s by default) for clock skew between issuer and verifier.
* **Roles** must all be known to the verifying server: a token naming an unknown role is
  refused rather than half-honoured.

Authorisation is a table from role to permissions (:class:`PermissionTable`, one per server)
and :func:`require`, which raises :class:`~xchange.errors.AdminForbiddenError`.  Every
authentication failure is :class:`~xchange.errors.AdminUnauthorizedError` with a message
that says what was wrong but never echoes the token.

Not here: where keys live, how a first token is obtained, HTTP header parsing (servers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from xchange.errors import AdminForbiddenError, AdminUnauthorizedError

__all__ = [
    "DEFAULT_LEEWAY",
    "TOKEN_TYPE",
    "AdminPrivateKey",
    "AdminPublicKey",
    "PermissionTable",
    "Principal",
    "issue_token",
    "key_id",
    "require",
    "verify_token",
]

TOKEN_TYPE: Final = "xchange-admin+jwt"  # noqa: S105 (a media type, not a secret)
DEFAULT_LEEWAY: Final = timedelta(seconds=30)
_MAX_TOKEN_LENGTH: Final = 8 * 1024
_REQUIRED_CLAIMS: Final = ("sub", "roles", "iat", "exp", "aud")
_MAX_SUBJECT_LENGTH: Final = 256

AdminPrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
AdminPublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for, and in which roles."""

    subject: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class PermissionTable:
    """Which permissions each role grants on one server (``{role: {permission, ...}}``).

    The table is the list of roles the server knows; a role with no permissions is allowed
    (an account that may log in and do nothing yet).
    """

    grants: Mapping[str, frozenset[str]]

    def __post_init__(self) -> None:
        if not self.grants:
            raise ValueError("a permission table needs at least one role")

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.grants)

    def permissions_of(self, principal: Principal) -> frozenset[str]:
        granted: set[str] = set()
        for role in principal.roles:
            granted |= self.grants.get(role, frozenset())
        return frozenset(granted)


def require(principal: Principal, permission: str, table: PermissionTable) -> None:
    """Raise :class:`AdminForbiddenError` unless one of the principal's roles grants
    ``permission``."""
    if permission not in table.permissions_of(principal):
        roles = ", ".join(sorted(principal.roles)) or "none"
        raise AdminForbiddenError(
            f"{principal.subject} (roles: {roles}) may not {permission}",
            detail=permission,
        )


def key_id(public_key: AdminPublicKey) -> str:
    """The ``kid`` of a key: base64url SHA-256 of its SubjectPublicKeyInfo DER (RFC 7638 is
    for JWKs; this is the same idea for the DER form every key here already has)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def _algorithm_for(key: AdminPublicKey | AdminPrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"admin tokens need an EC P-256 key, not {key.curve.name}")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"unsupported admin-token key type {type(key).__name__}")


def _aware(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return t


def issue_token(
    key: AdminPrivateKey,
    *,
    subject: str,
    roles: Iterable[str],
    audience: str,
    issued_at: datetime,
    lifetime: timedelta,
    token_id: str | None = None,
) -> str:
    """Sign an admin token for ``subject`` with ``roles``, valid for ``lifetime`` from
    ``issued_at``.  The caller checks that the roles exist; this only refuses nonsense."""
    _aware(issued_at, "issued_at")
    if lifetime <= timedelta(0):
        raise ValueError("lifetime must be positive")
    if not subject or len(subject) > _MAX_SUBJECT_LENGTH:
        raise ValueError("subject must be 1 to 256 characters")
    role_list = sorted(set(roles))
    if not role_list:
        raise ValueError("a token needs at least one role")
    iat = int(issued_at.timestamp())
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": role_list,
        "aud": audience,
        "iat": iat,
        "exp": iat + max(1, int(lifetime.total_seconds())),
        "jti": token_id or secrets.token_urlsafe(16),
    }
    headers = {"typ": TOKEN_TYPE, "kid": key_id(key.public_key())}
    return jwt.encode(claims, key, algorithm=_algorithm_for(key), headers=headers)


def _unauthorized(message: str) -> AdminUnauthorizedError:
    return AdminUnauthorizedError(f"admin token refused: {message}")


def _header(token: str) -> dict[str, Any]:
    # Read the protected header ourselves, before PyJWT, so that alg/typ/kid are checked
    # against our own rules whatever PyJWT would tolerate.
    try:
        head_b64 = token.split(".", 1)[0]
        head = json.loads(base64.urlsafe_b64decode(head_b64 + "=" * (-len(head_b64) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _unauthorized("not a JWT") from exc
    if not isinstance(head, dict):
        raise _unauthorized("not a JWT")
    return head


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**40:
        raise _unauthorized(f"claim {name!r} must be a NumericDate (integer seconds)")
    return value


def verify_token(
    token: str,
    *,
    keys: Sequence[AdminPublicKey],
    audience: str,
    now: datetime,
    table: PermissionTable,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> Principal:
    """Verify an admin token and return its :class:`Principal`.

    Plan:
      1. size and header: ``typ``, ``kid`` of one of ``keys``, ``alg`` the one that key uses;
      2. signature, by PyJWT with exactly that one algorithm allowed;
      3. required claims present and well-typed;
      4. ``aud`` is ``audience`` (a string or a list containing it);
      5. ``iat`` and ``nbf`` not in the future, ``exp`` not past (``leeway`` either way);
      6. every role known to ``table``.
    Raises :class:`AdminUnauthorizedError` at the first failure.
    """
    _aware(now, "now")
    if not keys:
        raise ValueError("no verification keys given: nothing could ever verify")
    # 1.
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LENGTH:
        raise _unauthorized("missing or too long")
    header = _header(token)
    if header.get("typ") != TOKEN_TYPE:
        raise _unauthorized(f"type must be {TOKEN_TYPE}")
    by_kid = {key_id(k): k for k in keys}
    key = by_kid.get(header.get("kid"))  # type: ignore[arg-type]
    if key is None:
        raise _unauthorized("not signed by a key of this server (kid)")
    alg = _algorithm_for(key)
    if header.get("alg") != alg:
        raise _unauthorized(f"algorithm {header.get('alg')!r} is not allowed (expected {alg})")
    # 2. Time and audience checks are ours (step 4, 5): PyJWT would read the clock.
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "verify_aud": False, "verify_iss": False, "verify_sub": False,
                     "verify_jti": False},
        )
    except jwt.PyJWTError as exc:
        raise _unauthorized("signature does not verify or the token is malformed") from exc
    # 3.
    missing = [c for c in _REQUIRED_CLAIMS if c not in claims]
    if missing:
        raise _unauthorized(f"missing claim(s): {', '.join(missing)}")
    subject, roles = claims["sub"], claims["roles"]
    if not isinstance(subject, str) or not 0 < len(subject) <= _MAX_SUBJECT_LENGTH:
        raise _unauthorized("claim 'sub' must be a non-empty string")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise _unauthorized("claim 'roles' must be a non-empty list of strings")
    iat, exp = _int_claim(claims, "iat"), _int_claim(claims, "exp")
    nbf = _int_claim(claims, "nbf") if "nbf" in claims else None
    # 4.
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or audience not in audiences:
        raise _unauthorized(f"not issued for this server (audience {audience!r})")
    # 5.
    t, slack = now.astimezone(UTC).timestamp(), leeway.total_seconds()
    if iat > t + slack or (nbf is not None and nbf > t + slack):
        raise _unauthorized("not yet valid")
    if exp <= t - slack:
        raise _unauthorized("expired")
    # 6.
    unknown = sorted(set(roles) - table.roles)
    if unknown:
        raise _unauthorized(f"unknown role(s): {', '.join(unknown)}")
    return Principal(subject=subject, roles=frozenset(roles))
