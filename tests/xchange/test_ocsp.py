"""Tests of xchange.ocsp: requests, and verification of real signed responses.

Responses come from the development CA's responder (certs.ocsp) or, for the ones it would
never produce (a wrong signer, a weak hash), from cryptography's builder with real keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from certs.ca import DevCA
from certs.keys import PrivateKey, generate_private_key
from certs.ocsp import DEFAULT_VALIDITY, OcspResponder, OcspSigner
from xchange.errors import CertificateValidationError
from xchange.identifiers import ClientId
from xchange.ocsp import (
    CLOCK_SKEW,
    OcspStatus,
    ocsp_request,
    ocsp_url_of,
    verify_ocsp_response,
)

CODE = "server.clientproxy.cert_validation"
MAX_AGE = timedelta(hours=1)
MEMBER = ClientId("OCSP", "GOV", "1")


@dataclass
class Pki:
    ca: DevCA
    other: DevCA
    """Another CA of the same instance name: same issuer name, different key."""
    now: datetime
    tmp: Path

    def cert(self, ca: DevCA | None = None) -> x509.Certificate:
        issuer = ca or self.ca
        return issuer.issue_sign_cert(
            MEMBER, "Org", generate_private_key().public_key(), now=self.now
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, pki_now: datetime) -> Pki:
    tmp = tmp_path_factory.mktemp("ocsp")
    return Pki(
        DevCA.create(tmp / "ca", "OCSP", now=pki_now, ocsp_url="http://127.0.0.1:1/ocsp"),
        DevCA.create(tmp / "other", "OCSP", now=pki_now),
        pki_now,
        tmp,
    )


def _respond(ca: DevCA, cert: x509.Certificate, now: datetime, *,
             signer: OcspSigner | None = None, validity: timedelta = DEFAULT_VALIDITY) -> bytes:
    responder = OcspResponder(ca, signer=signer, validity=validity)
    return responder.respond(ocsp_request(cert, ca.certificate), now)


def _verify(der: bytes, cert: x509.Certificate, pki: Pki, *, at: datetime | None = None,
            max_age: timedelta = MAX_AGE) -> OcspStatus:
    return verify_ocsp_response(der, cert, pki.ca.certificate, at=at or pki.now,
                                max_age=max_age, code=CODE)


def _fails(der: bytes, cert: x509.Certificate, pki: Pki, match: str, *,
           at: datetime | None = None) -> None:
    with pytest.raises(CertificateValidationError, match=match) as info:
        _verify(der, cert, pki, at=at)
    assert info.value.code == CODE


def _signed(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    responder: x509.Certificate,
    key: PrivateKey,
    now: datetime,
    *,
    include: bool = False,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A good response about ``cert`` signed by whatever ``key`` and ``responder`` say."""
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(cert, issuer, hashes.SHA256(), ocsp.OCSPCertStatus.GOOD, now,
                      now + timedelta(hours=1), None, None)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
    )
    if include:
        builder = builder.certificates([responder])
    response = builder.sign(key, algorithm or hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def _leaf_without_eku(ca: DevCA, key: PrivateKey, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a responder")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )


# -- requests and URLs ---------------------------------------------------------------------------


def test_request_is_one_sha1_cert_id_without_nonce(pki: Pki) -> None:
    cert = pki.cert()
    request = ocsp.load_der_ocsp_request(ocsp_request(cert, pki.ca.certificate))
    assert isinstance(request.hash_algorithm, hashes.SHA1)
    assert request.serial_number == cert.serial_number
    assert list(request.extensions) == []


def test_ocsp_url_from_authority_information_access(pki: Pki) -> None:
    assert ocsp_url_of(pki.cert()) == "http://127.0.0.1:1/ocsp"
    assert ocsp_url_of(pki.cert(pki.other)) is None
    assert ocsp_url_of(pki.ca.certificate) is None


# -- statuses ------------------------------------------------------------------------------------


def test_good(pki: Pki) -> None:
    cert = pki.cert()
    der = _respond(pki.ca, cert, pki.now, validity=timedelta(minutes=30))
    status = _verify(der, cert, pki)
    assert status.status == "good"
    assert status.serial == cert.serial_number
    assert status.this_update == pki.now
    assert status.next_update == pki.now + timedelta(minutes=30)
    assert status.revoked_at is None and status.revocation_reason is None
    assert status.der == der
    status.require_good(code=CODE)


def test_revoked_with_time_and_reason(pki: Pki) -> None:
    cert = pki.cert()
    revoked_at = pki.now + timedelta(seconds=5)
    pki.ca.revoke(cert.serial_number, reason=x509.ReasonFlags.key_compromise, at=revoked_at)
    status = _verify(_respond(pki.ca, cert, pki.now + timedelta(seconds=10)), cert, pki)
    assert status.status == "revoked"
    assert status.revoked_at == revoked_at
    assert status.revocation_reason == "keyCompromise"
    with pytest.raises(CertificateValidationError) as info:
        status.require_good(code=CODE)
    assert info.value.code == CODE
    assert info.value.message == (
        f"certificate with serial {cert.serial_number:x} was revoked at "
        f"{revoked_at.isoformat()} (reason keyCompromise)"
    )


def test_revoked_without_reason(pki: Pki) -> None:
    cert = pki.cert()
    pki.ca.revoke(cert.serial_number, at=pki.now)
    status = _verify(_respond(pki.ca, cert, pki.now), cert, pki)
    assert (status.status, status.revocation_reason) == ("revoked", None)
    with pytest.raises(CertificateValidationError, match=r"revoked at \S+$"):
        status.require_good(code=CODE)


def test_unknown_serial(pki: Pki) -> None:
    # The same CA key issuing into another index: a certificate this CA's records never saw.
    (pki.tmp / "lost-index").mkdir()
    stray = DevCA(pki.tmp / "lost-index", pki.ca.key, pki.ca.certificate)
    cert = pki.cert(stray)
    status = _verify(_respond(pki.ca, cert, pki.now), cert, pki)
    assert status.status == "unknown"
    with pytest.raises(CertificateValidationError, match="does not know the certificate") as info:
        status.require_good(code="server.serverproxy.cert_validation")
    assert info.value.code == "server.serverproxy.cert_validation"


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA512()])
def test_sha2_cert_ids(pki: Pki, algorithm: hashes.HashAlgorithm) -> None:
    cert = pki.cert()
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, pki.ca.certificate, algorithm)
    der = OcspResponder(pki.ca).respond(
        request.build().public_bytes(serialization.Encoding.DER), pki.now
    )
    assert isinstance(ocsp.load_der_ocsp_response(der).hash_algorithm, type(algorithm))
    assert _verify(der, cert, pki).status == "good"


def test_rsa_ca(tmp_path: Path, pki_now: datetime) -> None:
    ca = DevCA.create(tmp_path, "RSA", now=pki_now, key_kind="rsa")
    cert = ca.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(), now=pki_now)
    status = verify_ocsp_response(_respond(ca, cert, pki_now), cert, ca.certificate,
                                  at=pki_now, max_age=MAX_AGE, code=CODE)
    assert status.status == "good"


# -- who signed ----------------------------------------------------------------------------------


def test_delegated_responder_accepted(pki: Pki) -> None:
    key = generate_private_key()
    responder = pki.ca.issue_ocsp_responder_cert(key.public_key(), now=pki.now)
    cert = pki.cert()
    der = _respond(pki.ca, cert, pki.now, signer=OcspSigner(key, responder))
    assert ocsp.load_der_ocsp_response(der).certificates == [responder]
    assert _verify(der, cert, pki).status == "good"


def test_delegated_responder_must_be_valid_at_verification_time(pki: Pki) -> None:
    key = generate_private_key()
    responder = pki.ca.issue_ocsp_responder_cert(key.public_key(), now=pki.now, days=1)
    cert = pki.cert()
    later = pki.now + timedelta(days=1, seconds=10)
    der = _signed(cert, pki.ca.certificate, responder, key, later, include=True)
    _fails(der, cert, pki, "OCSP responder certificate .* is not valid at", at=later)


def test_another_ca_is_not_a_responder(pki: Pki) -> None:
    cert = pki.cert()
    der = _signed(cert, pki.ca.certificate, pki.other.certificate, pki.other.key, pki.now)
    _fails(der, cert, pki, "signed neither by the certificate's issuer .* nor by a responder")


def test_another_ca_with_the_same_name_by_name(pki: Pki) -> None:
    # A ResponderID by name matches the issuer's name; only the signature tells them apart.
    cert = pki.cert()
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(cert, pki.ca.certificate, hashes.SHA256(), ocsp.OCSPCertStatus.GOOD,
                      pki.now, None, None, None)
        .responder_id(ocsp.OCSPResponderEncoding.NAME, pki.other.certificate)
    )
    der = builder.sign(pki.other.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    _fails(der, cert, pki, "signature does not verify with the key of 'O=OCSP,CN=OCSP Root CA'")


def test_responder_certificate_of_another_issuer(pki: Pki) -> None:
    key = generate_private_key()
    foreign = pki.other.issue_ocsp_responder_cert(key.public_key(), now=pki.now)
    cert = pki.cert()
    der = _signed(cert, pki.ca.certificate, foreign, key, pki.now, include=True)
    _fails(der, cert, pki, "OCSP responder certificate .* is not issued by the certificate's")


@pytest.mark.parametrize("kind", ["no extended key usage", "TLS server"])
def test_responder_certificate_without_ocsp_signing(pki: Pki, kind: str) -> None:
    key = generate_private_key()
    if kind == "TLS server":
        responder = pki.ca.issue_tls_cert("ocsp.test", key.public_key(), now=pki.now)
    else:
        responder = _leaf_without_eku(pki.ca, key, pki.now)
    cert = pki.cert()
    der = _signed(cert, pki.ca.certificate, responder, key, pki.now, include=True)
    _fails(der, cert, pki, "not authorised to sign OCSP responses .*id-kp-OCSPSigning")


def test_tampered_signature(pki: Pki) -> None:
    cert = pki.cert()
    der = bytearray(_respond(pki.ca, cert, pki.now))
    der[-1] ^= 0x01  # the last byte of the signature (no certificates follow it)
    _fails(bytes(der), cert, pki, "signature does not verify")


def test_signature_hash_below_sha256_refused(pki: Pki) -> None:
    # cryptography will not even sign with SHA-1; SHA-224 shows the same rule.
    cert = pki.cert()
    der = _signed(cert, pki.ca.certificate, pki.ca.certificate, pki.ca.key, pki.now,
                  algorithm=hashes.SHA224())
    _fails(der, cert, pki, r"weak or unsupported hash \(sha224\); SHA-256 or stronger")


# -- about what ----------------------------------------------------------------------------------


def test_response_about_another_certificate(pki: Pki) -> None:
    cert, other = pki.cert(), pki.cert()
    der = _respond(pki.ca, other, pki.now)
    _fails(der, cert, pki, f"not about certificate with serial {cert.serial_number:x}: "
           f"it answers for serial {other.serial_number:x}$")


def test_certificate_of_another_issuer(pki: Pki) -> None:
    cert = pki.cert()
    der = _respond(pki.ca, cert, pki.now)
    other_key = generate_private_key()
    impostor = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Elsewhere")]))
        .public_key(other_key.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(pki.now)
        .not_valid_after(pki.now + timedelta(days=1))
        .sign(other_key, hashes.SHA256())
    )
    _fails(der, impostor, pki, "is not issued by 'O=OCSP,CN=OCSP Root CA'")


# -- when ----------------------------------------------------------------------------------------


def test_stale_response(pki: Pki) -> None:
    cert = pki.cert()
    der = _respond(pki.ca, cert, pki.now)
    assert _verify(der, cert, pki, at=pki.now + MAX_AGE).status == "good"
    _fails(der, cert, pki, "is stale: it is 3601 s old .*more than the 3600 s allowed",
           at=pki.now + MAX_AGE + timedelta(seconds=1))


def test_next_update_passed(pki: Pki) -> None:
    cert = pki.cert()
    der = _respond(pki.ca, cert, pki.now, validity=timedelta(minutes=10))
    _fails(der, cert, pki, "has expired: its nextUpdate", at=pki.now + timedelta(minutes=11))


def test_this_update_in_the_future(pki: Pki) -> None:
    cert = pki.cert()
    soon = _respond(pki.ca, cert, pki.now + CLOCK_SKEW)
    assert _verify(soon, cert, pki).status == "good"
    later = _respond(pki.ca, cert, pki.now + CLOCK_SKEW + timedelta(seconds=1))
    _fails(later, cert, pki, "is from the future: thisUpdate .* more than 60 s after")


# -- not a usable response -----------------------------------------------------------------------


@pytest.mark.parametrize("der", [b"", b"garbage", b"\x30\x03\x0a\x01"])
def test_garbage(pki: Pki, der: bytes) -> None:
    _fails(der, pki.cert(), pki, "is not a DER OCSPResponse")


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformed_request"),
        (ocsp.OCSPResponseStatus.TRY_LATER, "try_later"),
        (ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized"),
    ],
)
def test_unsuccessful_response_status(
    pki: Pki, status: ocsp.OCSPResponseStatus, name: str
) -> None:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
    _fails(der, pki.cert(), pki, f"did not answer .*: response status {name}$")


def test_naive_time_is_a_programming_error(pki: Pki) -> None:
    cert = pki.cert()
    der = _respond(pki.ca, cert, pki.now)
    with pytest.raises(ValueError, match="timezone-aware"):
        _verify(der, cert, pki, at=pki.now.replace(tzinfo=None))
    with pytest.raises(ValueError, match="max_age"):
        _verify(der, cert, pki, max_age=timedelta(0))
