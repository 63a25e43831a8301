"""Tests of xchange.certificates: identities in subjects, chain verification, encodings."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from certs.ca import DevCA, IssuedCredentials, make_csr
from certs.keys import PrivateKey, generate_private_key
from xchange import certificates as certificates_module
from xchange.certificates import (
    OID_SERIAL_NUMBER,
    CertPurpose,
    VerifiedPathCache,
    auth_cert_subject,
    cert_from_b64der,
    cert_sha256,
    cert_to_b64der,
    load_pem_chain,
    member_of_sign_cert,
    server_of_auth_cert,
    sign_cert_subject,
    verify_chain,
)
from xchange.errors import BadRequestError, InvalidSignatureError
from xchange.identifiers import ClientId, SecurityServerId

MEMBER = ClientId("TEST", "GOV", "1234")
SERVER = SecurityServerId(MEMBER, "ss1")
DER = serialization.Encoding.DER


@pytest.fixture(scope="session")
def sign_creds(issue_member_sign: Callable[..., IssuedCredentials]) -> IssuedCredentials:
    return issue_member_sign(str(MEMBER))


@pytest.fixture(scope="session")
def auth_creds(issue_server_auth: Callable[..., IssuedCredentials]) -> IssuedCredentials:
    return issue_server_auth(str(SERVER))


@pytest.fixture(scope="session")
def tls_creds(
    tmp_path_factory: pytest.TempPathFactory, dev_ca: DevCA, pki_now: datetime
) -> IssuedCredentials:
    return dev_ca.issue_key_and_cert(
        tmp_path_factory.mktemp("tls"), "tls", "is.example", now=pki_now
    )


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory, pki_now: datetime) -> DevCA:
    """A CA of the same name as ``dev_ca`` but with another key: must not be confused with it."""
    return DevCA.create(tmp_path_factory.mktemp("other-ca"), "TEST", now=pki_now)


def _csr_subject(name: x509.Name) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(make_csr(generate_private_key(), name))


# -- subjects and identities ------------------------------------------------------------------


def test_sign_subject_has_the_profile_attributes() -> None:
    name = sign_cert_subject(MEMBER, "Ministry of Tests", country="EE")
    assert name.rfc4514_string() == (
        "2.5.4.5=TEST/GOV/1234,CN=1234,OU=GOV,O=Ministry of Tests,C=EE"
    )


def test_auth_subject_has_the_profile_attributes() -> None:
    name = auth_cert_subject(SERVER, "Ministry of Tests")
    assert (
        name.rfc4514_string() == "2.5.4.5=TEST/GOV/1234/ss1,CN=ss1,OU=GOV,O=Ministry of Tests,C=XX"
    )


@pytest.mark.parametrize(
    ("member", "asn1_type"),
    [
        (ClientId("TEST", "GOV", "1234"), _ASN1Type.PrintableString),
        (ClientId("TEST", "GOV", "a_b"), _ASN1Type.UTF8String),
        (ClientId("TEST", "GOV", "Mä#1"), _ASN1Type.UTF8String),  # percent-encoded
    ],
)
def test_member_round_trips_through_a_sign_subject(member: ClientId, asn1_type: _ASN1Type) -> None:
    csr = _csr_subject(sign_cert_subject(member, "Org"))
    [attribute] = csr.subject.get_attributes_for_oid(OID_SERIAL_NUMBER)
    assert attribute._type == asn1_type
    assert member_of_sign_cert(csr) == member


def test_server_round_trips_through_an_auth_subject() -> None:
    server = SecurityServerId(ClientId("TEST", "COM", "x_y"), "ss-1")
    assert server_of_auth_cert(_csr_subject(auth_cert_subject(server, "Org"))) == server


def test_identities_are_read_from_issued_certificates(
    sign_creds: IssuedCredentials, auth_creds: IssuedCredentials
) -> None:
    assert member_of_sign_cert(sign_creds.certificate) == MEMBER
    assert server_of_auth_cert(auth_creds.certificate) == SERVER


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


_CN = (NameOID.COMMON_NAME, "1234")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (_name(_CN), "exactly one serialNumber"),
        (
            _name(_CN, (OID_SERIAL_NUMBER, "TEST/GOV/1"), (OID_SERIAL_NUMBER, "TEST/GOV/2")),
            "exactly one serialNumber",
        ),
        (_name((OID_SERIAL_NUMBER, "1234567")), "not a member identifier"),
        (_name((OID_SERIAL_NUMBER, "TEST/GOV/1234/ss1")), "not a member identifier"),
        (_name((OID_SERIAL_NUMBER, "TEST//1234")), "not a member identifier"),
    ],
)
def test_sign_identity_refuses_bad_serial_numbers(name: x509.Name, message: str) -> None:
    with pytest.raises(InvalidSignatureError, match=message):
        member_of_sign_cert(_csr_subject(name))


@pytest.mark.parametrize(
    "name",
    [_name(_CN), _name((OID_SERIAL_NUMBER, "TEST/GOV/1234")), _name((OID_SERIAL_NUMBER, "x"))],
)
def test_auth_identity_refuses_bad_serial_numbers(name: x509.Name) -> None:
    with pytest.raises(InvalidSignatureError, match="serialNumber"):
        server_of_auth_cert(_csr_subject(name))


@pytest.mark.parametrize(
    ("member", "member_name", "country", "message"),
    [
        (MEMBER.subsystem_of("sub"), "Org", "XX", "subsystem"),
        (MEMBER, "   ", "XX", "member name"),
        (MEMBER, "Org", "xx", "country"),
        (MEMBER, "Org", "XXX", "country"),
        (ClientId("TEST", "GOV", "9" * 65), "Org", "XX", "code"),
    ],
)
def test_sign_subject_refuses_bad_input(
    member: ClientId, member_name: str, country: str, message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        sign_cert_subject(member, member_name, country=country)


# -- verify_chain: success --------------------------------------------------------------------


def test_sign_chain_verifies(
    sign_creds: IssuedCredentials, dev_ca: DevCA, pki_now: datetime
) -> None:
    chain = verify_chain(
        sign_creds.certificate, [], [dev_ca.certificate], at=pki_now, purpose="sign"
    )
    assert chain == [sign_creds.certificate, dev_ca.certificate]


def test_auth_chain_verifies_in_any_time_zone(
    auth_creds: IssuedCredentials, dev_ca: DevCA, pki_now: datetime
) -> None:
    at = (pki_now + timedelta(days=1)).astimezone(timezone(timedelta(hours=-7)))
    chain = verify_chain(auth_creds.certificate, [], [dev_ca.certificate], at=at, purpose="auth")
    assert chain == list(auth_creds.chain)


def test_rsa_keys_verify(dev_ca: DevCA, pki_now: datetime, tmp_path: Path) -> None:
    creds = dev_ca.issue_key_and_cert(
        tmp_path, "sign", MEMBER, member_name="Org", now=pki_now, key_kind="rsa"
    )
    verify_chain(creds.certificate, [], [dev_ca.certificate], at=pki_now, purpose="sign")


def test_the_right_anchor_is_found_among_several(
    sign_creds: IssuedCredentials, dev_ca: DevCA, other_ca: DevCA, pki_now: datetime
) -> None:
    anchors = [other_ca.certificate, dev_ca.certificate]
    chain = verify_chain(sign_creds.certificate, [], anchors, at=pki_now, purpose="sign")
    assert chain[-1] == dev_ca.certificate


# -- verify_chain: failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shift", "message"),
    [(timedelta(seconds=-1), "not yet valid"), (timedelta(days=730, seconds=1), "expired")],
)
def test_outside_the_validity_period_is_refused(
    sign_creds: IssuedCredentials,
    dev_ca: DevCA,
    pki_now: datetime,
    shift: timedelta,
    message: str,
) -> None:
    with pytest.raises(InvalidSignatureError, match=message):
        verify_chain(
            sign_creds.certificate, [], [dev_ca.certificate], at=pki_now + shift, purpose="sign"
        )


def test_validity_bounds_are_inclusive(
    sign_creds: IssuedCredentials, dev_ca: DevCA, pki_now: datetime
) -> None:
    cert = sign_creds.certificate
    for at in (cert.not_valid_before_utc, cert.not_valid_after_utc):
        verify_chain(cert, [], [dev_ca.certificate], at=at, purpose="sign")


def test_certificate_of_another_ca_is_refused(
    other_ca: DevCA, dev_ca: DevCA, pki_now: datetime, tmp_path: Path
) -> None:
    foreign = other_ca.issue_key_and_cert(tmp_path, "sign", MEMBER, member_name="Org", now=pki_now)
    with pytest.raises(InvalidSignatureError, match="does not chain to a trusted CA"):
        verify_chain(foreign.certificate, [], [dev_ca.certificate], at=pki_now, purpose="sign")


def test_tampered_certificate_is_refused(
    sign_creds: IssuedCredentials, dev_ca: DevCA, pki_now: datetime
) -> None:
    der = sign_creds.certificate.public_bytes(DER)
    tampered = x509.load_der_x509_certificate(der.replace(b"Test Member", b"Evil Member"))
    assert member_of_sign_cert(tampered) == MEMBER
    with pytest.raises(InvalidSignatureError, match="does not chain to a trusted CA"):
        verify_chain(tampered, [], [dev_ca.certificate], at=pki_now, purpose="sign")


def test_ca_certificate_is_not_accepted_as_a_leaf(dev_ca: DevCA, pki_now: datetime) -> None:
    with pytest.raises(InvalidSignatureError, match="wrong key usage"):
        verify_chain(dev_ca.certificate, [], [dev_ca.certificate], at=pki_now, purpose="sign")


@pytest.mark.parametrize(
    ("creds_fixture", "purpose", "message"),
    [
        ("auth_creds", "sign", "wrong extended key usage for signing"),
        ("sign_creds", "auth", "clientAuth required"),
        ("tls_creds", "sign", "wrong extended key usage for signing"),
        ("tls_creds", "auth", "clientAuth required"),
    ],
)
def test_wrong_purpose_is_refused(
    request: pytest.FixtureRequest,
    dev_ca: DevCA,
    pki_now: datetime,
    creds_fixture: str,
    purpose: CertPurpose,
    message: str,
) -> None:
    creds: IssuedCredentials = request.getfixturevalue(creds_fixture)
    with pytest.raises(InvalidSignatureError, match=message):
        verify_chain(creds.certificate, [], [dev_ca.certificate], at=pki_now, purpose=purpose)


def test_no_anchors_is_refused(sign_creds: IssuedCredentials, pki_now: datetime) -> None:
    with pytest.raises(InvalidSignatureError, match="no trust anchors"):
        verify_chain(sign_creds.certificate, [], [], at=pki_now, purpose="sign")


def test_naive_time_is_a_programming_error(
    sign_creds: IssuedCredentials, dev_ca: DevCA, pki_now: datetime
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_chain(
            sign_creds.certificate,
            [],
            [dev_ca.certificate],
            at=pki_now.replace(tzinfo=None),
            purpose="sign",
        )


# -- verify_chain through an intermediate CA (as real federations have) -----------------------


def _ca_cert(
    subject: str,
    key: PrivateKey,
    issuer: x509.Certificate | None,
    signer: PrivateKey,
    start: datetime,
    days: int,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
    )
    if issuer is not None:
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _issuing_chain(
    tmp_path: Path, start: datetime, *, root_days: int, sub_days: int
) -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    """root -> issuing CA -> signing leaf (valid 20 days)."""
    root_key, sub_key = generate_private_key(), generate_private_key()
    root = _ca_cert("Root", root_key, None, root_key, start, root_days)
    sub = _ca_cert("Issuing CA", sub_key, root, root_key, start, sub_days)
    # A DevCA over the intermediate's key: the issuing code is the same.
    leaf = DevCA(tmp_path, sub_key, sub).issue_sign_cert(
        MEMBER, "Org", generate_private_key().public_key(), now=start, days=20
    )
    return root, sub, leaf


def test_path_through_an_intermediate_ca(tmp_path: Path, pki_now: datetime) -> None:
    root, sub, leaf = _issuing_chain(tmp_path, pki_now, root_days=30, sub_days=30)
    at = pki_now + timedelta(days=10)
    assert verify_chain(leaf, [sub], [root], at=at, purpose="sign") == [leaf, sub, root]
    with pytest.raises(InvalidSignatureError, match="does not chain"):
        verify_chain(leaf, [], [root], at=at, purpose="sign")


def test_expired_anchor_is_refused_though_the_leaf_is_valid(
    tmp_path: Path, pki_now: datetime
) -> None:
    root, sub, leaf = _issuing_chain(tmp_path, pki_now, root_days=5, sub_days=30)
    with pytest.raises(InvalidSignatureError, match="not valid at validation time"):
        verify_chain(leaf, [sub], [root], at=pki_now + timedelta(days=10), purpose="sign")


# -- the cache of verified paths --------------------------------------------------------------


def test_cached_path_is_reused_within_the_validity_of_every_certificate_on_it(
    tmp_path: Path, pki_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, sub, leaf = _issuing_chain(tmp_path, pki_now, root_days=5, sub_days=30)
    cache = VerifiedPathCache()
    assert cache.verify(leaf, [sub], [root], at=pki_now, purpose="sign") == [leaf, sub, root]
    assert len(cache) == 1

    def no_validation(*args: object, **kwargs: object) -> list[x509.Certificate]:
        raise AssertionError("validated again")

    monkeypatch.setattr(certificates_module, "verify_chain", no_validation)
    # Later, but all three still valid: remembered.
    assert cache.verify(leaf, [sub], [root], at=pki_now + timedelta(days=4),
                        purpose="sign") == [leaf, sub, root]
    monkeypatch.undo()
    # The root expired (the leaf is still valid): validated again, and refused.
    with pytest.raises(InvalidSignatureError, match="not valid at validation time"):
        cache.verify(leaf, [sub], [root], at=pki_now + timedelta(days=10), purpose="sign")
    with pytest.raises(InvalidSignatureError, match="not yet valid"):
        cache.verify(leaf, [sub], [root], at=pki_now - timedelta(seconds=1), purpose="sign")


def test_cached_path_counts_only_for_the_same_anchors_intermediates_and_purpose(
    tmp_path: Path, pki_now: datetime, dev_ca: DevCA
) -> None:
    root, sub, leaf = _issuing_chain(tmp_path, pki_now, root_days=30, sub_days=30)
    cache = VerifiedPathCache()
    cache.verify(leaf, [sub], [root], at=pki_now, purpose="sign")
    with pytest.raises(InvalidSignatureError, match="does not chain"):
        cache.verify(leaf, [sub], [dev_ca.certificate], at=pki_now, purpose="sign")
    with pytest.raises(InvalidSignatureError, match="does not chain"):
        cache.verify(leaf, [], [root], at=pki_now, purpose="sign")
    with pytest.raises(InvalidSignatureError, match="authentication"):
        cache.verify(leaf, [sub], [root], at=pki_now, purpose="auth")
    assert len(cache) == 1  # failures are not remembered


def test_cache_keeps_the_most_recently_used_paths(
    sign_creds: IssuedCredentials, auth_creds: IssuedCredentials, dev_ca: DevCA,
    pki_now: datetime
) -> None:
    cache = VerifiedPathCache(size=1)
    cache.verify(sign_creds.certificate, [], [dev_ca.certificate], at=pki_now, purpose="sign")
    cache.verify(auth_creds.certificate, [], [dev_ca.certificate], at=pki_now, purpose="auth")
    assert len(cache) == 1
    with pytest.raises(ValueError):
        VerifiedPathCache(size=0)


# -- encodings --------------------------------------------------------------------------------


def test_auth_cert_hash_is_lowercase_sha256_of_der(auth_creds: IssuedCredentials) -> None:
    cert = auth_creds.certificate
    digest = cert_sha256(cert)
    assert digest == hashlib.sha256(cert.public_bytes(DER)).hexdigest()
    assert len(digest) == 64
    assert digest == digest.lower()


def test_b64der_round_trip(sign_creds: IssuedCredentials) -> None:
    text = cert_to_b64der(sign_creds.certificate)
    assert base64.b64decode(text) == sign_creds.certificate.public_bytes(DER)
    assert cert_from_b64der(text) == sign_creds.certificate


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        "é",
        base64.b64encode(b"\x30\x03\x02\x01\x01").decode(),
        base64.urlsafe_b64encode(b"\xfb\xff" * 30).decode(),
    ],
)
def test_bad_b64der_is_a_bad_request(text: str) -> None:
    with pytest.raises(BadRequestError, match="x5c"):
        cert_from_b64der(text)


def test_pem_chain_round_trip(auth_creds: IssuedCredentials) -> None:
    assert load_pem_chain(auth_creds.cert_path.read_bytes()) == list(auth_creds.chain)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
)
def test_bad_pem_chain_is_a_bad_request(data: bytes) -> None:
    with pytest.raises(BadRequestError, match="PEM"):
        load_pem_chain(data)
