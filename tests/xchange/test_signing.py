"""Tests of xchange.signing: detached JWS message signatures and their verification plan."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.ca import DevCA, IssuedCredentials
from certs.keys import PrivateKey
from xchange.certificates import cert_to_b64der
from xchange.errors import InvalidSignatureError
from xchange.identifiers import ClientId
from xchange.rest import digest_payload
from xchange.signing import (
    JWS_TYPE,
    SigningIdentity,
    VerifiedSignature,
    sign_message,
    sign_payload,
    verify_message,
    verify_payload,
)

MEMBER = ClientId("TEST", "GOV", "1234")
CLIENT = MEMBER.subsystem_of("benefits")
OTHER_MEMBER = ClientId("TEST", "GOV", "5678")
CODE = "server.serverproxy.invalid_signature"
HEADER_PART = b'{"client":"TEST/GOV/1234/benefits","id":"m-1","type":"xchange-rest-request"}'
BODY = b'{"query": "38001010001"}'


# -- fixtures: one CA, its signers, and strangers ---------------------------------------------


@dataclass(frozen=True)
class Pki:
    now: datetime
    anchors: list[x509.Certificate]
    sign_ec: IssuedCredentials
    sign_rsa: IssuedCredentials
    other_member: IssuedCredentials
    foreign: IssuedCredentials
    auth: IssuedCredentials
    p384_key: ec.EllipticCurvePrivateKey
    p384_chain: tuple[x509.Certificate, ...]

    def identity(self, creds: IssuedCredentials, member: ClientId = MEMBER) -> SigningIdentity:
        return SigningIdentity(member, creds.key, creds.chain)


@pytest.fixture(scope="session")
def pki(
    tmp_path_factory: pytest.TempPathFactory,
    dev_ca: DevCA,
    pki_now: datetime,
    issue_member_sign: Callable[..., IssuedCredentials],
    issue_server_auth: Callable[..., IssuedCredentials],
) -> Pki:
    # A CA of the same instance name but another key: its certificates must not pass.
    foreign_ca = DevCA.create(tmp_path_factory.mktemp("foreign-ca"), "TEST", now=pki_now)
    p384 = ec.generate_private_key(ec.SECP384R1())
    p384_cert = dev_ca.issue_sign_cert(MEMBER, "Test Member", p384.public_key(), now=pki_now)
    return Pki(
        now=pki_now,
        anchors=[dev_ca.certificate],
        sign_ec=issue_member_sign(str(MEMBER)),
        sign_rsa=dev_ca.issue_key_and_cert(
            tmp_path_factory.mktemp("sign-rsa"), "sign", MEMBER, member_name="Test Member",
            now=pki_now, key_kind="rsa",
        ),
        other_member=issue_member_sign(str(OTHER_MEMBER)),
        foreign=foreign_ca.issue_key_and_cert(
            tmp_path_factory.mktemp("sign-foreign"), "sign", MEMBER, member_name="Test Member",
            now=pki_now,
        ),
        auth=issue_server_auth(f"{MEMBER}/ss1"),
        p384_key=p384,
        p384_chain=(p384_cert, dev_ca.certificate),
    )


def verify(
    pki: Pki,
    signature: str,
    header_part: bytes = HEADER_PART,
    body: bytes = BODY,
    *,
    expected: ClientId = CLIENT,
    at: datetime | None = None,
    code: str = CODE,
) -> VerifiedSignature:
    return verify_message(
        signature, header_part, body, expected_signer=expected, anchors=pki.anchors,
        at=pki.now if at is None else at, code=code,
    )


# -- hand-made tokens ---------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def x5c(chain: tuple[x509.Certificate, ...]) -> list[str]:
    return [cert_to_b64der(c) for c in chain]


def pyjws(
    key: PrivateKey, alg: str, headers: dict[str, Any], payload: bytes | None = None
) -> str:
    """A detached JWS over ``payload`` (the digest of the test message by default), signed by
    ``key`` with ``alg`` and carrying ``headers`` -- for algorithms and headers that
    ``sign_message`` would never produce."""
    token: str = jwt.PyJWS().encode(
        digest_payload(HEADER_PART, BODY) if payload is None else payload,
        key, algorithm=alg, headers={"typ": JWS_TYPE, "b64": False, "crit": ["b64"], **headers},
        is_payload_detached=True,
    )
    return token


def unsigned_token(header: dict[str, Any], signature: bytes = b"") -> str:
    """A detached compact JWS assembled byte by byte, with whatever signature is given."""
    header = {"b64": False, "crit": ["b64"], **header}
    return f"{b64url(json.dumps(header).encode())}..{b64url(signature)}"


def replace_protected_header(token: str, change: dict[str, Any]) -> str:
    """The same token with ``change`` merged into its protected header, signature kept."""
    protected, payload, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    header.update(change)
    return f"{b64url(json.dumps(header).encode())}.{payload}.{signature}"


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(("which", "alg"), [("sign_ec", "ES256"), ("sign_rsa", "PS256")])
def test_round_trip(pki: Pki, which: str, alg: str) -> None:
    creds: IssuedCredentials = getattr(pki, which)
    identity = pki.identity(creds)
    assert identity.algorithm == alg
    signature = sign_message(identity, HEADER_PART, BODY)

    _, payload, _ = signature.split(".")
    assert payload == "", "the payload must be detached"
    header = jwt.get_unverified_header(signature)
    assert header["alg"] == alg
    assert header["typ"] == JWS_TYPE
    assert header["x5c"] == x5c(creds.chain)

    result = verify(pki, signature)
    assert result == VerifiedSignature(
        signer=MEMBER, certificate=creds.certificate, chain=creds.chain, algorithm=alg
    )


@pytest.mark.parametrize(("which", "alg"), [("sign_ec", "ES256"), ("sign_rsa", "PS256")])
def test_signatures_verify_with_another_jws_implementation(pki: Pki, which: str,
                                                           alg: str) -> None:
    """xchange writes its tokens itself; PyJWT, independent of it, must accept them."""
    creds: IssuedCredentials = getattr(pki, which)
    signature = sign_message(pki.identity(creds), HEADER_PART, BODY,
                             signed_at=pki.now, nonce="n" * 20)
    decoded = jwt.PyJWS().decode_complete(
        signature, key=creds.certificate.public_key(), algorithms=[alg],  # type: ignore[arg-type]
        detached_payload=digest_payload(HEADER_PART, BODY))
    assert decoded["header"]["jti"] == "n" * 20


def test_ec_signing_keys_must_be_p256(pki: Pki) -> None:
    with pytest.raises(ValueError, match="P-256"):
        SigningIdentity(MEMBER, pki.p384_key, pki.p384_chain)


def test_rs256_is_accepted_on_input(pki: Pki) -> None:
    signature = pyjws(pki.sign_rsa.key, "RS256", {"typ": JWS_TYPE, "x5c": x5c(pki.sign_rsa.chain)})
    assert verify(pki, signature).algorithm == "RS256"


@pytest.mark.parametrize("expected", [MEMBER, CLIENT, MEMBER.subsystem_of("analytics")])
def test_any_subsystem_of_the_signing_member_is_accepted(pki: Pki, expected: ClientId) -> None:
    signature = sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY)
    assert verify(pki, signature, expected=expected).signer == MEMBER


def test_empty_body_signs_the_header_part_alone(pki: Pki) -> None:
    signature = sign_message(pki.identity(pki.sign_ec), HEADER_PART, b"")
    assert verify(pki, signature, body=b"").signer == MEMBER
    # The body digest is part of what is signed: adding a body afterwards breaks it ...
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify(pki, signature, body=b"\x00")
    # ... and so does dropping one.
    with_body = sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify(pki, with_body, body=b"")


def test_verification_at_the_edges_of_validity(pki: Pki) -> None:
    signature = sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY)
    cert = pki.sign_ec.certificate
    verify(pki, signature, at=cert.not_valid_before_utc)
    verify(pki, signature, at=cert.not_valid_after_utc)


def test_naive_verification_time_is_a_programming_error(pki: Pki) -> None:
    signature = sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(pki, signature, at=pki.now.replace(tzinfo=None))


def test_signing_time_and_nonce_travel_in_the_protected_header(pki: Pki) -> None:
    nonce = "0123456789abcdef0123"
    signature = sign_message(
        pki.identity(pki.sign_ec), HEADER_PART, BODY, signed_at=pki.now, nonce=nonce
    )
    header = jwt.get_unverified_header(signature)
    assert (header["iat"], header["jti"]) == (int(pki.now.timestamp()), nonce)
    result = verify(pki, signature)
    assert (result.signed_at, result.nonce) == (pki.now, nonce)
    # Covered by the signature like the rest of the header.
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify(pki, replace_protected_header(signature, {"jti": "f" * 20}))


@pytest.mark.parametrize("nonce", ["short", "x" * 129, "ü" * 20])
def test_signing_refuses_a_malformed_nonce(pki: Pki, nonce: str) -> None:
    with pytest.raises(ValueError, match="nonce"):
        sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY, nonce=nonce)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"iat": "1700000000"}, "malformed iat"),
        ({"iat": True}, "malformed iat"),
        ({"iat": 0}, "malformed iat"),
        ({"iat": 2**40}, "malformed iat"),
        ({"iat": 1.5}, "malformed iat"),
        ({"jti": "short"}, "malformed jti"),
        ({"jti": 12345678901234567890}, "malformed jti"),
        ({"jti": "x" * 129}, "malformed jti"),
    ],
)
def test_malformed_signing_time_or_nonce_is_refused(
    pki: Pki, extra: dict[str, Any], message: str
) -> None:
    token = pyjws(pki.sign_ec.key, "ES256", {"x5c": x5c(pki.sign_ec.chain), **extra})
    with pytest.raises(InvalidSignatureError, match=message):
        verify(pki, token)


# -- tampering with the message or the token -----------------------------------------------------


@pytest.mark.parametrize(
    ("header_part", "body"),
    [
        pytest.param(flip(HEADER_PART, 0), BODY, id="header-part-first-byte"),
        pytest.param(flip(HEADER_PART, len(HEADER_PART) - 1), BODY, id="header-part-last-byte"),
        pytest.param(HEADER_PART + b" ", BODY, id="header-part-extended"),
        pytest.param(HEADER_PART, flip(BODY, 0), id="body-first-byte"),
        pytest.param(HEADER_PART, flip(BODY, len(BODY) - 1), id="body-last-byte"),
        pytest.param(HEADER_PART, BODY[:-1], id="body-truncated"),
        pytest.param(BODY, HEADER_PART, id="parts-swapped"),
    ],
)
@pytest.mark.parametrize("which", ["sign_ec", "sign_rsa"])
def test_any_changed_byte_breaks_the_signature(
    pki: Pki, which: str, header_part: bytes, body: bytes
) -> None:
    signature = sign_message(pki.identity(getattr(pki, which)), HEADER_PART, BODY)
    with pytest.raises(InvalidSignatureError, match="does not verify") as info:
        verify(pki, signature, header_part, body)
    assert info.value.code == CODE


def test_changed_protected_header_breaks_the_signature(pki: Pki) -> None:
    signature = sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify(pki, replace_protected_header(signature, {"kid": "another"}))


def test_changed_signature_bytes_break_it(pki: Pki) -> None:
    protected, _, sig = sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY).split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify(pki, f"{protected}..{b64url(flip(raw, 10))}")


def test_attached_payload_is_refused(pki: Pki) -> None:
    # A JWS with the digest attached (b64 not false) is signed over other bytes than a
    # detached one; accepting it would let a signature made for another purpose pass.
    token = jwt.PyJWS().encode(
        digest_payload(HEADER_PART, BODY), pki.sign_ec.key, algorithm="ES256",
        headers={"typ": JWS_TYPE, "x5c": x5c(pki.sign_ec.chain)},
    )
    with pytest.raises(InvalidSignatureError, match="unencoded detached payload"):
        verify(pki, token)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"typ": "JWT"}, "not of type"),
        ({"typ": None}, "not of type"),
        ({"b64": True}, "unencoded detached payload"),
        ({"crit": []}, "not a JWS|unencoded detached payload"),  # PyJWT refuses it first
    ],
)
def test_protected_header_form_is_checked(pki: Pki, change: dict[str, Any],
                                          message: str) -> None:
    signature = sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY)
    with pytest.raises(InvalidSignatureError, match=message):
        verify(pki, replace_protected_header(signature, change))


# -- who signed, with which certificate, when -------------------------------------------------


def test_signer_of_another_member_is_refused(pki: Pki) -> None:
    signature = sign_message(pki.identity(pki.other_member, OTHER_MEMBER), HEADER_PART, BODY)
    with pytest.raises(InvalidSignatureError, match="signed by TEST/GOV/5678"):
        verify(pki, signature)


def test_certificate_of_a_foreign_ca_is_refused(pki: Pki) -> None:
    # The foreign CA's own certificate rides along in x5c; it must not count as an anchor.
    signature = sign_message(pki.identity(pki.foreign), HEADER_PART, BODY)
    with pytest.raises(InvalidSignatureError, match="does not chain to a trusted CA"):
        verify(pki, signature)


@pytest.mark.parametrize(
    ("shift", "message"),
    [
        (timedelta(seconds=-1), "not yet valid"),
        (timedelta(days=731), "expired"),
    ],
)
def test_signing_certificate_outside_its_validity_is_refused(
    pki: Pki, shift: timedelta, message: str
) -> None:
    signature = sign_message(pki.identity(pki.sign_ec), HEADER_PART, BODY)
    with pytest.raises(InvalidSignatureError, match=message):
        verify(pki, signature, at=pki.now + shift)


def test_authentication_certificate_cannot_sign(pki: Pki) -> None:
    signature = sign_message(pki.identity(pki.auth), HEADER_PART, BODY)
    with pytest.raises(InvalidSignatureError, match="wrong extended key usage for signing"):
        verify(pki, signature)


def test_ca_certificate_as_leaf_cannot_sign(pki: Pki, dev_ca: DevCA) -> None:
    token = pyjws(pki.sign_ec.key, "ES256", {"x5c": x5c((dev_ca.certificate,))})
    with pytest.raises(InvalidSignatureError, match="wrong key usage for signing"):
        verify(pki, token)


# -- malformed or hostile tokens ----------------------------------------------------------------


def _hmac_with_public_key(pki: Pki) -> str:
    # The classic algorithm-confusion attack: HMAC keyed with the signer's *public* key.
    header = {"alg": "HS256", "typ": JWS_TYPE, "b64": False, "crit": ["b64"],
              "x5c": x5c(pki.sign_ec.chain)}
    protected = b64url(json.dumps(header).encode())
    secret = pki.sign_ec.certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = protected.encode() + b"." + digest_payload(HEADER_PART, BODY)
    return f"{protected}..{b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())}"


BadToken = Callable[[Pki], str]

MALFORMED: list[Any] = [
    pytest.param(
        lambda p: unsigned_token({"alg": "none", "typ": JWS_TYPE, "x5c": x5c(p.sign_ec.chain)}),
        "algorithm 'none' is not allowed", id="alg-none",
    ),
    pytest.param(
        lambda p: unsigned_token({"typ": JWS_TYPE, "x5c": x5c(p.sign_ec.chain)}, b"x" * 64),
        "algorithm None is not allowed", id="alg-missing",
    ),
    pytest.param(_hmac_with_public_key, "algorithm 'HS256' is not allowed", id="alg-HS256"),
    pytest.param(
        lambda p: pyjws(p.p384_key, "ES384", {"x5c": x5c(p.p384_chain)}),
        "algorithm 'ES384' is not allowed", id="alg-ES384",
    ),
    pytest.param(lambda p: pyjws(p.sign_ec.key, "ES256", {}), "no x5c", id="x5c-missing"),
    pytest.param(lambda p: pyjws(p.sign_ec.key, "ES256", {"x5c": []}), "no x5c", id="x5c-empty"),
    pytest.param(
        lambda p: pyjws(p.sign_ec.key, "ES256", {"x5c": cert_to_b64der(p.sign_ec.certificate)}),
        "no x5c", id="x5c-not-a-list",
    ),
    pytest.param(
        lambda p: pyjws(p.sign_ec.key, "ES256", {"x5c": [42]}), "no x5c", id="x5c-not-strings",
    ),
    pytest.param(
        lambda p: pyjws(p.sign_ec.key, "ES256", {"x5c": ["not base64!"]}),
        "unreadable certificate", id="x5c-not-base64",
    ),
    pytest.param(
        lambda p: pyjws(p.sign_ec.key, "ES256", {"x5c": [b64url(b"\x30\x03\x02\x01\x00")]}),
        "unreadable certificate", id="x5c-not-a-certificate",
    ),
    pytest.param(
        lambda p: pyjws(p.sign_ec.key, "ES256", {"x5c": [*x5c(p.sign_ec.chain), "AAAA"]}),
        "unreadable certificate", id="x5c-garbage-after-leaf",
    ),
    pytest.param(
        lambda p: pyjws(p.sign_ec.key, "ES256", {"x5c": x5c(p.sign_rsa.chain)}),
        "ES256 does not match the certificate's key", id="ES256-with-RSA-leaf",
    ),
    pytest.param(
        lambda p: pyjws(p.sign_ec.key, "ES256", {"x5c": x5c(p.p384_chain)}),
        "ES256 does not match the certificate's key", id="ES256-with-P384-leaf",
    ),
    pytest.param(
        lambda p: pyjws(p.sign_rsa.key, "PS256", {"x5c": x5c(p.sign_ec.chain)}),
        "PS256 does not match the certificate's key", id="PS256-with-EC-leaf",
    ),
    pytest.param(
        lambda p: pyjws(p.sign_rsa.key, "RS256", {"x5c": x5c(p.sign_ec.chain)}),
        "RS256 does not match the certificate's key", id="RS256-with-EC-leaf",
    ),
    pytest.param(
        # Right certificate, wrong key: a valid signature, but not by the certificate's holder.
        lambda p: pyjws(p.other_member.key, "ES256", {"x5c": x5c(p.sign_ec.chain)}),
        "does not verify", id="key-not-the-leafs",
    ),
    pytest.param(
        # Otherwise valid: length alone refuses it, before any parsing.
        lambda p: pyjws(
            p.sign_ec.key, "ES256", {"x5c": x5c(p.sign_ec.chain), "pad": "x" * 64 * 1024}
        ),
        "too long", id="over-long",
    ),
    pytest.param(lambda p: "", "not a JWS", id="empty"),
    pytest.param(lambda p: "garbage", "not a JWS", id="garbage"),
    pytest.param(lambda p: "!!!..AAAA", "not a JWS", id="header-not-base64url"),
    pytest.param(lambda p: f"{b64url(b'[1, 2]')}..AAAA", "not a JWS", id="header-not-object"),
]


@pytest.mark.parametrize(("make", "message"), MALFORMED)
def test_malformed_or_hostile_token_is_refused(pki: Pki, make: BadToken, message: str) -> None:
    with pytest.raises(InvalidSignatureError, match=message) as info:
        verify(pki, make(pki))
    assert info.value.code == CODE


# -- the caller's error code ------------------------------------------------------------------


FAILURES: list[Any] = [
    pytest.param(lambda p: ("garbage", {}), id="not-a-jws"),
    pytest.param(
        lambda p: (unsigned_token({"alg": "none", "x5c": x5c(p.sign_ec.chain)}), {}), id="alg-none"
    ),
    pytest.param(lambda p: (pyjws(p.sign_ec.key, "ES256", {}), {}), id="no-x5c"),
    pytest.param(
        lambda p: (sign_message(p.identity(p.foreign), HEADER_PART, BODY), {}), id="foreign-ca"
    ),
    pytest.param(
        lambda p: (sign_message(p.identity(p.sign_ec), HEADER_PART, BODY),
                   {"at": p.now + timedelta(days=731)}),
        id="expired",
    ),
    pytest.param(
        lambda p: (sign_message(p.identity(p.other_member, OTHER_MEMBER), HEADER_PART, BODY),
                   {}),
        id="other-member",
    ),
    pytest.param(
        lambda p: (sign_message(p.identity(p.sign_ec), HEADER_PART, BODY), {"body": b"changed"}),
        id="tampered",
    ),
]


@pytest.mark.parametrize(
    "code", ["server.serverproxy.invalid_signature", "server.clientproxy.invalid_signature"]
)
@pytest.mark.parametrize("make", FAILURES)
def test_the_callers_code_is_raised(
    pki: Pki, make: Callable[[Pki], tuple[str, dict[str, Any]]], code: str
) -> None:
    signature, overrides = make(pki)
    with pytest.raises(InvalidSignatureError) as info:
        verify(pki, signature, code=code, **overrides)
    assert info.value.code == code
    assert info.value.to_json()["type"] == code


def test_payload_forms_are_the_message_forms(pki: Pki) -> None:
    """sign_payload/verify_payload are sign_message/verify_message over digest_payload."""
    identity = pki.identity(pki.sign_ec)
    payload = digest_payload(HEADER_PART, BODY)
    by_payload = sign_payload(identity, payload)
    verify(pki, by_payload)  # verifies as a message signature
    by_message = sign_message(identity, HEADER_PART, BODY)
    verify_payload(by_message, payload, expected_signer=CLIENT, anchors=pki.anchors,
                   at=pki.now, code=CODE)
    with pytest.raises(InvalidSignatureError):
        verify_payload(by_message, digest_payload(HEADER_PART, BODY + b"x"),
                       expected_signer=CLIENT, anchors=pki.anchors, at=pki.now, code=CODE)
