"""Which stapled OCSP response proves which certificate, and the memo of verified responses."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certs.ca import DevCA
from certs.ocsp import OcspResponder
from xchange import certstatus
from xchange.certstatus import StapleVerifier, approved_ca_of, ocsp_url_for
from xchange.errors import CertificateValidationError
from xchange.globalconf import ApprovedCA
from xchange.identifiers import ClientId
from xchange.ocsp import ocsp_request, verify_ocsp_response

CODE = "server.serverproxy.cert_validation"
HOUR = timedelta(hours=1)


@pytest.fixture
def ca(tmp_path: Path, pki_now: datetime) -> DevCA:
    return DevCA.create(tmp_path / "ca", "TEST", now=pki_now, ocsp_url="http://ocsp.test/")


def _cert(ca: DevCA, tmp_path: Path, code: str, now: datetime) -> x509.Certificate:
    creds = ca.issue_key_and_cert(tmp_path / code, "sign", ClientId("TEST", "GOV", code),
                                  member_name=f"Member {code}", now=now)
    return creds.certificate


def _staple(ca: DevCA, cert: x509.Certificate, at: datetime) -> bytes:
    return OcspResponder(ca).respond(ocsp_request(cert, ca.certificate), at)


def test_the_approved_ca_of_a_certificate_is_found_by_name_and_signature(
        ca: DevCA, tmp_path: Path, pki_now: datetime) -> None:
    other = DevCA.create(tmp_path / "other", "TEST", now=pki_now)  # same subject, other key
    cert = _cert(ca, tmp_path, "1", pki_now)
    cas = [ApprovedCA("impostor", other.certificate), ApprovedCA("real", ca.certificate)]
    assert approved_ca_of(cert, cas, code=CODE).name == "real"
    with pytest.raises(CertificateValidationError, match="not issued by an approved CA") as info:
        approved_ca_of(cert, cas[:1], code=CODE)
    assert info.value.code == CODE


def test_the_federation_names_the_responder_before_the_certificate_does(
        ca: DevCA, tmp_path: Path, pki_now: datetime) -> None:
    cert = _cert(ca, tmp_path, "1", pki_now)
    listed = ApprovedCA("ca", ca.certificate, "http://listed.test/")
    assert ocsp_url_for(cert, listed, code=CODE) == "http://listed.test/"
    assert ocsp_url_for(cert, ApprovedCA("ca", ca.certificate), code=CODE) == "http://ocsp.test/"
    bare = DevCA.create(tmp_path / "bare", "BARE", now=pki_now)
    bare_cert = _cert(bare, tmp_path, "2", pki_now)
    with pytest.raises(CertificateValidationError, match="no OCSP responder"):
        ocsp_url_for(bare_cert, ApprovedCA("bare", bare.certificate), code=CODE)


def test_a_verified_response_is_checked_for_age_again(ca: DevCA, tmp_path: Path,
                                                     pki_now: datetime) -> None:
    cert = _cert(ca, tmp_path, "1", pki_now)
    status = verify_ocsp_response(_staple(ca, cert, pki_now), cert, ca.certificate, at=pki_now,
                                  max_age=HOUR, code=CODE)
    status.check_fresh(at=pki_now + HOUR, max_age=HOUR, code=CODE)
    with pytest.raises(CertificateValidationError, match="stale: it is 3601 s old"):
        status.check_fresh(at=pki_now + HOUR + timedelta(seconds=1), max_age=HOUR, code=CODE)
    with pytest.raises(CertificateValidationError, match="from the future"):
        status.check_fresh(at=pki_now - timedelta(minutes=5), max_age=HOUR, code=CODE)
    assert status.next_update is not None
    with pytest.raises(CertificateValidationError, match="expired"):
        status.check_fresh(at=status.next_update + timedelta(seconds=1),
                  max_age=timedelta(days=365), code=CODE)


def test_the_staple_for_each_certificate_is_found_and_must_be_good(
        ca: DevCA, tmp_path: Path, pki_now: datetime) -> None:
    one, two = _cert(ca, tmp_path, "1", pki_now), _cert(ca, tmp_path, "2", pki_now)
    staples = (_staple(ca, one, pki_now), _staple(ca, two, pki_now))
    verifier = StapleVerifier()
    assert verifier.check(staples, two, ca.certificate, at=pki_now, max_age=HOUR,
                          code=CODE).serial == two.serial_number
    assert verifier.check(staples, one, ca.certificate, at=pki_now, max_age=HOUR,
                          code=CODE).status == "good"
    three = _cert(ca, tmp_path, "3", pki_now)
    with pytest.raises(CertificateValidationError, match="no OCSP response is stapled"):
        verifier.check(staples, three, ca.certificate, at=pki_now, max_age=HOUR, code=CODE)
    with pytest.raises(CertificateValidationError, match="no OCSP response is stapled"):
        verifier.check((b"garbage",), one, ca.certificate, at=pki_now, max_age=HOUR,
                       code=CODE)


def test_a_remembered_response_still_goes_stale(ca: DevCA, tmp_path: Path,
                                                pki_now: datetime) -> None:
    cert = _cert(ca, tmp_path, "1", pki_now)
    staples = (_staple(ca, cert, pki_now),)
    verifier = StapleVerifier()
    verifier.check(staples, cert, ca.certificate, at=pki_now, max_age=HOUR, code=CODE)
    with pytest.raises(CertificateValidationError, match="stale"):
        verifier.check(staples, cert, ca.certificate, at=pki_now + 2 * HOUR, max_age=HOUR,
                       code=CODE)


def test_a_revoked_certificate_is_found_but_refused(ca: DevCA, tmp_path: Path,
                                                    pki_now: datetime) -> None:
    cert = _cert(ca, tmp_path, "1", pki_now)
    ca.revoke(cert.serial_number, reason=x509.ReasonFlags.key_compromise, at=pki_now)
    staples = (_staple(ca, cert, pki_now),)
    verifier = StapleVerifier()
    status = verifier.find(staples, cert, ca.certificate, at=pki_now, max_age=HOUR, code=CODE)
    assert (status.status, status.revocation_reason) == ("revoked", "keyCompromise")
    with pytest.raises(CertificateValidationError, match="revoked") as info:
        verifier.check(staples, cert, ca.certificate, at=pki_now, max_age=HOUR, code=CODE)
    assert info.value.code == CODE


def test_a_response_signed_by_another_ca_is_refused(ca: DevCA, tmp_path: Path,
                                                   pki_now: datetime) -> None:
    other = DevCA.create(tmp_path / "other", "TEST", now=pki_now)
    cert = _cert(ca, tmp_path, "1", pki_now)
    forged = OcspResponder(other).respond(ocsp_request(cert, other.certificate), pki_now)
    with pytest.raises(CertificateValidationError):
        StapleVerifier().check((forged,), cert, ca.certificate, at=pki_now, max_age=HOUR,
                               code=CODE)


def test_a_staple_for_another_certificate_is_read_once(
        ca: DevCA, tmp_path: Path, pki_now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = _cert(ca, tmp_path, "1", pki_now), _cert(ca, tmp_path, "2", pki_now)
    staples = (_staple(ca, one, pki_now), _staple(ca, two, pki_now))
    reads: list[int] = []
    real_is_for = certstatus._is_for

    def counted(der: bytes, cert: x509.Certificate) -> bool:
        reads.append(cert.serial_number)
        return real_is_for(der, cert)

    monkeypatch.setattr(certstatus, "_is_for", counted)
    verifier = StapleVerifier()
    for _ in range(3):
        assert verifier.check(staples, two, ca.certificate, at=pki_now, max_age=HOUR,
                              code=CODE).serial == two.serial_number
    assert reads == [two.serial_number, two.serial_number]  # one's staple, then its own
    three = _cert(ca, tmp_path, "3", pki_now)
    for _ in range(2):  # still refused when no staple is for it, from memory the second time
        with pytest.raises(CertificateValidationError, match="no OCSP response is stapled"):
            verifier.check(staples, three, ca.certificate, at=pki_now, max_age=HOUR,
                           code=CODE)
    assert reads.count(three.serial_number) == 2
