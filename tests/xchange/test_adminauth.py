"""Tests of admin bearer tokens: issuing, verification failures, authorisation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from xchange.adminauth import (
    TOKEN_TYPE,
    AdminPrivateKey,
    PermissionTable,
    Principal,
    issue_token,
    key_id,
    require,
    verify_token,
)
from xchange.errors import AdminForbiddenError, AdminUnauthorizedError, XRoadError

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
AUD = "xchange-registry:TEST"
TABLE = PermissionTable({
    "registration_officer": frozenset({"members.write", "members.read"}),
    "observer": frozenset({"members.read"}),
    "nobody": frozenset(),
})


@pytest.fixture(scope="module", params=["ec", "ed25519"])
def key(request: pytest.FixtureRequest) -> AdminPrivateKey:
    if request.param == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def token(key: AdminPrivateKey, **changes: Any) -> str:
    args: dict[str, Any] = {
        "subject": "alice", "roles": ["observer"], "audience": AUD,
        "issued_at": NOW, "lifetime": timedelta(hours=1),
    }
    args.update(changes)
    return issue_token(key, **args)


def verify(tok: str, key: AdminPrivateKey, **changes: Any) -> Principal:
    args: dict[str, Any] = {"keys": [key.public_key()], "audience": AUD, "now": NOW,
                            "table": TABLE}
    args.update(changes)
    return verify_token(tok, **args)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A token written by hand, signed by ``sign(signing_input)`` (or unsigned)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = b"" if sign is None else sign(signing_input.encode())
    return f"{signing_input}.{b64(sig)}"


def good_claims(**changes: Any) -> dict[str, Any]:
    iat = int(NOW.timestamp())
    claims: dict[str, Any] = {"sub": "alice", "roles": ["observer"], "aud": AUD,
                              "iat": iat, "exp": iat + 3600}
    claims.update(changes)
    return claims


def test_round_trip(key: AdminPrivateKey) -> None:
    tok = token(key, roles=["observer", "registration_officer"])
    principal = verify(tok, key)
    assert principal == Principal("alice", frozenset({"observer", "registration_officer"}))
    header = jwt.get_unverified_header(tok)
    assert header["typ"] == TOKEN_TYPE
    assert header["kid"] == key_id(key.public_key())
    assert header["alg"] == ("ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA")


def test_leeway_accepts_small_skew(key: AdminPrivateKey) -> None:
    tok = token(key, issued_at=NOW + timedelta(seconds=20), lifetime=timedelta(seconds=60))
    assert verify(tok, key).subject == "alice"
    assert verify(tok, key, now=NOW + timedelta(seconds=100)).subject == "alice"


def test_key_rollover_picks_the_key_by_kid(key: AdminPrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    tok = token(key)
    assert verify(tok, key, keys=[other.public_key(), key.public_key()]).subject == "alice"


# -- every way a token is refused ------------------------------------------------------------


def test_alg_none_refused(key: AdminPrivateKey) -> None:
    header = {"alg": "none", "typ": TOKEN_TYPE, "kid": key_id(key.public_key())}
    with pytest.raises(AdminUnauthorizedError, match="algorithm 'none' is not allowed"):
        verify(forge(header, good_claims()), key)


def test_hs256_with_the_public_key_as_secret_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": TOKEN_TYPE, "kid": key_id(key.public_key())}
    tok = forge(header, good_claims(), lambda m: hmac.new(pem, m, hashlib.sha256).digest())
    with pytest.raises(AdminUnauthorizedError, match="'HS256' is not allowed"):
        verify(tok, key)


def test_wrong_asymmetric_alg_refused() -> None:
    """An EdDSA-labelled token for an EC key (alg confusion) is refused before verifying."""
    key = ec.generate_private_key(ec.SECP256R1())
    header = {"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": key_id(key.public_key())}
    with pytest.raises(AdminUnauthorizedError, match="expected ES256"):
        verify(forge(header, good_claims(), lambda m: b"x" * 64), key)


def test_signature_by_another_key_with_our_kid_refused(key: AdminPrivateKey) -> None:
    impostor: AdminPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if isinstance(key, ec.EllipticCurvePrivateKey) else ed25519.Ed25519PrivateKey.generate()
    )
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
    tok = jwt.encode(good_claims(), impostor, algorithm=alg,
                     headers={"typ": TOKEN_TYPE, "kid": key_id(key.public_key())})
    with pytest.raises(AdminUnauthorizedError, match="signature does not verify"):
        verify(tok, key)


def test_unknown_kid_refused(key: AdminPrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AdminUnauthorizedError, match="not signed by a key of this server"):
        verify(token(other), key)


def test_wrong_typ_refused(key: AdminPrivateKey) -> None:
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
    tok = jwt.encode(good_claims(), key, algorithm=alg,
                     headers={"typ": "JWT", "kid": key_id(key.public_key())})
    with pytest.raises(AdminUnauthorizedError, match="type must be"):
        verify(tok, key)


def test_expired_refused(key: AdminPrivateKey) -> None:
    tok = token(key, lifetime=timedelta(minutes=5))
    with pytest.raises(AdminUnauthorizedError, match="expired"):
        verify(tok, key, now=NOW + timedelta(minutes=5, seconds=31))


def test_not_yet_valid_refused(key: AdminPrivateKey) -> None:
    with pytest.raises(AdminUnauthorizedError, match="not yet valid"):
        verify(token(key, issued_at=NOW + timedelta(minutes=2)), key)


def test_nbf_in_the_future_refused(key: AdminPrivateKey) -> None:
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
    claims = good_claims(nbf=int(NOW.timestamp()) + 600)
    tok = jwt.encode(claims, key, algorithm=alg,
                     headers={"typ": TOKEN_TYPE, "kid": key_id(key.public_key())})
    with pytest.raises(AdminUnauthorizedError, match="not yet valid"):
        verify(tok, key)


def test_wrong_audience_refused(key: AdminPrivateKey) -> None:
    tok = token(key, audience="xchange-ss:TEST/GOV/1/ss1")
    with pytest.raises(AdminUnauthorizedError, match="not issued for this server"):
        verify(tok, key)


@pytest.mark.parametrize("claim", ["sub", "roles", "iat", "exp", "aud"])
def test_missing_claim_refused(key: AdminPrivateKey, claim: str) -> None:
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
    claims = good_claims()
    del claims[claim]
    tok = jwt.encode(claims, key, algorithm=alg,
                     headers={"typ": TOKEN_TYPE, "kid": key_id(key.public_key())})
    with pytest.raises(AdminUnauthorizedError, match=rf"missing claim.*{claim}"):
        verify(tok, key)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"roles": "observer"}, "'roles' must be a non-empty list"),
        ({"roles": []}, "'roles' must be a non-empty list"),
        ({"sub": ""}, "'sub' must be a non-empty string"),
        ({"exp": "tomorrow"}, "'exp' must be a NumericDate"),
        ({"iat": 1.5}, "'iat' must be a NumericDate"),
    ],
)
def test_malformed_claims_refused(key: AdminPrivateKey, changes: dict[str, Any],
                                  message: str) -> None:
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
    tok = jwt.encode(good_claims(**changes), key, algorithm=alg,
                     headers={"typ": TOKEN_TYPE, "kid": key_id(key.public_key())})
    with pytest.raises(AdminUnauthorizedError, match=message):
        verify(tok, key)


def test_unknown_role_refused(key: AdminPrivateKey) -> None:
    tok = token(key, roles=["observer", "superuser"])
    with pytest.raises(AdminUnauthorizedError, match=r"unknown role.*superuser"):
        verify(tok, key)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "!!!.e30.x", "x" * 9000])
def test_garbage_refused(key: AdminPrivateKey, garbage: str) -> None:
    with pytest.raises(AdminUnauthorizedError) as info:
        verify(garbage, key)
    assert info.value.code == "admin.unauthorized"
    assert info.value.status == 401
    if garbage:  # the token is never echoed back
        assert garbage not in info.value.message


# -- authorisation ---------------------------------------------------------------------------


def test_require_grants_by_any_role() -> None:
    officer = Principal("bob", frozenset({"observer", "registration_officer"}))
    require(officer, "members.write", TABLE)
    require(officer, "members.read", TABLE)


def test_role_lacking_the_right_is_forbidden() -> None:
    observer = Principal("carol", frozenset({"observer"}))
    with pytest.raises(AdminForbiddenError) as info:
        require(observer, "members.write", TABLE)
    assert isinstance(info.value, XRoadError)
    assert (info.value.code, info.value.status) == ("admin.forbidden", 403)
    assert "carol" in info.value.message and "members.write" in info.value.message
    with pytest.raises(AdminForbiddenError):
        require(Principal("dave", frozenset({"nobody"})), "members.read", TABLE)


# -- programming errors are not token errors --------------------------------------------------


def test_programming_errors() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_token(token(key), keys=[key.public_key()], audience=AUD,
                     now=NOW.replace(tzinfo=None), table=TABLE)
    with pytest.raises(ValueError, match="no verification keys"):
        verify_token(token(key), keys=[], audience=AUD, now=NOW, table=TABLE)
    with pytest.raises(ValueError, match="P-256"):
        issue_token(ec.generate_private_key(ec.SECP384R1()), subject="a", roles=["observer"],
                    audience=AUD, issued_at=NOW, lifetime=timedelta(hours=1))
    with pytest.raises(ValueError, match="unsupported"):
        issue_token(rsa.generate_private_key(public_exponent=65537, key_size=2048),  # type: ignore[arg-type]
                    subject="a", roles=["observer"], audience=AUD, issued_at=NOW,
                    lifetime=timedelta(hours=1))
    with pytest.raises(ValueError, match="at least one role"):
        token(key, roles=[])
    with pytest.raises(ValueError, match="lifetime"):
        token(key, lifetime=timedelta(0))
    with pytest.raises(ValueError, match="at least one role"):
        PermissionTable({})
